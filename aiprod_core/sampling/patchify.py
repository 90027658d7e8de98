"""Latent grids <-> token sequences, and the token positions the transformer's rope reads.

Video (B, C, F, H, W) <-> (B, F*H*W, C) (patch size 1, frame-major); audio (B, C, T, M) <-> (B, T, C*M).
Positions are [start, end) bounds per token: video (B, 3, T, 2) in (seconds, y pixels, x pixels) with the causal
VAE's first frame covering one pixel frame; audio (B, 1, T, 2) in seconds of the mel frames each latent covers.
Grids depend only on the shape: they are built once per shape and cached; callers get their own copy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .state import (
    AUDIO_HOP_LENGTH,
    AUDIO_LATENT_DOWNSAMPLE,
    AUDIO_SAMPLE_RATE,
    VIDEO_SCALE_FACTORS,
    AudioLatentShape,
    LatentState,
    ScaleFactors,
    VideoLatentShape,
)

__all__ = [
    "AudioLayout",
    "VideoLayout",
    "audio_positions",
    "patchify_audio",
    "patchify_video",
    "unpatchify_audio",
    "unpatchify_video",
    "video_positions",
]


def patchify_video(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F*H*W, C)."""
    return latent.flatten(2).transpose(1, 2)


def unpatchify_video(tokens: torch.Tensor, shape: VideoLatentShape) -> torch.Tensor:
    """(B, F*H*W, C) -> (B, C, F, H, W); ``tokens`` must hold exactly the grid's tokens."""
    batch, count, channels = tokens.shape
    if count != shape.tokens:
        raise ValueError(f"{count} video tokens, expected {shape.tokens} for latent grid {tuple(shape)}")
    return tokens.transpose(1, 2).reshape(batch, channels, shape.frames, shape.height, shape.width)


def patchify_audio(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, T, M) -> (B, T, C*M), channel-major within a token."""
    batch, channels, frames, mel_bins = latent.shape
    return latent.permute(0, 2, 1, 3).reshape(batch, frames, channels * mel_bins)


def unpatchify_audio(tokens: torch.Tensor, shape: AudioLatentShape) -> torch.Tensor:
    """(B, T, C*M) -> (B, C, T, M)."""
    batch, frames, _ = tokens.shape
    return tokens.reshape(batch, frames, shape.channels, shape.mel_bins).permute(0, 2, 1, 3)


@functools.lru_cache(maxsize=32)
def _video_grid(
    frames: int,
    height: int,
    width: int,
    scale: ScaleFactors,
    causal_first_frame: bool,
    frame_offset: int,
    spatial_scale: float,
    fps: float,
    device: str,
) -> torch.Tensor:
    """(1, 3, F*H*W, 2) float32 bounds; integer pixel arithmetic first, then time / fps."""
    f, h, w = torch.meshgrid(
        torch.arange(frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    starts = torch.stack([f.flatten(), h.flatten(), w.flatten()])  # (3, T) latent indices
    bounds = torch.stack([starts, starts + 1], dim=-1)  # (3, T, 2): patch size 1
    bounds = bounds * torch.tensor(scale, device=device).view(3, 1, 1)  # pixel units
    if causal_first_frame:  # the causal VAE's first latent frame covers only pixel frame 0
        bounds[0] = (bounds[0] + 1 - scale.time).clamp(min=0)
    bounds[0] += frame_offset
    bounds = bounds.float()
    bounds[0] = bounds[0] / fps
    if spatial_scale != 1:
        bounds[1:] = bounds[1:] * spatial_scale
    return bounds.unsqueeze(0)


def video_positions(
    shape: VideoLatentShape,
    fps: float,
    *,
    scale: ScaleFactors = VIDEO_SCALE_FACTORS,
    causal_first_frame: bool = True,
    frame_offset: int = 0,
    spatial_scale: float = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, 3, F*H*W, 2) float32 [start, end) per token: (seconds, y px, x px), copied from a cached grid.

    ``frame_offset`` shifts the time axis by whole pixel frames (keyframes); ``spatial_scale`` multiplies the
    spatial axes (a reference video at 1/scale resolution, IC-LoRA).
    """
    grid = _video_grid(
        shape.frames,
        shape.height,
        shape.width,
        ScaleFactors(*scale),
        causal_first_frame,
        int(frame_offset),
        spatial_scale,
        float(fps),
        str(torch.device(device)),
    )
    return grid.expand(shape.batch, -1, -1, -1).clone()


