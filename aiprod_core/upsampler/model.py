"""Latent spatial (and temporal) upsampler of LTX-2 / LTX-2.3: x2 pixel shuffle or rational x1.5 resampling.

The upsampler works on *un-normalised* video latents; `upsample_latent` wraps it with the video VAE's per-channel
statistics the way the two-stage pipelines call it. State-dict keys equal the upsampler file's keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config_reader import ConfigSection, reject
from ..modules import Conv3d

__all__ = ["LatentUpsampler", "LatentUpsamplerConfig", "upsample_latent"]

GROUP_NORM_GROUPS = 32
BLUR_KERNEL_SIZE = 5
# spatial scale -> (pixel-shuffle factor, blur-downsample stride)
RATIONAL_SCALES: dict[float, tuple[int, int]] = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}
PIXEL_SHUFFLE_SCALE = 2.0


# Sanity bounds (the published upsamplers: 128 latent channels, 512 / 1024 wide, 4 blocks per stage).
MAX_CHANNELS = 8192
MAX_BLOCKS_PER_STAGE = 64


def _reject(key: str, actual: Any, expected: Any) -> None:
    raise reject(key, actual, expected)


@dataclass(frozen=True)
class LatentUpsamplerConfig:
    """Hyper-parameters of the latent upsampler, read from the upsampler file's flat ``config`` metadata."""

    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    spatial_scale: float = 2.0
    rational_resampler: bool = False

    @classmethod
    def from_metadata(cls, config: dict[str, Any]) -> LatentUpsamplerConfig:
        """Build from the flat ``config`` JSON; absent keys take the reference's defaults."""
        defaults, section = cls(), ConfigSection(config)
        made = cls(
            in_channels=section.integer("in_channels", defaults.in_channels, high=MAX_CHANNELS),
            mid_channels=section.integer("mid_channels", defaults.mid_channels, high=MAX_CHANNELS),
            num_blocks_per_stage=section.integer("num_blocks_per_stage", defaults.num_blocks_per_stage,
                                                 high=MAX_BLOCKS_PER_STAGE),
            dims=section.integer("dims", defaults.dims, high=3),
            spatial_upsample=section.flag("spatial_upsample", defaults.spatial_upsample),
            temporal_upsample=section.flag("temporal_upsample", defaults.temporal_upsample),
            spatial_scale=section.number("spatial_scale", defaults.spatial_scale, above=0.0, high=16.0),
            rational_resampler=section.flag("rational_resampler", defaults.rational_resampler),
        )
        made.validate()
        return made

    def validate(self) -> None:
        """Reject values the model cannot be built for (``ValueError`` naming the key)."""
        if self.dims not in (2, 3):
            _reject("dims", self.dims, (2, 3))
        if self.mid_channels % GROUP_NORM_GROUPS:
            _reject("mid_channels", self.mid_channels, f"a multiple of {GROUP_NORM_GROUPS}")
        if not (self.spatial_upsample or self.temporal_upsample):
            _reject("spatial_upsample", self.spatial_upsample, True)
        if self.temporal_upsample and self.dims != 3:
            _reject("dims", self.dims, 3)
        if self.spatial_upsample and not self.temporal_upsample:
            if self.rational_resampler and self.spatial_scale not in RATIONAL_SCALES:
                _reject("spatial_scale", self.spatial_scale, sorted(RATIONAL_SCALES))
            if not self.rational_resampler and self.spatial_scale != PIXEL_SHUFFLE_SCALE:
                _reject("spatial_scale", self.spatial_scale, PIXEL_SHUFFLE_SCALE)


