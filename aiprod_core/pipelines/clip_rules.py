"""The rules of existing media given to a pipeline (a source clip, an audio track, a time window, an extension),
in `validation`'s vocabulary: each ``*_problems`` function returns text naming the field, its value and the rule
(an empty list when all is well); the pipelines raise them together with the request's problems, before any
model work.

- Source clips: frames (F, H, W, 3) with F = 8k + 1 and H, W multiples of 32 (the VAE's grid; a clip is edited
  at its own size), at a frame rate within `validation.RULES["fps"]`, within the token budget.
- Time windows (retake): 0 <= start_time < end_time <= the clip's duration, each on a latent-frame boundary:
  0, 1 / fps, 9 / fps, 17 / fps, ..., F / fps (the causal VAE codes frame 0 alone, then 8 frames per latent), to
  within `BOUNDARY_TOLERANCE` seconds (the value is then snapped onto it).
- Audio tracks: (C, S) with C = 1 or 2, finite, at a sample rate within `validation.RULES["sample_rate"]`, and
  long enough for what it must cover (the clip, or the clip after ``start_time``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .validation import LATENT_FRAMES, LATENT_PIXELS, budget_problem, value_problem

__all__ = [
    "BOUNDARY_TOLERANCE",
    "Window",
    "audio_problems",
    "audio_window_problems",
    "extension_problems",
    "latent_boundaries",
    "source_problems",
    "window_problems",
]

BOUNDARY_TOLERANCE = 1e-3  # seconds: a typed 0.7083 for 17 / 24 fps is on the boundary


def latent_boundaries(frames: int, fps: float) -> list[float]:
    """Seconds at which the latent frames of a ``frames``-frame clip start, and its end: 0, 1, 9, 17 ... F frames
    / fps."""
    return [0.0] + [(LATENT_FRAMES * j + 1) / fps for j in range((frames - 1) // LATENT_FRAMES + 1)]


def _shape(frames: object) -> tuple[int, ...] | None:
    return tuple(frames.shape) if isinstance(frames, torch.Tensor) else None


def source_problems(frames: torch.Tensor, fps: object, name: str = "source") -> list[str]:
    """A source clip's frames (F, H, W, 3) and frame rate, checked as a clip edited at its own size."""
    shape = _shape(frames)
    if shape is None or len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
        return [f"{name}: frames of shape {shape}, expected (F, H, W, 3) IMAGE frames"]
    problems = [p for p in (value_problem("fps", fps),) if p]
    count, height, width = shape[:3]
    if (count - 1) % LATENT_FRAMES:
        low = (count - 1) // LATENT_FRAMES * LATENT_FRAMES + 1
        problems.append(f"{name}: {count} frames, expected 8k+1 (the video VAE codes the first frame alone, then "
                        f"{LATENT_FRAMES} per latent); trim it to {low} frames")
    for side, size in (("height", height), ("width", width)):
        if size % LATENT_PIXELS:
            problems.append(f"{name}: {side} {size} pixels, expected a multiple of {LATENT_PIXELS} (the latent "
                            f"grid); resize or crop it to {size // LATENT_PIXELS * LATENT_PIXELS or LATENT_PIXELS}")
    if not problems:
        problems += [p for p in (budget_problem(width, height, count),) if p]
    return problems


@dataclass(frozen=True)
class Window:
    """A checked time window [start_time, end_time) in seconds, on latent-frame boundaries."""

    start_time: float
    end_time: float


def _snapped(value: float, boundaries: Sequence[float]) -> float | None:
    nearest = min(boundaries, key=lambda b: abs(b - value))
    return nearest if abs(nearest - value) <= BOUNDARY_TOLERANCE else None


