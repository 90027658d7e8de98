"""Existing media at the node edge: a source clip from a VIDEO (frames, audio and frame rate together) or from
IMAGE frames + an optional AUDIO + fps, and ComfyUI AUDIO dicts <-> the core's `AudioClip`."""

from __future__ import annotations

from typing import Any

import torch

from ..aiprod_core.pipelines import AudioClip, SourceClip

__all__ = ["audio_clip", "audio_output", "source_clip", "source_inputs"]


def audio_clip(audio: dict | None, name: str = "audio") -> AudioClip | None:
    """A ComfyUI AUDIO ``{"waveform": (B, C, S), "sample_rate": int}`` -> its first batch entry as an `AudioClip`
    (None passes through); a malformed dict is a ``ValueError`` naming ``name``."""
    if audio is None:
        return None
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(f"{name}: expected an AUDIO value with 'waveform' and 'sample_rate'")
    waveform = audio["waveform"]
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or waveform.shape[0] < 1:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"{name}: waveform {shape}, expected (B, C, S)")
    return AudioClip(waveform[0].float().cpu(), int(audio["sample_rate"]))


def audio_output(clip: AudioClip | None) -> dict | None:
    """An `AudioClip` -> ComfyUI AUDIO (batch of one), the waveform itself (not a copy)."""
    return None if clip is None else {"waveform": clip.waveform.unsqueeze(0), "sample_rate": int(clip.sample_rate)}


def source_clip(video: Any = None, images: torch.Tensor | None = None, audio: dict | None = None,
                fps: float | None = None) -> SourceClip:  # fmt: skip
    """The clip to edit: a VIDEO input (its own frames, audio and frame rate) or IMAGE frames with ``fps`` and an
    optional AUDIO. An AUDIO given next to a VIDEO replaces the video's own track."""
    if video is None and images is None:
        raise ValueError("source: connect 'video' (VIDEO) or 'images' (IMAGE frames, with fps)")
    if video is not None:
        components = video.get_components()
        frames, rate = components.images, float(components.frame_rate)
        track = audio if audio is not None else components.audio
    else:
        frames, rate, track = images, fps, audio
    if rate is None:
        raise ValueError("fps=None: IMAGE frames need their frame rate")
    return SourceClip(frames[..., :3].float().cpu(), float(rate), audio_clip(track, "source audio"))


def source_inputs(values: dict[str, Any]) -> SourceClip | None:
    """The source clip of a node's values, or None while it is not known (linked and not evaluated yet)."""
    if values.get("video") is None and values.get("images") is None:
        return None
    return source_clip(values.get("video"), values.get("images"), values.get("audio"), values.get("fps"))
