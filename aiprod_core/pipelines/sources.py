"""Existing media as pipeline inputs: a source clip (frames + optional audio) and an audio track, and the stages
that encode them to latents with the VAEs (the edit and audio-driven pipelines start from these latents).

Audio is (C, S) float in [-1, 1] at its own sample rate, mono or stereo; the audio VAE takes stereo at 16 kHz
(its mel front end resamples), so mono is duplicated to both channels for encoding only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..audio_vae import encode_waveform
from ..sampling.state import AUDIO_LATENT_CHANNELS, AUDIO_MEL_BINS
from ..video_vae import TilingConfig, tiled_encode
from .latents import AVLatents, audio_latent_frames
from .models import ModelHost
from .preprocess import frames_to_video

__all__ = ["AudioClip", "SourceClip", "encode_audio", "encode_frames", "encode_source", "samples_at"]

logger = logging.getLogger(__name__)


def samples_at(seconds: float, sample_rate: int) -> int:
    """The sample index of a time (round(seconds x rate)), the one rule every cut of a waveform uses."""
    return round(seconds * sample_rate)


@dataclass(frozen=True)
class AudioClip:
    """An audio track: waveform (C, S) float in [-1, 1] (C = 1 or 2) at ``sample_rate`` Hz."""

    waveform: torch.Tensor
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    def fitted(self, duration: float) -> AudioClip:
        """Exactly round(duration x rate) samples: the tail trimmed, or padded with silence."""
        samples = samples_at(duration, self.sample_rate)
        waveform = torch.nn.functional.pad(self.waveform[:, :samples], (0, max(0, samples - self.waveform.shape[-1])))
        return AudioClip(waveform, self.sample_rate)

    def cut(self, start: float, duration: float) -> AudioClip:
        """Samples [round(start x rate), + round(duration x rate)) of the waveform, unchanged (a view)."""
        first = samples_at(start, self.sample_rate)
        return AudioClip(self.waveform[:, first : first + samples_at(duration, self.sample_rate)], self.sample_rate)


@dataclass(frozen=True)
class SourceClip:
    """A clip to edit: frames (F, H, W, 3) float in [0, 1] at ``fps``, and its audio track if it has one."""

    frames: torch.Tensor
    fps: float
    audio: AudioClip | None = None

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@torch.no_grad()
def encode_frames(encoder: nn.Module, frames: torch.Tensor, host: ModelHost,
                  tiling: TilingConfig | None = None) -> torch.Tensor:  # fmt: skip
    """Frames (F, H, W, 3) in [0, 1] -> video latent (1, 128, 1 + (F - 1) / 8, H / 32, W / 32), tiled when asked."""
    with host.use(encoder) as vae:
        video = frames_to_video(frames.float(), _dtype_of(vae)).to(host.device)  # (1, 3, F, H, W) in [-1, 1]
        return vae(video) if tiling is None else tiled_encode(vae, video, tiling)


@torch.no_grad()
def encode_audio(encoder: nn.Module, audio: AudioClip, host: ModelHost, latent_frames: int) -> torch.Tensor:
    """An audio track -> its first ``latent_frames`` audio latent frames (1, 8, latent_frames, 16).

    The track must be long enough for them (`clip_rules.audio_problems` says so before any model work).
    """
    waveform = audio.waveform.float()
    channels = encoder.config.in_channels
    if waveform.shape[0] == 1 and channels == 2:
        waveform = waveform.expand(2, -1)  # the VAE codes stereo: mono on both channels
    with host.use(encoder) as vae:
        latent = encode_waveform(waveform.unsqueeze(0).to(host.device), audio.sample_rate, vae)  # (1, 8, T', 16)
    if latent.shape[2] < latent_frames:
        raise ValueError(f"audio: {audio.duration:.3f} s give {latent.shape[2]} audio latent frames, expected at "
                         f"least {latent_frames}")
    return latent[:, :, :latent_frames]


def encode_source(video_encoder: nn.Module, audio_encoder: nn.Module | None, source: SourceClip, host: ModelHost,
                  tiling: TilingConfig | None = None) -> AVLatents:  # fmt: skip
    """A source clip -> its latents: the frames through the video VAE, the audio (if any, fitted to the clip's
    duration) through the audio VAE, cut to the clip's audio latent length; no audio gives zero audio latents
    (generated from scratch)."""
    video = encode_frames(video_encoder, source.frames, host, tiling)
    frames = audio_latent_frames(source.num_frames, source.fps)
    if source.audio is None or audio_encoder is None:
        audio = torch.zeros(1, AUDIO_LATENT_CHANNELS, frames, AUDIO_MEL_BINS, dtype=video.dtype, device=video.device)
    else:
        audio = encode_audio(audio_encoder, source.audio.fitted(source.duration), host, frames).to(video.dtype)
    return AVLatents(video=video, audio=audio, frames=source.num_frames, fps=float(source.fps))
