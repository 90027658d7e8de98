"""Latent shapes, the per-stream denoising state, Gaussian noising and the clean-token blend.

Every stream is denoised as tokens: latent (B, T, C), a per-token denoise strength (B, T, 1) (1 = generate,
0 = keep the clean value, in between = partially re-noised conditioning), positions (B, n_dims, T, 2) and an
optional self-attention strength matrix (B, T, T).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

__all__ = [
    "VIDEO_LATENT_CHANNELS",
    "VIDEO_SCALE_FACTORS",
    "AudioLatentShape",
    "GaussianNoiser",
    "LatentState",
    "ScaleFactors",
    "VideoLatentShape",
    "keep_clean_tokens",
]

VIDEO_LATENT_CHANNELS = 128
AUDIO_LATENT_CHANNELS = 8
AUDIO_MEL_BINS = 16
AUDIO_SAMPLE_RATE = 16000  # the audio VAE's mel front end
AUDIO_HOP_LENGTH = 160
AUDIO_LATENT_DOWNSAMPLE = 4  # mel frames per audio latent frame: 16000 / 160 / 4 = 25 latents per second


class ScaleFactors(NamedTuple):
    """Video VAE downscaling between pixels and latents: (time, height, width)."""

    time: int
    height: int
    width: int


VIDEO_SCALE_FACTORS = ScaleFactors(time=8, height=32, width=32)


class VideoLatentShape(NamedTuple):
    """Video latent (B, C, F, H, W)."""

    batch: int
    channels: int
    frames: int
    height: int
    width: int

    @classmethod
    def of(cls, latent: torch.Tensor) -> VideoLatentShape:
        if latent.ndim != 5:
            raise ValueError(f"video latent shape {tuple(latent.shape)}, expected (B, C, F, H, W)")
        return cls(*latent.shape)

    @classmethod
    def from_pixels(
        cls,
        batch: int,
        frames: int,
        height: int,
        width: int,
        channels: int = VIDEO_LATENT_CHANNELS,
        scale: ScaleFactors = VIDEO_SCALE_FACTORS,
    ) -> VideoLatentShape:
        """Latent of a (frames, height, width) pixel video: the first frame alone, then one per ``scale.time``."""
        return cls(batch, channels, (frames - 1) // scale.time + 1, height // scale.height, width // scale.width)

    @property
    def tokens(self) -> int:
        return self.frames * self.height * self.width

    def torch_shape(self) -> torch.Size:
        return torch.Size(self)


class AudioLatentShape(NamedTuple):
    """Audio latent (B, C, T, M): channels x time frames x mel bins."""

    batch: int
    channels: int
    frames: int
    mel_bins: int

    @classmethod
    def of(cls, latent: torch.Tensor) -> AudioLatentShape:
        if latent.ndim != 4:
            raise ValueError(f"audio latent shape {tuple(latent.shape)}, expected (B, C, T, M)")
        return cls(*latent.shape)

    @classmethod
    def from_duration(
        cls, batch: int, seconds: float, channels: int = AUDIO_LATENT_CHANNELS, mel_bins: int = AUDIO_MEL_BINS
    ) -> AudioLatentShape:
        """Latent of ``seconds`` of audio: round(seconds x 25) frames."""
        per_second = float(AUDIO_SAMPLE_RATE) / float(AUDIO_HOP_LENGTH) / float(AUDIO_LATENT_DOWNSAMPLE)
        return cls(batch, channels, round(seconds * per_second), mel_bins)

    @classmethod
    def for_video(cls, batch: int, frames: int, fps: float) -> AudioLatentShape:
        """Audio latent as long as a ``frames``-frame video at ``fps``."""
        return cls.from_duration(batch, float(frames) / float(fps))

    @property
    def tokens(self) -> int:
        return self.frames

    def torch_shape(self) -> torch.Size:
        return torch.Size(self)


@dataclass(frozen=True)
class LatentState:
    """One stream being denoised, as tokens.

    latent: (B, T, C) current (noisy) tokens; the generated tokens first, appended conditioning tokens after.
    denoise_mask: (B, T, 1) float32 per-token denoise strength (1 = generate, 0 = keep ``clean_latent``).
    positions: (B, n_dims, T, 2) [start, end) coordinates (video: seconds, y px, x px; audio: seconds).
    clean_latent: (B, T, C) values the conditioning holds (the blend target where the mask is < 1).
    attention_mask: optional (B, T, T) self-attention strengths in [0, 1] (None = full attention).
    frozen: the stream is held fixed (every denoise strength 0): samplers leave its tokens untouched and the
        transformer sees it at sigma 0 (its prompt AdaLN and the other stream's cross-attention modulation too).
    keyframes_mask: optional (B, T, 1) marker (1) of the video tokens that get LTX-2.5's learned keyframe
        embedding: the first latent frame of every state a transformer with the embedding samples
        (`conditioning.mark_first_frame`) and DFR's generated keyframe slots (`conditioning.GeneratedKeyframeSlots`).
    """

    latent: torch.Tensor
    denoise_mask: torch.Tensor
    positions: torch.Tensor
    clean_latent: torch.Tensor
    attention_mask: torch.Tensor | None = None
    frozen: bool = False
    keyframes_mask: torch.Tensor | None = None

    @property
    def tokens(self) -> int:
        return self.latent.shape[1]

    def with_latent(self, latent: torch.Tensor) -> LatentState:
        return replace(self, latent=latent)

    def timesteps(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """(B, T) per-token timestep: sigma x denoise strength (0 on clean conditioning tokens)."""
        return (self.denoise_mask * sigma).squeeze(-1)


def keep_clean_tokens(x0: torch.Tensor, state: LatentState) -> torch.Tensor:
    """Blend a prediction (B, T, C) with the clean tokens by the denoise mask: x0 m + clean (1 - m)."""
    mask = state.denoise_mask
    return (x0 * mask + state.clean_latent.float() * (1 - mask)).to(x0.dtype)


class GaussianNoiser:
    """Noises states from a caller's generator: latent <- noise (m s) + latent (1 - m s), m the denoise mask.

    Draws ``randn`` of the patchified latent's shape, dtype and device, one draw per call; call it for video
    first and audio second to reproduce the reference pipelines' noise.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, state: LatentState, noise_scale: float = 1.0) -> LatentState:
        latent = state.latent
        noise = torch.randn(latent.shape, device=latent.device, dtype=latent.dtype, generator=self.generator)
        strength = state.denoise_mask * noise_scale  # (B, T, 1)
        return replace(state, latent=(noise * strength + latent * (1 - strength)).to(latent.dtype))
