"""Waveform <-> audio latent, chaining the mel front end, the VAE halves and the vocoder."""

from __future__ import annotations

import torch

from .bwe import VocoderWithBWE
from .decoder import AudioDecoder
from .encoder import AudioEncoder
from .mel import MelFrontEnd
from .vocoder import Vocoder

__all__ = ["decode_latent", "encode_waveform"]


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def encode_waveform(waveform: torch.Tensor, sample_rate: int, encoder: AudioEncoder) -> torch.Tensor:
    """(B, C, S) waveform at ``sample_rate`` -> (B, z_channels, T', F') normalised latent in the encoder's dtype."""
    device = next(encoder.parameters()).device
    mel = MelFrontEnd(encoder.config)(waveform.to(device), sample_rate)  # (B, C, T, mel_bins) float32
    return encoder(mel.to(_dtype_of(encoder)))


def decode_latent(latent: torch.Tensor, decoder: AudioDecoder, vocoder: Vocoder | VocoderWithBWE) -> torch.Tensor:
    """(B, z_channels, T', F') latent -> (B, 2, samples) float32 waveform at ``vocoder.output_sampling_rate``.

    Unlike ltx-core's ``decode_audio`` the batch axis is kept (it squeezes dim 0).
    """
    mel = decoder(latent.to(_dtype_of(decoder)))  # (B, 2, T, mel_bins)
    return vocoder(mel.to(_dtype_of(vocoder))).float()
