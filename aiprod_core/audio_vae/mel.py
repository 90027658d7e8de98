"""Mel front end of the audio VAE: stereo waveform -> the log-mel spectrogram ``AudioEncoder`` consumes."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from .config import AudioVAEConfig

__all__ = ["MelFrontEnd"]

LOG_FLOOR = 1e-5  # log(max(mel, 1e-5)), as the encoder was trained


class MelFrontEnd(nn.Module):
    """Resample to the VAE's rate, then a Slaney log-mel magnitude spectrogram (centred, reflect-padded STFT).

    Input (B, C, S) waveform in [-1, 1] at ``sample_rate``; output (B, C, 1 + S' // hop, mel_bins) float32 log-mel
    (S' = samples after resampling). No state: the Hann window and the filterbank are built per call.
    """

    def __init__(self, config: AudioVAEConfig) -> None:
        super().__init__()
        self.sample_rate = config.sample_rate
        self.n_fft = config.n_fft
        self.hop_length = config.mel_hop_length
        self.mel_bins = config.mel_bins

    def filterbank(self, device: torch.device) -> torch.Tensor:
        """(n_fft // 2 + 1, mel_bins) Slaney-scale, Slaney-normalised triangular filters up to Nyquist."""
        return torchaudio.functional.melscale_fbanks(
            n_freqs=self.n_fft // 2 + 1,
            f_min=0.0,
            f_max=self.sample_rate / 2.0,
            n_mels=self.mel_bins,
            sample_rate=self.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        ).to(device)

    def forward(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """(B, C, S) at ``sample_rate`` -> (B, C, frames, mel_bins) float32 log-mel."""
        if waveform.dim() != 3:
            raise ValueError(f"waveform.dim()={waveform.dim()!r}, expected 3 (B, C, S)")
        waveform = waveform.float()  # FFTs run in float32 whatever the model dtype
        if sample_rate != self.sample_rate:
            waveform = torchaudio.functional.resample(waveform, sample_rate, self.sample_rate)
        window = torch.hann_window(self.n_fft, device=waveform.device)
        magnitude = torchaudio.functional.spectrogram(  # (B, C, n_fft // 2 + 1, frames)
            waveform,
            pad=0,
            window=window,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            power=1.0,
            normalized=False,
            center=True,
            pad_mode="reflect",
            onesided=True,
        )
        mel = torch.matmul(magnitude.transpose(-1, -2), self.filterbank(waveform.device))  # (B, C, frames, mel)
        return torch.log(torch.clamp(mel, min=LOG_FLOOR))
