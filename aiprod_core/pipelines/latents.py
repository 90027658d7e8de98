"""Pipeline-level values passed between stages: prompt contexts and the audio+video latent pair."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..sampling import AudioLatentShape, AudioLayout, Prompt, VideoLatentShape, VideoLayout
from ..sampling.state import AUDIO_HOP_LENGTH, AUDIO_LATENT_DOWNSAMPLE, AUDIO_SAMPLE_RATE, VIDEO_SCALE_FACTORS

__all__ = ["AVLatents", "PromptContexts", "audio_latent_frames", "empty_latents"]


@dataclass(frozen=True)
class PromptContexts:
    """Text conditioning after the Gemma backbone and the connectors, for the positive and negative prompts.

    Each `Prompt` holds video (B, S, Dv) and audio (B, S, Da) contexts and optional (B, S) masks; a mask of all
    ones is the same as none (the reference pipelines pass no mask to the transformer).
    """

    positive: Prompt
    negative: Prompt | None = None

    @classmethod
    def from_tensors(
        cls,
        video: torch.Tensor,
        audio: torch.Tensor,
        negative_video: torch.Tensor | None = None,
        negative_audio: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        negative_mask: torch.Tensor | None = None,
    ) -> PromptContexts:
        """Contexts injected as tensors (e.g. a text-encoder node's output); the negative pair is optional."""
        positive = Prompt(video, audio, mask, mask)
        if (negative_video is None) != (negative_audio is None):
            raise ValueError("negative contexts: give both video and audio, or neither")
        negative = None
        if negative_video is not None:
            negative = Prompt(negative_video, negative_audio, negative_mask, negative_mask)
        return cls(positive, negative)

    def to(self, device: torch.device, dtype: torch.dtype) -> PromptContexts:
        """Contexts on ``device`` in the compute ``dtype`` (masks keep theirs)."""

        def move(prompt: Prompt | None) -> Prompt | None:
            if prompt is None:
                return None
            contexts = (None if t is None else t.to(device, dtype) for t in (prompt.video, prompt.audio))
            masks = (None if m is None else m.to(device) for m in (prompt.video_mask, prompt.audio_mask))
            return Prompt(*contexts, *masks)

        return PromptContexts(move(self.positive), move(self.negative))  # type: ignore[arg-type]


@dataclass(frozen=True)
class AVLatents:
    """A clip's latents: video (B, 128, F', H', W') and audio (B, 8, T, 16), plus the pixel frame count and fps.

    F' = 1 + (frames - 1) / 8, H' = height / 32, W' = width / 32; T latent audio frames at 25 per second.
    """

    video: torch.Tensor
    audio: torch.Tensor
    frames: int
    fps: float

    @property
    def height(self) -> int:
        return self.video.shape[3] * VIDEO_SCALE_FACTORS.height

    @property
    def width(self) -> int:
        return self.video.shape[4] * VIDEO_SCALE_FACTORS.width

    @property
    def duration(self) -> float:
        """Seconds of video: frames / fps."""
        return self.frames / self.fps

    def video_layout(self) -> VideoLayout:
        return VideoLayout(VideoLatentShape.of(self.video), self.fps)

    def audio_layout(self) -> AudioLayout:
        return AudioLayout(AudioLatentShape.of(self.audio))

    def with_video(self, video: torch.Tensor) -> AVLatents:
        return replace(self, video=video)

    def with_audio(self, audio: torch.Tensor) -> AVLatents:
        return replace(self, audio=audio)


def audio_latent_frames(frames: int, fps: float, cover_duration: bool = False) -> int:
    """Audio latent frames for a ``frames``-frame video at ``fps``.

    Default: round(duration x 25), as the reference pipelines (the decoded audio is then up to ~3 mel frames
    short of the duration and the decode stage pads it). ``cover_duration``: the fewest latent frames whose
    decoded mel frames (4 T - 3) reach the duration.
    """
    duration = frames / fps
    if not cover_duration:
        return AudioLatentShape.for_video(1, frames, fps).frames
    mel_frames = math.ceil(duration * AUDIO_SAMPLE_RATE / AUDIO_HOP_LENGTH - 1e-9)
    return max(1, math.ceil((mel_frames + AUDIO_LATENT_DOWNSAMPLE - 1) / AUDIO_LATENT_DOWNSAMPLE))


def empty_latents(
    width: int,
    height: int,
    frames: int,
    fps: float,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    cover_duration: bool = False,
) -> AVLatents:
    """Zero latents for a ``frames`` x ``height`` x ``width`` clip at ``fps`` and audio of the same duration."""
    video_shape = VideoLatentShape.from_pixels(batch, frames, height, width)
    reference = AudioLatentShape.for_video(batch, frames, fps)
    audio_shape = reference._replace(frames=audio_latent_frames(frames, fps, cover_duration))
    return AVLatents(
        video=torch.zeros(video_shape.torch_shape(), dtype=dtype, device=device),
        audio=torch.zeros(audio_shape.torch_shape(), dtype=dtype, device=device),
        frames=frames,
        fps=float(fps),
    )
