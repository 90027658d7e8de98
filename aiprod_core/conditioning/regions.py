"""Conditioning items that mark which tokens of a stream are generated, for either stream (video or audio).

- ``TemporalRegionMask``: regenerate only the tokens overlapping ``[start_time, end_time)`` (retake, extension);
  every other token keeps its clean value (the stream's initial latent) exactly.
- ``Frozen``: hold the whole stream fixed (audio-to-video's audio, a retake that keeps one stream).

Both set the per-token denoise strength before the noiser runs, so a kept token is never noised: it enters the
transformer as its clean value at timestep 0, and the loop's clean-token blend returns it bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch

from ..sampling.state import LatentState

__all__ = ["Frozen", "StreamLayout", "TemporalRegionMask", "region_tokens"]


class StreamLayout(Protocol):
    """What the region items read of a stream's layout (`VideoLayout` or `AudioLayout`)."""

    @property
    def tokens(self) -> int: ...

    def positions(self, device: torch.device | str = "cpu") -> torch.Tensor: ...


def region_tokens(layout: StreamLayout, start_time: float, end_time: float,
                  device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """(B, T) bool: the generated tokens whose time span [t0, t1) overlaps [start_time, end_time) (t1 > start and
    t0 < end), from the layout's float32 positions in seconds (video: the causal VAE's first latent frame spans
    pixel frame 0 only; audio: the causal mel frames of each latent)."""
    bounds = layout.positions(device)[:, 0]  # (B, T, 2) seconds
    return (bounds[..., 1] > start_time) & (bounds[..., 0] < end_time)


@dataclass(frozen=True)
class TemporalRegionMask:
    """Denoise strength 1 on the stream's tokens overlapping ``[start_time, end_time)`` seconds, 0 on the others
    (tokens appended by other items keep theirs). The clean values are the stream's initial latent."""

    start_time: float
    end_time: float

    def apply(self, state: LatentState, layout: StreamLayout) -> LatentState:
        inside = region_tokens(layout, self.start_time, self.end_time, state.denoise_mask.device)
        mask = state.denoise_mask.clone()  # (B, T, 1)
        mask[:, : layout.tokens] = inside.unsqueeze(-1).to(mask.dtype)
        return replace(state, denoise_mask=mask)


@dataclass(frozen=True)
class Frozen:
    """The whole stream held at its clean values: denoise strength 0 everywhere and ``frozen`` set (the
    transformer then sees it at sigma 0, as ltx-pipelines' frozen modality)."""

    def apply(self, state: LatentState, layout: StreamLayout) -> LatentState:
        return replace(state, denoise_mask=torch.zeros_like(state.denoise_mask), frozen=True)
