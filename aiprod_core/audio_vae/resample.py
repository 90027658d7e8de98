"""Windowed-sinc 1-D resampling filters: BigVGAN's anti-aliased activations and the BWE's x3 resampler.

Waveform-like tensors are (B, C, S); every filter is applied depthwise (the same taps for each channel).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DownSample1d", "HannSincUpsampler", "UpSample1d", "kaiser_sinc_filter"]

ANTI_ALIAS_KERNEL = 12  # taps of the x2 up / down filters around each BigVGAN activation
# Hann-windowed sinc with torchaudio.functional.resample's defaults (sinc_interp_hann).
HANN_ROLLOFF = 0.99
HANN_ZERO_CROSSINGS = 6


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """(1, 1, kernel_size) Kaiser-windowed low-pass sinc normalised to unit DC gain (float32, CPU).

    ``cutoff`` and ``half_width`` are in cycles per sample; beta follows Kaiser's attenuation formula.
    """
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta, device="cpu")
    if kernel_size % 2 == 0:
        time = torch.arange(-half, half, device="cpu") + 0.5
    else:
        time = torch.arange(kernel_size, device="cpu") - half
    if cutoff == 0:
        taps = torch.zeros_like(time)
    else:
        taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
        taps = taps / taps.sum()
    return taps.view(1, 1, kernel_size)


def _filter_buffer(taps: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:
    return taps.to(device=device, dtype=dtype if dtype is not None else torch.float32)


def _depthwise(taps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return taps.to(dtype=like.dtype, device=like.device).expand(like.shape[1], -1, -1)


class UpSample1d(nn.Module):
    """x2 Kaiser-sinc interpolation with replicate padding: (B, C, S) -> (B, C, 2 S). Buffer ``filter``."""

    def __init__(self, ratio: int = 2, kernel_size: int = ANTI_ALIAS_KERNEL,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        taps = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size)
        self.register_buffer("filter", _filter_buffer(taps, dtype, device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        # The x ratio gain is folded into the 12 taps: one pass less over the 2 S output (exact for ratio 2).
        taps = _depthwise(self.filter * self.ratio, x)
        return F.conv_transpose1d(x, taps, stride=self.ratio, groups=x.shape[1])[..., self.crop_left : -self.crop_right]


class LowPassFilter1d(nn.Module):
    """Strided Kaiser-sinc low-pass with replicate padding: (B, C, S) -> (B, C, S / stride). Buffer ``filter``."""

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.stride = stride
        self.pads = (kernel_size // 2 - int(kernel_size % 2 == 0), kernel_size // 2)
        self.register_buffer("filter", _filter_buffer(kaiser_sinc_filter(cutoff, half_width, kernel_size), dtype,
                                                      device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pads, mode="replicate")
        return F.conv1d(x, _depthwise(self.filter, x), stride=self.stride, groups=x.shape[1])


class DownSample1d(nn.Module):
    """x2 decimation through ``lowpass`` (cutoff 0.25, half-width 0.3): (B, C, S) -> (B, C, S / 2)."""

    def __init__(self, ratio: int = 2, kernel_size: int = ANTI_ALIAS_KERNEL,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


@functools.lru_cache(maxsize=8)
def hann_sinc_filter(ratio: int) -> torch.Tensor:
    """(1, 1, 2 * width * ratio + 1) Hann-windowed sinc interpolation taps (float32, CPU), width = 7 zero crossings."""
    width = math.ceil(HANN_ZERO_CROSSINGS / HANN_ROLLOFF)
    kernel_size = 2 * width * ratio + 1
    time = (torch.arange(kernel_size, device="cpu") / ratio - width) * HANN_ROLLOFF
    clamped = time.clamp(-HANN_ZERO_CROSSINGS, HANN_ZERO_CROSSINGS)
    window = torch.cos(clamped * math.pi / HANN_ZERO_CROSSINGS / 2) ** 2
    return (torch.sinc(time) * window * HANN_ROLLOFF / ratio).view(1, 1, -1)


class HannSincUpsampler(nn.Module):
    """Integer-ratio band-limited upsampling (the BWE skip path): (B, C, S) -> (B, C, ratio x S).

    Holds no state: the taps are derived from ``ratio`` (and never stored in checkpoints), so a module built on
    the meta device runs as soon as its weights are assigned.
    """

    def __init__(self, ratio: int) -> None:
        super().__init__()
        self.ratio = ratio
        width = math.ceil(HANN_ZERO_CROSSINGS / HANN_ROLLOFF)
        self.pad = width
        self.crop_left = 2 * width * ratio
        self.crop_right = 2 * width * ratio + 1 - ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = _depthwise(hann_sinc_filter(self.ratio), x)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, taps, stride=self.ratio, groups=x.shape[1])
        return x[..., self.crop_left : -self.crop_right]
