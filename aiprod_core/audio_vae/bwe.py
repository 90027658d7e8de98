"""LTX-2.3 / LTX-2.5 vocoder with bandwidth extension: 16 kHz BigVGAN-v2 output -> 48 kHz waveform.

The 16 kHz waveform is analysed by a causal log-mel STFT, a second generator predicts a 48 kHz residual from
it, and the residual is added to a band-limited x3 upsampling of the 16 kHz waveform.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .config import BandwidthExtensionConfig, VocoderConfig
from .mel import LOG_FLOOR
from .resample import HannSincUpsampler
from .vocoder import Vocoder

__all__ = ["CausalMelSTFT", "VocoderWithBWE", "build_vocoder"]


def stft_bases(n_fft: int, hop_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and inverse (2 (n_fft // 2 + 1), 1, n_fft) DFT x periodic-Hann bases (float32, CPU).

    Rows are the real (cos) then imaginary (-sin) parts of the one-sided DFT. The inverse basis is
    pinv((n_fft / hop) * forward).T before windowing; the rows are orthogonal, so that is each row divided by
    its squared norm (zero rows stay zero) and by n_fft / hop.
    """
    n_freqs = n_fft // 2 + 1
    freqs, taps = torch.arange(n_freqs, dtype=torch.float64), torch.arange(n_fft, dtype=torch.float64)
    angle = 2.0 * math.pi * torch.outer(freqs, taps) / n_fft  # (n_freqs, n_fft)
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)])  # (2 n_freqs, n_fft)
    row_norm = basis.square().sum(dim=1, keepdim=True)
    nonzero = row_norm > 1e-9
    inverse = torch.where(nonzero, basis / torch.where(nonzero, row_norm, 1.0), 0.0) / (n_fft / hop_length)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    return (basis * window).float().unsqueeze(1), (inverse * window).float().unsqueeze(1)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-scale, Slaney-normalised filters from 0 Hz to Nyquist (librosa's default)."""
    return torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1, f_min=0.0, f_max=sample_rate / 2.0, n_mels=n_mels, sample_rate=sample_rate,
        norm="slaney", mel_scale="slaney",
    ).T.contiguous()


class STFTBases(nn.Module):
    """Holds ``forward_basis`` / ``inverse_basis`` (checkpoint buffers); the magnitude of a causal STFT.

    (N, S) waveform -> (N, n_fft // 2 + 1, S / hop) magnitude; the signal is left-padded by n_fft - hop so a
    frame never sees later samples.
    """

    def __init__(self, n_fft: int, hop_length: int,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.left_pad = n_fft - hop_length
        forward, inverse = stft_bases(n_fft, hop_length)
        self.register_buffer("forward_basis", forward.to(device=device, dtype=dtype or torch.float32))
        self.register_buffer("inverse_basis", inverse.to(device=device, dtype=dtype or torch.float32))

    def magnitude(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = F.conv1d(F.pad(waveform.unsqueeze(1), (self.left_pad, 0)), self.forward_basis.to(waveform),
                        stride=self.hop_length)  # (N, 2 n_freqs, frames)
        real, imag = spec.chunk(2, dim=1)
        return torch.sqrt(real**2 + imag**2)


class CausalMelSTFT(nn.Module):
    """Causal log-mel analysis of the BWE: (N, S) waveform -> (N, n_mels, S / hop) log-mel.

    Buffers ``mel_basis`` (n_mels, n_fft // 2 + 1) and ``stft_fn.{forward,inverse}_basis`` are computed here
    and overwritten by the checkpoint's (bf16) values on load.
    """

    def __init__(self, config: BandwidthExtensionConfig,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.stft_fn = STFTBases(config.n_fft, config.hop_length, dtype=dtype, device=device)
        mel = mel_filterbank(config.num_mels, config.n_fft, config.input_sampling_rate)
        self.register_buffer("mel_basis", mel.to(device=device, dtype=dtype or torch.float32))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        magnitude = self.stft_fn.magnitude(waveform)
        mel = torch.matmul(self.mel_basis.to(magnitude), magnitude)
        return torch.log(torch.clamp(mel, min=LOG_FLOOR))


class VocoderWithBWE(nn.Module):
    """BigVGAN-v2 vocoder followed by bandwidth extension.

    Input (B, 2, frames, 64) log-mel; output (B, 2, frames x hop x ratio) waveform at 48 kHz in [-1, 1]
    (the 16 kHz vocoder gives frames x 160 samples; the extension multiplies by ratio = 48 / 16).
    """

    def __init__(self, config: VocoderConfig,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        if config.bwe is None:
            raise ValueError("vocoder.bwe=None, expected a bandwidth-extension section")
        self.config = config.bwe
        self.output_sampling_rate = config.bwe.output_sampling_rate
        self.vocoder = Vocoder(config.generator, dtype=dtype, device=device)
        self.bwe_generator = Vocoder(config.bwe.generator, dtype=dtype, device=device)
        self.mel_stft = CausalMelSTFT(config.bwe, dtype=dtype, device=device)
        self.resampler = HannSincUpsampler(config.bwe.ratio)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 2, frames, 64) log-mel -> (B, 2, samples) 48 kHz waveform in the dtype of ``mel``.

        Computes in float32 whatever the weights' dtype (bf16 weights are cast layer by layer): Lightricks'
        reference (release 1.2.0) does so because bf16 accumulation through the ~100 sequential convolutions
        degrades the spectrum; on CPU it is also several times faster than bf16 convolutions.
        """
        low = self.vocoder(mel.float())  # (B, 2, S) at the input rate
        batch, channels, samples = low.shape
        output_samples = samples * self.config.ratio
        hop = self.config.hop_length
        low = F.pad(low, (0, (-samples) % hop))  # whole mel frames
        log_mel = self.mel_stft(low.reshape(batch * channels, -1))  # (B*2, n_mels, frames)
        log_mel = log_mel.reshape(batch, channels, *log_mel.shape[1:]).transpose(2, 3)  # (B, 2, frames, n_mels)
        residual = self.bwe_generator(log_mel)
        skip = self.resampler(low)
        return torch.clamp(residual + skip, -1, 1)[..., :output_samples].to(mel.dtype)


def build_vocoder(config: VocoderConfig, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> Vocoder | VocoderWithBWE:
    """The module ``config["vocoder"]`` describes: ``Vocoder`` (LTX-2) or ``VocoderWithBWE`` (LTX-2.3)."""
    if config.bwe is None:
        return Vocoder(config.generator, dtype=dtype, device=device)
    return VocoderWithBWE(config, dtype=dtype, device=device)