def _shuffle_up(x: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """Depth-to-space on the trailing ``len(factors)`` axes: ``(B, C*prod(p), *S) -> (B, C, *(S*p))``.

    Channel index = ``c * prod(p) + i1 * p2 * ... + i2 * ...`` (the ``(c p1 p2 ...)`` order of the checkpoints).
    """
    n = len(factors)
    b, c_in = x.shape[:2]
    spatial = x.shape[2:]
    c = c_in // math.prod(factors)
    x = x.reshape(b, c, *factors, *spatial)
    # (B, C, p1..pn, s1..sn) -> (B, C, s1, p1, s2, p2, ...)
    order = [0, 1]
    for axis in range(n):
        order += [2 + n + axis, 2 + axis]
    x = x.permute(order)
    return x.reshape(b, c, *(s * p for s, p in zip(spatial, factors, strict=True)))


class PixelShuffle(nn.Module):
    """Depth-to-space over the last ``len(factors)`` axes; for ``factors=(2, 2)``: (N, 4C, H, W) -> (N, C, 2H, 2W)."""

    def __init__(self, factors: tuple[int, ...]) -> None:
        super().__init__()
        self.factors = tuple(factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shuffle_up(x, self.factors)


class _TemporalShuffle(PixelShuffle):
    """Depth-to-time for 5-D latents: (B, 2C, F, H, W) -> (B, C, 2F, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c_in, f, h, w = x.shape
        (p,) = self.factors
        x = x.reshape(b, c_in // p, p, f, h, w).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, c_in // p, f * p, h, w)


class BlurDownsample(nn.Module):
    """Anti-aliased stride-``stride`` downsampling with a fixed binomial 5x5 kernel: (N, C, H, W) -> (N, C, H', W')."""

    def __init__(self, stride: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.stride = stride
        taps = torch.tensor([math.comb(BLUR_KERNEL_SIZE - 1, k) for k in range(BLUR_KERNEL_SIZE)], dtype=torch.float64)
        kernel = torch.outer(taps, taps)
        kernel = (kernel / kernel.sum()).to(torch.float32)
        # persistent: the upsampler files carry it as `upsampler.blur_down.kernel`
        self.register_buffer("kernel", kernel[None, None].to(device))  # (1, 1, 5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, BLUR_KERNEL_SIZE, BLUR_KERNEL_SIZE)
        return nn.functional.conv2d(x, weight, stride=self.stride, padding=BLUR_KERNEL_SIZE // 2, groups=channels)


class RationalResampler(nn.Module):
    """Spatial scale by num/den per frame: conv to num^2 x channels, shuffle up by num, blur down by den.

    (B, C, F, H, W) -> (B, C, F, H*num/den, W*num/den).
    """

    def __init__(self, channels: int, scale: float, dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        self.num, self.den = RATIONAL_SCALES[float(scale)]
        self.conv = nn.Conv2d(channels, self.num**2 * channels, 3, padding=1, dtype=dtype, device=device)
        self.pixel_shuffle = PixelShuffle((self.num, self.num))
        self.blur_down = BlurDownsample(self.den, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # (N, C, H, W): frames already folded into the batch (dims=2)
            return self.blur_down(self.pixel_shuffle(self.conv(x)))
        frames = x.shape[2]
        return _batch_to_frames(self.forward(_frames_to_batch(x)), frames)


class ResBlock(nn.Module):
    """conv-norm-SiLU-conv-norm, residual add, SiLU; (N, C, *S) -> (N, C, *S) with S 2-D or 3-D."""

    def __init__(self, channels: int, dims: int, dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else Conv3d
        factory = {"dtype": dtype, "device": device}
        self.conv1 = conv(channels, channels, 3, padding=1, **factory)
        self.norm1 = nn.GroupNorm(GROUP_NORM_GROUPS, channels, **factory)
        self.conv2 = conv(channels, channels, 3, padding=1, **factory)
        self.norm2 = nn.GroupNorm(GROUP_NORM_GROUPS, channels, **factory)
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.activation(h + x)


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)  # (B*F, C, H, W)


def _batch_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)  # (B, C, F, H, W)


class LatentUpsampler(nn.Module):
    """Upsample un-normalised video latents: (B, 128, F, H, W) -> (B, 128, F', H*s, W*s).

    Spatial only: F' = F and s = ``spatial_scale`` (2 by pixel shuffle, or 0.75 / 1.5 / 2 / 4 by the rational
    resampler). Temporal: F' = 2F - 1 (the first upsampled frame is dropped); spatio-temporal also doubles H, W.
    """

    def __init__(
        self,
        config: LatentUpsamplerConfig,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        factory = {"dtype": dtype, "device": device}
        mid = config.mid_channels
        conv = nn.Conv2d if config.dims == 2 else Conv3d
        self.initial_conv = conv(config.in_channels, mid, 3, padding=1, **factory)
        self.initial_norm = nn.GroupNorm(GROUP_NORM_GROUPS, mid, **factory)
        self.initial_activation = nn.SiLU()
        self.res_blocks = nn.ModuleList(
            [ResBlock(mid, config.dims, dtype, device) for _ in range(config.num_blocks_per_stage)]
        )
        self.upsampler = self._build_upsampler(config, dtype, device)
        self.post_upsample_res_blocks = nn.ModuleList(
            [ResBlock(mid, config.dims, dtype, device) for _ in range(config.num_blocks_per_stage)]
        )
        self.final_conv = conv(mid, config.in_channels, 3, padding=1, **factory)

    @staticmethod
    def _build_upsampler(
        config: LatentUpsamplerConfig, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> nn.Module:
        mid = config.mid_channels
        factory = {"dtype": dtype, "device": device}
        if config.spatial_upsample and config.temporal_upsample:
            return nn.Sequential(Conv3d(mid, 8 * mid, 3, padding=1, **factory), PixelShuffle((2, 2, 2)))
        if config.temporal_upsample:
            return nn.Sequential(Conv3d(mid, 2 * mid, 3, padding=1, **factory), _TemporalShuffle((2,)))
        if config.rational_resampler:
            return RationalResampler(mid, config.spatial_scale, dtype, device)
        return nn.Sequential(nn.Conv2d(mid, 4 * mid, 3, padding=1, **factory), PixelShuffle((2, 2)))

    def _stage(self, x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        frames = latent.shape[2]
        per_frame = self.config.dims == 2
        x = _frames_to_batch(latent) if per_frame else latent  # (B*F, C, H, W) or (B, C, F, H, W)
        x = self.initial_activation(self.initial_norm(self.initial_conv(x)))
        x = self._stage(x, self.res_blocks)
        if per_frame or isinstance(self.upsampler, RationalResampler):
            x = self.upsampler(x)
        elif self.config.temporal_upsample:
            # the first latent frame encodes a single pixel frame: drop its upsampled twin
            x = self.upsampler(x)[:, :, 1:]
        else:
            x = _batch_to_frames(self.upsampler(_frames_to_batch(x)), frames)
        x = self._stage(x, self.post_upsample_res_blocks)
        x = self.final_conv(x)
        return _batch_to_frames(x, frames) if per_frame else x


def upsample_latent(
    latent: torch.Tensor,
    upsampler: LatentUpsampler,
    mean_of_means: torch.Tensor,
    std_of_means: torch.Tensor,
) -> torch.Tensor:
    """Upsample a *normalised* video latent (B, C, F, H, W): un-normalise, upsample, re-normalise.

    ``mean_of_means`` / ``std_of_means`` (C,) are the video VAE's ``per_channel_statistics`` buffers.
    """
    mean = mean_of_means.reshape(1, -1, 1, 1, 1).to(latent)
    std = std_of_means.reshape(1, -1, 1, 1, 1).to(latent)
    upsampled = upsampler(latent * std + mean)
    return (upsampled - mean.to(upsampled)) / std.to(upsampled)
