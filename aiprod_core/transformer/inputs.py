"""Typed inputs and outputs of the audio+video transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = ["ModalityInput", "TransformerOutput"]


@dataclass(frozen=True)
class ModalityInput:
    """One stream (video or audio) of a transformer call.

    latent: patchified tokens (B, T, C) (noisy and conditioning tokens together).
    sigma: (B,) noise level of each sample (a single value is broadcast); drives the prompt AdaLN (LTX-2.3) and,
        for the OTHER stream, the audio<->video cross-attention modulation.
    timesteps: (B, T) per-token timestep, sigma x denoise mask ((B, 1) for one per sample).
    positions: (B, n_dims, T, 2) [start, end) coordinates per token: (time s, y px, x px) for video (n_dims 3),
        time in seconds for audio (n_dims 1), as the patchifiers produce them.
    context: (B, S, D) text embeddings: the caption width (LTX-2, projected in the transformer) or the
        stream's inner width (LTX-2.3, already projected by the text-encoder path).
    context_mask: optional (B, S) bool / 0-1 integer mask of the context tokens (True / 1 = attend).
    attention_mask: optional (B, T, T) self-attention strengths in [0, 1] (1 = full, 0 = none).
    enabled: False leaves this stream's tokens untouched by the blocks (it still feeds the other stream).
    keyframes_mask: optional (B, T) or (B, T, 1) marker (> 0) of the video tokens whose latent holds a single
        pixel frame; they get the model's learned keyframe embedding (LTX-2.5; ignored by models without it).
        The reference (ltx-core 1.2.0) marks the target's first latent frame (the causal VAE gives it one pixel
        frame) and every generated keyframe slot token, never guide / reference tokens.
    """

    latent: torch.Tensor
    sigma: torch.Tensor
    timesteps: torch.Tensor
    positions: torch.Tensor
    context: torch.Tensor
    context_mask: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    enabled: bool = True
    keyframes_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.latent.shape[0]

    def sigma_per_sample(self) -> torch.Tensor:
        """sigma as (B,), broadcasting a single value."""
        sigma = self.sigma.reshape(-1)
        if sigma.numel() == 1:
            return sigma.expand(self.batch_size)
        if sigma.numel() != self.batch_size:
            raise ValueError(f"sigma has {sigma.numel()} values, expected 1 or the batch size {self.batch_size}")
        return sigma


class TransformerOutput(NamedTuple):
    """Velocity predictions: video (B, T_video, out_channels), audio (B, T_audio, audio_out_channels)."""

    video: torch.Tensor | None
    audio: torch.Tensor | None