def window_problems(start_time: object, end_time: object, frames: int, fps: float) -> tuple[Window | None, list[str]]:
    """(the window snapped onto the latent-frame boundaries, problems) of ``[start_time, end_time)`` in a clip of
    ``frames`` at ``fps``."""
    problems = [p for p in (value_problem("start_time", start_time), value_problem("end_time", end_time)) if p]
    if problems:
        return None, problems
    assert isinstance(start_time, int | float) and isinstance(end_time, int | float)
    duration = frames / fps
    if not start_time < end_time:
        return None, [f"start_time={start_time!r}, end_time={end_time!r}: the window must end after it starts"]
    if end_time > duration + BOUNDARY_TOLERANCE:
        return None, [f"end_time={end_time!r}: after the clip's end ({duration:.4f} s = {frames} frames at "
                      f"{fps:g} fps)"]
    boundaries = latent_boundaries(frames, fps)
    snapped = {}
    for name, value in (("start_time", start_time), ("end_time", end_time)):
        snapped[name] = _snapped(float(value), boundaries)
        if snapped[name] is None:
            below = max((b for b in boundaries if b < value), default=0.0)
            above = min((b for b in boundaries if b > value), default=duration)
            problems.append(f"{name}={value!r}: not on a latent-frame boundary (frame 0, then every 8 frames from "
                            f"frame 1, at {fps:g} fps); nearest: {below:.4f} (frame {round(below * fps)}) or "
                            f"{above:.4f} (frame {round(above * fps)})")
    if problems:
        return None, problems
    if snapped["start_time"] == snapped["end_time"]:
        return None, [f"start_time={start_time!r}, end_time={end_time!r}: the window holds no latent frame"]
    return Window(snapped["start_time"], snapped["end_time"]), []


def audio_problems(waveform: object, sample_rate: object, covers: float, name: str = "audio") -> list[str]:
    """An audio track (C, S), C = 1 or 2, finite, at an allowed rate, lasting at least ``covers`` seconds."""
    shape = _shape(waveform)
    if shape is None or len(shape) != 2 or shape[0] not in (1, 2) or shape[1] < 1:
        return [f"{name}: waveform of shape {shape}, expected (C, S) with C = 1 (mono) or 2 (stereo) channels"]
    problems = [p for p in (value_problem("sample_rate", sample_rate),) if p]
    if problems:
        return [f"{name}: {p}" for p in problems]
    assert isinstance(waveform, torch.Tensor) and isinstance(sample_rate, int)
    if not torch.isfinite(waveform).all():
        problems.append(f"{name}: the waveform holds NaN or infinite samples")
    duration = shape[1] / sample_rate
    if duration + 0.5 / sample_rate < covers:
        problems.append(f"{name}: {duration:.4f} s ({shape[1]} samples at {sample_rate} Hz) is shorter than the "
                        f"{covers:.4f} s it must cover; give a longer track or fewer frames")
    return problems


def audio_window_problems(waveform: object, sample_rate: object, start_time: object, max_duration: object,
                          clip_duration: float) -> list[str]:  # fmt: skip
    """Audio driving a clip (audio-to-video): the track from ``start_time`` (at most ``max_duration`` seconds of
    it; 0 = the clip's duration) must cover the clip's ``clip_duration``."""
    problems = [p for p in (value_problem("start_time", start_time), value_problem("max_duration", max_duration))
                if p]  # fmt: skip
    problems += audio_problems(waveform, sample_rate, 0.0)
    if problems:
        return problems
    assert isinstance(waveform, torch.Tensor) and isinstance(sample_rate, int)
    assert isinstance(start_time, int | float) and isinstance(max_duration, int | float)
    if max_duration and max_duration < clip_duration - 1e-9:
        problems.append(f"max_duration={max_duration!r}: shorter than the clip ({clip_duration:.4f} s); the audio "
                        "must cover the whole video (0 = exactly the clip's duration)")
    total = waveform.shape[-1] / sample_rate
    left = total - start_time
    if left <= 0:
        problems.append(f"start_time={start_time!r}: at or after the audio's end ({total:.4f} s)")
    elif left + 0.5 / sample_rate < clip_duration:
        problems.append(f"audio: {left:.4f} s after start_time={start_time!r} (of {total:.4f} s at {sample_rate} Hz) "
                        f"is shorter than the clip's {clip_duration:.4f} s; start earlier, give a longer track or "
                        "fewer frames")
    return problems


def extension_problems(source_frames: int, extend_frames: object, context_frames: object) -> list[str]:
    """A continuation of ``extend_frames`` (8k, k >= 1) after a ``source_frames``-frame clip, seeing its last
    ``context_frames`` (8k + 1, at most the whole source; 0 = the whole source)."""
    problems = [p for p in (value_problem("extend_frames", extend_frames), value_problem("context_frames",
                                                                                         context_frames)) if p]
    if problems:
        return problems
    assert isinstance(context_frames, int) and isinstance(extend_frames, int)
    context_frames = context_frames or source_frames
    if context_frames > source_frames:
        problems.append(f"context_frames={context_frames!r}: more than the source's {source_frames} frames")
    total = context_frames + extend_frames
    if not math.isfinite(total) or (total - 1) % LATENT_FRAMES:
        problems.append(f"context_frames + extend_frames = {total}: expected 8k+1")
    return problems
