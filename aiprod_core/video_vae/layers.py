"""Building blocks of the video VAE: causal 3-D convolution, pixel norm, (un)patchify, latent statistics,
and the sinusoidal timestep embedder of the timestep-conditioned decoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..modules import Conv3d, Linear, onednn_usable

__all__ = ["CausalConv3d", "PerChannelStatistics", "PixelNorm", "TimestepEmbedder", "patchify", "unpatchify"]

PIXEL_NORM_EPS = 1e-8
GROUP_NORM_EPS = 1e-6
GROUP_NORM_GROUPS = 32
TIMESTEP_FREQUENCY_CHANNELS = 256
TIMESTEP_MAX_PERIOD = 10000.0


class CausalConv3d(nn.Module):
    """3-D convolution padded in time by repeating edge frames instead of zeros.

    (B, C_in, F, H, W) -> (B, C_out, F', H', W'). Causal: the first frame is repeated ``kernel - 1`` times in
    front, so frame ``t`` only sees frames ``<= t``; non-causal: ``(kernel - 1) / 2`` copies of the first and
    last frame on each side. Height and width are padded by ``kernel // 2`` with ``padding_mode``. The
    weights live in ``self.conv`` (state-dict keys ``conv.weight`` / ``conv.bias``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int | tuple[int, int, int] = 1,
        padding_mode: str = "zeros",
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.time_kernel = kernel_size
        spatial_pad = kernel_size // 2
        self.conv = Conv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(0, spatial_pad, spatial_pad),
            padding_mode=padding_mode,
            dtype=dtype,
            device=device,
        )

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        # x: (B, C, F, H, W)
        if causal:
            front, back = self.time_kernel - 1, 0
        else:
            front = back = (self.time_kernel - 1) // 2
        pieces = [x[:, :, :1].expand(-1, -1, front, -1, -1), x] if front else [x]
        if back:
            pieces.append(x[:, :, -1:].expand(-1, -1, back, -1, -1))
        if len(pieces) > 1:
            x = torch.cat(pieces, dim=2)
        if self.conv.padding_mode != "zeros" and onednn_usable(x, self.conv.weight):
            return self._onednn_conv(x)
        return self.conv(x)  # zero padding: `Conv3d` takes the oneDNN route itself

    def _onednn_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution through oneDNN (see `modules.Conv3d`) with a non-zero padding mode applied first."""
        conv = self.conv
        _, pad_h, pad_w = conv.padding
        x = nn.functional.pad(x, (pad_w, pad_w, pad_h, pad_h, 0, 0), mode=conv.padding_mode)
        return torch.ops.aten.mkldnn_convolution(
            x.contiguous(), conv.weight, conv.bias, [0, 0, 0], list(conv.stride), list(conv.dilation), conv.groups
        )


class PixelNorm(nn.Module):
    """RMS normalisation over the channel axis at every (frame, row, column): (B, C, ...) -> same shape."""

    def __init__(self, eps: float = PIXEL_NORM_EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + self.eps)


def make_norm(
    kind: str, channels: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> nn.Module:
    """``pixel_norm`` (parameter-free) or ``group_norm`` (32 groups, affine)."""
    if kind == "group_norm":
        return nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS, dtype=dtype, device=device)
    return PixelNorm()


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Space-to-depth: (B, C, F, H, W) -> (B, C * patch**2, F, H / patch, W / patch).

    Channel order is (c, column offset, row offset), the layout the checkpoints were trained with.
    """
    if patch == 1:
        return x
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // patch, patch, w // patch, patch)  # (B, C, F, H', q, W', r)
    x = x.permute(0, 1, 6, 4, 2, 3, 5)  # (B, C, r, q, F, H', W')
    return x.reshape(b, c * patch * patch, f, h // patch, w // patch)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Depth-to-space, the inverse of `patchify`: (B, C * patch**2, F, H, W) -> (B, C, F, H * patch, W * patch)."""
    if patch == 1:
        return x
    b, cpp, f, h, w = x.shape
    c = cpp // (patch * patch)
    x = x.reshape(b, c, patch, patch, f, h, w)  # (B, C, r, q, F, H, W)
    x = x.permute(0, 1, 4, 5, 3, 6, 2)  # (B, C, F, H, q, W, r)
    return x.reshape(b, c, f, h * patch, w * patch)


class PerChannelStatistics(nn.Module):
    """Dataset statistics of the latent means: ``normalize`` maps raw encoder means to the diffusion latent
    space and ``un_normalize`` maps back. Both act on (B, C, F, H, W) with C = ``channels``.

    Buffers ``std-of-means`` and ``mean-of-means`` (C,) come from the checkpoint (``vae.per_channel_statistics.*``).
    """

    def __init__(
        self, channels: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("std-of-means", torch.empty(channels, dtype=dtype, device=device))
        self.register_buffer("mean-of-means", torch.empty(channels, dtype=dtype, device=device))

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        std = self.get_buffer("std-of-means").to(like).view(1, -1, 1, 1, 1)
        mean = self.get_buffer("mean-of-means").to(like).view(1, -1, 1, 1, 1)
        return std, mean

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = self._stats(x)
        return (x - mean) / std

    def un_normalize(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = self._stats(x)
        return x * std + mean


class _TimestepMLP(nn.Module):
    def __init__(self, width: int, dtype: torch.dtype | None, device: torch.device | str | None) -> None:
        super().__init__()
        self.linear_1 = Linear(TIMESTEP_FREQUENCY_CHANNELS, width, dtype=dtype, device=device)
        self.linear_2 = Linear(width, width, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(nn.functional.silu(self.linear_1(x)))


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a (scaled) timestep through a 2-layer SiLU MLP: (N,) -> (N, width).

    The 256 features are [cos, sin] of ``t * 10000**(-k / 128)``, k = 0..127, computed in float32.
    """

    def __init__(
        self, width: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.timestep_embedder = _TimestepMLP(width, dtype, device)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        half = TIMESTEP_FREQUENCY_CHANNELS // 2
        steps = torch.arange(half, dtype=torch.float32, device=timestep.device)
        exponent = -math.log(TIMESTEP_MAX_PERIOD) * steps / half
        angles = timestep.reshape(-1, 1).float() * torch.exp(exponent)[None, :]  # (N, 128)
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (N, 256)
        return self.timestep_embedder(features.to(dtype))
