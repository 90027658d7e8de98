"""Space-to-depth downsampling (encoder) and depth-to-space upsampling (decoder) stages of the video VAE."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import CausalConv3d

__all__ = ["DepthToSpaceUp", "SpaceToDepthDown", "depth_to_space", "space_to_depth"]


def space_to_depth(x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, F*t, H*h, W*w) -> (B, C*t*h*w, F, H, W), channels ordered (c, t, h, w)."""
    st, sh, sw = stride
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f // st, st, h // sh, sh, w // sw, sw)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, C, t, h, w, F', H', W')
    return x.reshape(b, c * st * sh * sw, f // st, h // sh, w // sw)


def depth_to_space(x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """(B, C*t*h*w, F, H, W) -> (B, C, F*t, H*h, W*w), the inverse of `space_to_depth`."""
    st, sh, sw = stride
    b, cs, f, h, w = x.shape
    c = cs // (st * sh * sw)
    x = x.reshape(b, c, st, sh, sw, f, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C, F, t, H, h, W, w)
    return x.reshape(b, c, f * st, h * sh, w * sw)


class SpaceToDepthDown(nn.Module):
    """Downsample by ``stride`` (t, h, w): a causal conv to ``out / (t*h*w)`` channels folded into depth, plus a
    parameter-free skip (the folded input averaged over groups of channels).

    (B, C_in, F, H, W) -> (B, C_out, F', H / h, W / w); with a time stride of 2 the first frame is duplicated
    first, so F' = (F + 1) / 2 (F odd).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: tuple[int, int, int],
        *,
        padding_mode: str = "zeros",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        volume = math.prod(stride)
        if out_channels % volume or (in_channels * volume) % out_channels:
            raise ValueError(
                f"out_channels={out_channels!r}, expected a multiple of {volume} dividing " f"{in_channels * volume}"
            )
        self.stride = stride
        self.group_size = in_channels * volume // out_channels
        self.conv = CausalConv3d(
            in_channels, out_channels // volume, 3, padding_mode=padding_mode, dtype=dtype, device=device
        )

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        if self.stride[0] == 2:
            x = torch.cat([x[:, :, :1], x], dim=2)  # (B, C, F + 1, H, W)
        skip = space_to_depth(x, self.stride)
        b, c, f, h, w = skip.shape
        skip = skip.view(b, c // self.group_size, self.group_size, f, h, w).mean(dim=2)
        return space_to_depth(self.conv(x, causal=causal), self.stride) + skip


class DepthToSpaceUp(nn.Module):
    """Upsample by ``stride`` (t, h, w): a causal conv to ``t*h*w * C_in / reduction`` channels unfolded into
    space and time, optionally plus the unfolded input repeated to the output width (``residual``).

    (B, C_in, F, H, W) -> (B, C_in / reduction, F', H * h, W * w); with a time stride of 2 the first output
    frame is dropped, so F' = 2F - 1.
    """

    def __init__(
        self,
        in_channels: int,
        stride: tuple[int, int, int],
        *,
        residual: bool = False,
        reduction: int = 1,
        padding_mode: str = "zeros",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        volume = math.prod(stride)
        if (volume * in_channels) % reduction or (residual and in_channels % volume):
            raise ValueError(f"multiplier={reduction!r}, expected a divisor of {volume * in_channels}")
        self.stride = stride
        self.residual = residual
        self.repeats = volume // reduction
        out = volume * in_channels // reduction
        self.conv = CausalConv3d(in_channels, out, 3, padding_mode=padding_mode, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        skip = None
        if self.residual:
            skip = depth_to_space(x, self.stride).repeat(1, self.repeats, 1, 1, 1)
        x = depth_to_space(self.conv(x, causal=causal), self.stride)
        if self.stride[0] == 2:
            x = x[:, :, 1:]
            skip = skip[:, :, 1:] if skip is not None else None
        return x + skip if skip is not None else x
