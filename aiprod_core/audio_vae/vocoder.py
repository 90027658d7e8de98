"""Mel -> waveform generators: HiFi-GAN (LTX-2) and BigVGAN-v2 with anti-aliased SnakeBeta (LTX-2.3 / 2.5).

A generator computes in the dtype of its input: weights stored in another dtype are cast per layer (the
bandwidth-extension vocoder feeds float32 through bf16-stored weights, as Lightricks' 1.2.0 reference does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import STEREO_CHANNELS, VOCODER_MEL_BINS, GeneratorConfig
from .resample import DownSample1d, UpSample1d

__all__ = ["Conv1d", "ConvTranspose1d", "Vocoder"]

LEAKY_SLOPE = 0.1  # HiFi-GAN's slope inside the generator
POST_LEAKY_SLOPE = 0.01  # the final activation is a default nn.LeakyReLU upstream
SNAKE_EPS = 1e-9
PRE_POST_KERNEL = 7


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` (B, C_in, S) -> (B, C_out, S') computing in the input's dtype; no initialisation on meta."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


class ConvTranspose1d(nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` (B, C_in, S) -> (B, C_out, S x stride) computing in the input's dtype."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv_transpose1d(x, self.weight.to(x.dtype), bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


class SnakeBeta(nn.Module):
    """x + sin(x e^alpha)^2 / (e^beta + 1e-9) per channel (log-scale ``alpha``, ``beta``): (B, C, S) -> same."""

    def __init__(self, channels: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels, dtype=dtype, device=device))
        self.beta = nn.Parameter(torch.zeros(channels, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In the input's dtype (the reference's float32 autocast over bf16 weights runs exp in float32 too).
        alpha = torch.exp(self.alpha.to(x.dtype))[None, :, None]
        inverse_beta = 1.0 / (torch.exp(self.beta.to(x.dtype))[None, :, None] + SNAKE_EPS)
        if torch.is_grad_enabled():
            return x + inverse_beta * torch.sin(x * alpha).pow(2)
        # Inference: the same ops in the same order, in place on one buffer (bitwise equal, ~2.5x faster on CPU).
        out = torch.mul(x, alpha)
        return out.sin_().square_().mul_(inverse_beta).add_(x)


class Activation1d(nn.Module):
    """Anti-aliased SnakeBeta: x2 upsample -> ``act`` -> x2 low-pass decimation. (B, C, S) -> (B, C, S)."""

    def __init__(self, channels: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        self.act = SnakeBeta(channels, dtype=dtype, device=device)
        self.upsample = UpSample1d(dtype=dtype, device=device)
        self.downsample = DownSample1d(dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _dilated_convs(channels: int, kernel_size: int, dilations: tuple[int, ...], padding_same: bool,
                   dtype: torch.dtype | None, device: torch.device | str | None) -> nn.ModuleList:
    def padding(dilation: int) -> int | str:
        return "same" if padding_same else (kernel_size * dilation - dilation) // 2

    return nn.ModuleList(
        Conv1d(channels, channels, kernel_size, dilation=d, padding=padding(d), dtype=dtype, device=device)
        for d in dilations
    )


class ResBlock1(nn.Module):
    """HiFi-GAN residual block: 3 x (leaky -> dilated conv -> leaky -> conv, + skip). (B, C, S) -> same."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...],
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.convs1 = _dilated_convs(channels, kernel_size, dilations, True, dtype, device)
        self.convs2 = _dilated_convs(channels, kernel_size, (1,) * len(dilations), True, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            x = x + conv2(F.leaky_relu(conv1(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE))
        return x


class AMPBlock1(nn.Module):
    """BigVGAN-v2 block: 3 x (anti-aliased SnakeBeta -> dilated conv -> SnakeBeta -> conv, + skip). (B, C, S)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...],
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.convs1 = _dilated_convs(channels, kernel_size, dilations, False, dtype, device)
        self.convs2 = _dilated_convs(channels, kernel_size, (1,) * len(dilations), False, dtype, device)
        self.acts1 = nn.ModuleList(Activation1d(channels, dtype, device) for _ in dilations)
        self.acts2 = nn.ModuleList(Activation1d(channels, dtype, device) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.acts1, self.acts2, strict=True):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class Vocoder(nn.Module):
    """Transposed-conv mel -> waveform generator with multi-receptive-field residual blocks.

    Input (B, 2, frames, 64) log-mel (the stereo channels are stacked into 128 conv channels); output
    (B, 2, frames x prod(upsample_rates)) waveform at ``config.output_sampling_rate``: tanh- or clamp-bounded
    to [-1, 1] when ``config.apply_final_activation``, raw otherwise (the BWE generator's residual).
    """

    def __init__(self, config: GeneratorConfig,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.output_sampling_rate = config.output_sampling_rate
        fd = {"dtype": dtype, "device": device}
        width = config.upsample_initial_channel
        in_channels = STEREO_CHANNELS * VOCODER_MEL_BINS
        self.conv_pre = Conv1d(in_channels, width, PRE_POST_KERNEL, padding=PRE_POST_KERNEL // 2, **fd)
        self.ups = nn.ModuleList(
            ConvTranspose1d(width // 2**i, width // 2 ** (i + 1), kernel, rate, padding=(kernel - rate) // 2, **fd)
            for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True))
        )
        block_cls = AMPBlock1 if config.is_amp else ResBlock1
        self.resblocks = nn.ModuleList(
            block_cls(width // 2 ** (i + 1), kernel, tuple(dilations), **fd)
            for i in range(len(config.upsample_rates))
            for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True)
        )
        final = width // 2 ** len(config.upsample_rates)
        self.act_post = Activation1d(final, **fd) if config.is_amp else nn.LeakyReLU(POST_LEAKY_SLOPE)
        self.conv_post = Conv1d(final, STEREO_CHANNELS, PRE_POST_KERNEL, padding=PRE_POST_KERNEL // 2,
                                   bias=config.use_bias_at_final, **fd)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 2, frames, 64) log-mel -> (B, 2, samples) waveform."""
        if mel.dim() != 4 or mel.shape[1] != STEREO_CHANNELS or mel.shape[3] != VOCODER_MEL_BINS:
            raise ValueError(f"mel.shape={tuple(mel.shape)!r}, expected (B, 2, frames, {VOCODER_MEL_BINS})")
        batch, channels, frames, bins = mel.shape
        x = self.conv_pre(mel.transpose(2, 3).reshape(batch, channels * bins, frames))  # (B, 128, frames)
        per_stage = len(self.config.resblock_kernel_sizes)
        for stage, upsample in enumerate(self.ups):
            if not self.config.is_amp:
                x = F.leaky_relu(x, LEAKY_SLOPE)
            x = upsample(x)
            blocks = self.resblocks[stage * per_stage : (stage + 1) * per_stage]
            x = torch.stack([block(x) for block in blocks]).mean(dim=0)
        x = self.conv_post(self.act_post(x))
        if not self.config.apply_final_activation:
            return x
        return torch.tanh(x) if self.config.use_tanh_at_final else torch.clamp(x, -1, 1)
