"""Video conditioning items: each maps a patchified ``LatentState`` to a conditioned one.

- ``ImageAtLatentIndex``: replaces the tokens of latent frames from ``latent_index`` on (image-to-video).
- ``Keyframe``: appends tokens at pixel frame ``frame_index`` (keyframe interpolation).
- ``ReferenceVideo``: appends a (possibly lower-resolution) reference video's tokens (IC-LoRA).
- ``AttentionStrength``: wraps an appending item and sets how strongly its tokens and the generated ones attend.

Appended tokens always go after the existing ones; ``VideoLayout.strip_conditioning`` / ``unpatchify`` drop them.
A token's denoise strength is 1 - ``strength``: strength 1 keeps the conditioning clean.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch

from ..sampling.patchify import VideoLayout, patchify_video, video_positions
from ..sampling.state import LatentState, VideoLatentShape
from .masks import append_attention_strength, per_token_strength

__all__ = [
    "AttentionStrength",
    "ConditioningError",
    "ConditioningItem",
    "ImageAtLatentIndex",
    "Keyframe",
    "ReferenceVideo",
    "apply_conditionings",
]


class ConditioningError(ValueError):
    """A conditioning latent does not fit the generated video's latent grid."""

    __module__ = "AIPROD"  # how ComfyUI names the type to users (not the pack's file-system module path)


class ConditioningItem(Protocol):
    """Conditions a patchified video state (tokens may only be appended at the end)."""

    def apply(self, state: LatentState, layout: VideoLayout) -> LatentState: ...


def apply_conditionings(
    state: LatentState, items: list[ConditioningItem] | tuple[ConditioningItem, ...], layout: VideoLayout
) -> LatentState:
    for item in items:
        state = item.apply(state, layout)
    return state


@dataclass(frozen=True)
class ImageAtLatentIndex:
    """Latent frames (B, C, F', H, W) replacing frames latent_index .. latent_index + F' - 1 of the generation."""

    latent: torch.Tensor
    strength: float
    latent_index: int = 0

    def apply(self, state: LatentState, layout: VideoLayout) -> LatentState:
        batch, channels, frames, height, width = self.latent.shape
        target = layout.shape
        if (batch, channels, height, width) != (target.batch, target.channels, target.height, target.width):
            raise ConditioningError(
                f"conditioning latent {tuple(self.latent.shape)} does not fit latent grid {tuple(target)}"
            )
        if not 0 <= self.latent_index <= target.frames - frames:
            raise ConditioningError(
                f"latent_index={self.latent_index!r}, expected 0..{target.frames - frames} for {frames} frame(s)"
            )
        tokens = patchify_video(self.latent)  # (B, F' H W, C)
        start = self.latent_index * height * width
        stop = start + tokens.shape[1]
        latent, clean, mask = state.latent.clone(), state.clean_latent.clone(), state.denoise_mask.clone()
        latent[:, start:stop] = tokens
        clean[:, start:stop] = tokens
        mask[:, start:stop] = 1.0 - self.strength
        return replace(state, latent=latent, clean_latent=clean, denoise_mask=mask)


def _append(
    state: LatentState, layout: VideoLayout, latent: torch.Tensor, positions: torch.Tensor, strength: float
) -> LatentState:
    """Appends ``latent``'s tokens (kept clean in ``clean_latent``), their positions and denoise strength."""
    tokens = patchify_video(latent)  # (B, M, C)
    mask = torch.full((*tokens.shape[:2], 1), 1.0 - strength, device=latent.device, dtype=latent.dtype)
    attention = state.attention_mask
    if attention is not None:  # grow the existing matrix; new tokens attend the generated ones fully
        ones = torch.ones(tokens.shape[:2], device=latent.device, dtype=latent.dtype)
        attention = append_attention_strength(attention, state.tokens, layout.tokens, ones)
    marker = state.keyframes_mask  # given content is never marked (only generated keyframe slots are)
    if marker is not None:
        marker = torch.cat([marker, marker.new_zeros((*tokens.shape[:2], 1))], dim=1)
    return LatentState(
        latent=torch.cat([state.latent, tokens], dim=1),
        denoise_mask=torch.cat([state.denoise_mask, mask], dim=1),
        positions=torch.cat([state.positions, positions], dim=2),
        clean_latent=torch.cat([state.clean_latent, tokens], dim=1),
        attention_mask=attention,
        keyframes_mask=marker,
    )


@dataclass(frozen=True)
class Keyframe:
    """Keyframe latent (B, C, F', H, W) appended at pixel frame ``frame_index`` (time positions shifted by it)."""

    latent: torch.Tensor
    frame_index: int
    strength: float

    def apply(self, state: LatentState, layout: VideoLayout) -> LatentState:
        positions = video_positions(
            VideoLatentShape.of(self.latent),
            layout.fps,
            scale=layout.scale,
            causal_first_frame=layout.causal_first_frame and self.frame_index == 0,
            frame_offset=self.frame_index,
            device=self.latent.device,
        )
        return _append(state, layout, self.latent, positions, self.strength)


@dataclass(frozen=True)
class ReferenceVideo:
    """Reference video latent (B, C, F', H', W') for IC-LoRA; spatial positions x ``downscale_factor``."""

    latent: torch.Tensor
    downscale_factor: float = 1
    strength: float = 1.0

    def apply(self, state: LatentState, layout: VideoLayout) -> LatentState:
        positions = video_positions(
            VideoLatentShape.of(self.latent),
            layout.fps,
            scale=layout.scale,
            causal_first_frame=layout.causal_first_frame,
            spatial_scale=self.downscale_factor,
            device=self.latent.device,
        )
        return _append(state, layout, self.latent, positions, self.strength)


@dataclass(frozen=True)
class AttentionStrength:
    """Applies ``item`` then sets how strongly its new tokens and the generated tokens attend each other.

    ``strength``: a scalar, (M,) or (B, M) per new token, in [0, 1]; earlier conditioning groups and the new
    tokens never attend each other once a matrix exists.
    """

    item: ConditioningItem
    strength: float | torch.Tensor

    def apply(self, state: LatentState, layout: VideoLayout) -> LatentState:
        conditioned = self.item.apply(state, layout)
        new_tokens = conditioned.tokens - state.tokens
        if new_tokens == 0:
            return conditioned
        latent = conditioned.latent
        strength = per_token_strength(self.strength, new_tokens, latent.shape[0], latent.device, latent.dtype)
        matrix = append_attention_strength(state.attention_mask, state.tokens, layout.tokens, strength)
        return replace(conditioned, attention_mask=matrix)
