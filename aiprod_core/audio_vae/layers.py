"""Building blocks of the audio VAE: causal 2-D convs, norms, residual and attention blocks, resampling.

Tensors are spectrogram-like (B, C, H, W) with H = time frames and W = mel bins. A "causal" axis is padded
on its leading side only, so an output frame never sees later frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttentionBlock", "CausalConv2d", "Downsample", "PerChannelStatistics", "ResnetBlock", "Upsample"]

NORM_EPS = 1e-6
GROUP_NORM_GROUPS = 32

# Pads (left, right, top, bottom) in front of the stride-2 3x3 downsampling conv, per causality axis.
_DOWNSAMPLE_PADS = {
    None: (0, 1, 0, 1),
    "width": (2, 0, 0, 1),
    "height": (0, 1, 2, 0),
    "width-compatibility": (1, 0, 0, 1),
}


def _factory(dtype: torch.dtype | None, device: torch.device | str | None) -> dict:
    return {"dtype": dtype, "device": device}


class PixelNorm(nn.Module):
    """RMS normalisation over channels at every position: (B, C, H, W) -> same shape, no parameters."""

    def __init__(self, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + self.eps)


def make_norm(channels: int, norm_type: str, dtype: torch.dtype | None = None, device: torch.device | str | None = None
              ) -> nn.Module:
    """``"pixel"`` -> PixelNorm; ``"group"`` -> GroupNorm(32, channels, eps=1e-6) with affine weights."""
    if norm_type == "pixel":
        return PixelNorm()
    if norm_type == "group":
        return nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=NORM_EPS, affine=True, **_factory(dtype, device))
    raise ValueError(f"norm_type={norm_type!r}, expected one of ('pixel', 'group')")


class CausalConv2d(nn.Module):
    """Stride-1 2-D conv padded by hand: the causal axis on its leading side only, the other axis symmetrically.

    (B, C_in, H, W) -> (B, C_out, H, W). ``causality_axis`` None pads both axes symmetrically.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, causality_axis: str | None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        total = kernel_size - 1
        centred = (total // 2, total - total // 2)
        if causality_axis is None:
            self.padding = (*centred, *centred)
        elif causality_axis in ("width", "width-compatibility"):
            self.padding = (total, 0, *centred)
        elif causality_axis == "height":
            self.padding = (*centred, total, 0)
        else:
            raise ValueError(f"causality_axis={causality_axis!r}, expected one of (None, 'width', 'height')")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, **_factory(dtype, device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> conv, plus a (1x1 conv when widths differ) shortcut.

    (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, causality_axis: str | None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        fd = _factory(dtype, device)
        self.norm1 = make_norm(in_channels, norm_type, **fd)
        self.conv1 = CausalConv2d(in_channels, out_channels, 3, causality_axis, **fd)
        self.norm2 = make_norm(out_channels, norm_type, **fd)
        self.conv2 = CausalConv2d(out_channels, out_channels, 3, causality_axis, **fd)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv2d(in_channels, out_channels, 1, causality_axis, **fd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout is inference-time identity
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all H x W positions with a residual: (B, C, H, W) -> same shape."""

    def __init__(self, channels: int, norm_type: str,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        fd = _factory(dtype, device)
        self.norm = make_norm(channels, norm_type, **fd)
        self.q = nn.Conv2d(channels, channels, 1, **fd)
        self.k = nn.Conv2d(channels, channels, 1, **fd)
        self.v = nn.Conv2d(channels, channels, 1, **fd)
        self.proj_out = nn.Conv2d(channels, channels, 1, **fd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)

        def tokens(proj: nn.Conv2d) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, H*W, C)
            return proj(h).flatten(2).transpose(1, 2).unsqueeze(1)

        out = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))  # (B, 1, H*W, C)
        out = out.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after causal zero padding: (B, C, H, W) -> (B, C, ceil(H/2), W/2) for the height axis."""

    def __init__(self, channels: int, causality_axis: str | None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.pad = _DOWNSAMPLE_PADS[causality_axis]
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, **_factory(dtype, device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class Upsample(nn.Module):
    """Nearest x2 then a causal 3x3 conv; on a causal height/width axis the first row is dropped.

    (B, C, H, W) -> (B, C, 2H - 1, 2W) for the height axis, which inverts the encoder's ceil(H / 2).
    """

    def __init__(self, channels: int, causality_axis: str | None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.causality_axis = causality_axis
        self.conv = CausalConv2d(channels, channels, 3, causality_axis, **_factory(dtype, device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        # The first two outputs both depend on the first input row only: drop one to keep 2n - 1 rows.
        if self.causality_axis == "height":
            return x[:, :, 1:, :]
        if self.causality_axis == "width":
            return x[:, :, :, 1:]
        return x


class PerChannelStatistics(nn.Module):
    """Dataset statistics of the latent, one value per (latent channel, latent mel bin) pair.

    Buffers ``mean-of-means`` / ``std-of-means`` have ``channels * mel_bins`` entries, ordered channel-major
    (the reference flattens (B, C, T, F) latents to (B, T, C*F) before normalising).
    """

    def __init__(self, size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        self.register_buffer("std-of-means", torch.empty(size, **_factory(dtype, device)))
        self.register_buffer("mean-of-means", torch.empty(size, **_factory(dtype, device)))

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, channels, _, mel_bins = like.shape  # (B, C, T, F)
        shape = (1, channels, 1, mel_bins)
        mean = self.get_buffer("mean-of-means").to(like).view(shape)
        std = self.get_buffer("std-of-means").to(like).view(shape)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def un_normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std + mean