@functools.lru_cache(maxsize=32)
def _audio_grid(frames: int, shift: int, causal: bool, device: str) -> torch.Tensor:
    """(1, 1, T, 2) float32 bounds in seconds."""

    def seconds(first: int) -> torch.Tensor:
        mel_frame = torch.arange(first, first + frames, dtype=torch.float32, device=device) * AUDIO_LATENT_DOWNSAMPLE
        if causal:  # a latent frame is complete only once the last of its mel frames is available
            mel_frame = (mel_frame + 1 - AUDIO_LATENT_DOWNSAMPLE).clip(min=0)
        return mel_frame * AUDIO_HOP_LENGTH / AUDIO_SAMPLE_RATE

    return torch.stack([seconds(shift), seconds(shift + 1)], dim=-1)[None, None]


def audio_positions(
    shape: AudioLatentShape, *, shift: int = 0, causal: bool = True, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(B, 1, T, 2) float32 [start, end) seconds per audio token (``shift`` latent frames later)."""
    grid = _audio_grid(shape.frames, int(shift), causal, str(torch.device(device)))
    return grid.expand(shape.batch, -1, -1, -1).clone()


def _initial_state(
    latent: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    patchify: Callable[[torch.Tensor], torch.Tensor],
) -> LatentState:
    tokens = patchify(latent)
    return LatentState(
        latent=tokens,
        denoise_mask=patchify(mask),
        positions=positions,
        clean_latent=tokens.clone(),
    )


@dataclass(frozen=True)
class VideoLayout:
    """A video latent grid (B, C, F, H, W) at ``fps``: its token positions, initial state and unpatchify."""

    shape: VideoLatentShape
    fps: float
    scale: ScaleFactors = VIDEO_SCALE_FACTORS
    causal_first_frame: bool = True

    @property
    def tokens(self) -> int:
        return self.shape.tokens

    def positions(self, device: torch.device | str = "cpu", **kwargs: object) -> torch.Tensor:
        return video_positions(
            self.shape, self.fps, scale=self.scale, causal_first_frame=self.causal_first_frame, device=device, **kwargs
        )

    def initial_state(
        self, device: torch.device | str, dtype: torch.dtype, latent: torch.Tensor | None = None
    ) -> LatentState:
        """Tokens of ``latent`` (zeros if None), full denoise strength; positions in ``dtype`` as upstream."""
        latent = self._checked(latent, device, dtype)
        mask = torch.ones((*self.shape[:1], 1, *self.shape[2:]), device=latent.device, dtype=torch.float32)
        return _initial_state(latent, mask, self.positions(latent.device).to(dtype), patchify_video)

    def _checked(self, latent: torch.Tensor | None, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        if latent is None:
            return torch.zeros(self.shape.torch_shape(), device=device, dtype=dtype)
        if tuple(latent.shape) != tuple(self.shape):
            raise ValueError(f"latent shape {tuple(latent.shape)}, expected {tuple(self.shape)}")
        return latent

    def strip_conditioning(self, state: LatentState) -> LatentState:
        """Drop appended conditioning tokens (and the attention mask); the denoise mask becomes all ones."""
        return _strip(state, self.tokens)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T', C) with T' >= F*H*W (appended guide tokens are dropped) -> (B, C, F, H, W)."""
        return unpatchify_video(tokens[:, : self.tokens], self.shape)


@dataclass(frozen=True)
class AudioLayout:
    """An audio latent grid (B, C, T, M): its token positions, initial state and unpatchify."""

    shape: AudioLatentShape
    shift: int = 0
    causal: bool = True

    @property
    def tokens(self) -> int:
        return self.shape.tokens

    def positions(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return audio_positions(self.shape, shift=self.shift, causal=self.causal, device=device)

    def initial_state(
        self, device: torch.device | str, dtype: torch.dtype, latent: torch.Tensor | None = None
    ) -> LatentState:
        """Tokens of ``latent`` (zeros if None), full denoise strength; positions stay float32 as upstream."""
        if latent is None:
            latent = torch.zeros(self.shape.torch_shape(), device=device, dtype=dtype)
        elif tuple(latent.shape) != tuple(self.shape):
            raise ValueError(f"latent shape {tuple(latent.shape)}, expected {tuple(self.shape)}")
        mask = torch.ones((self.shape.batch, 1, self.shape.frames, 1), device=latent.device, dtype=torch.float32)
        return _initial_state(latent, mask, self.positions(latent.device), patchify_audio)

    def strip_conditioning(self, state: LatentState) -> LatentState:
        return _strip(state, self.tokens)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T', C*M) with T' >= T -> (B, C, T, M)."""
        return unpatchify_audio(tokens[:, : self.tokens], self.shape)


def _strip(state: LatentState, tokens: int) -> LatentState:
    return replace(
        state,
        latent=state.latent[:, :tokens],
        clean_latent=state.clean_latent[:, :tokens],
        denoise_mask=torch.ones_like(state.denoise_mask[:, :tokens]),
        positions=state.positions[:, :, :tokens],
        attention_mask=None,
    )
