"""Checks of a saved audio+video latent file's tensors (AIPROD Load Audio+Video Latent) against what the sampler
and the decoders accept, before anything is allocated from them."""

from __future__ import annotations

from typing import Any

from ..sampling.state import AUDIO_LATENT_CHANNELS, AUDIO_MEL_BINS, VIDEO_LATENT_CHANNELS
from .latents import audio_latent_frames
from .validation import LATENT_FRAMES, LATENT_PIXELS, size_problems, value_problem

__all__ = ["saved_latents_problems"]


def _scalar(tensors: Any, key: str, integer: bool) -> tuple[float | None, str | None]:
    value = tensors[key]
    if value.numel() != 1 or (integer and value.is_floating_point()):
        kind = "integer" if integer else "number"
        return None, f"{key}: a {tuple(value.shape)} {value.dtype} tensor, expected one {kind}"
    return (int(value.item()) if integer else float(value.item())), None


def saved_latents_problems(tensors: Any, name: str) -> list[str]:
    """A saved latent pair ``{"video", "audio", "frames", "fps"}``, checked against what the sampler and the
    decoders accept before anything is allocated from it: frames / fps by their rules, video (B, 128, F', H', W')
    with F' = 1 + (frames - 1) / 8 and a size within the rules and the token budget, audio (B, 8, T, 16) lasting
    frames / fps seconds. ``name`` (the file) prefixes each message."""
    missing = [key for key in ("video", "audio", "frames", "fps") if key not in tensors]
    if missing:
        return [f"{name}: no {', '.join(missing)} tensor; expected the video, audio, frames and fps of a saved "
                "audio+video latent"]
    (frames, frames_bad), (fps, fps_bad) = _scalar(tensors, "frames", True), _scalar(tensors, "fps", False)
    problems = [f"{name}: {p}" for p in (frames_bad, fps_bad, value_problem("frames", frames) if frames_bad is None
                                         else None, value_problem("fps", fps) if fps_bad is None else None) if p]
    if problems:
        return problems
    video, audio = tensors["video"], tensors["audio"]
    latent_frames = (int(frames) - 1) // LATENT_FRAMES + 1
    if video.ndim != 5 or video.shape[1] != VIDEO_LATENT_CHANNELS or video.shape[2] != latent_frames \
            or not video.is_floating_point():
        return [f"{name}: video latent {tuple(video.shape)} {video.dtype}, expected a float (B, "
                f"{VIDEO_LATENT_CHANNELS}, {latent_frames}, H / 32, W / 32) tensor for frames={frames}"]
    height, width = video.shape[3] * LATENT_PIXELS, video.shape[4] * LATENT_PIXELS
    problems = [f"{name}: {p}" for p in size_problems(width, height, frames, fps)]
    lengths = {audio_latent_frames(int(frames), fps), audio_latent_frames(int(frames), fps, cover_duration=True)}
    if audio.ndim != 4 or audio.shape[0] != video.shape[0] or audio.shape[1] != AUDIO_LATENT_CHANNELS \
            or audio.shape[2] not in lengths or audio.shape[3] != AUDIO_MEL_BINS or not audio.is_floating_point():
        problems.append(f"{name}: audio latent {tuple(audio.shape)} {audio.dtype}, expected a float ({video.shape[0]}, "
                        f"{AUDIO_LATENT_CHANNELS}, {' or '.join(map(str, sorted(lengths)))}, {AUDIO_MEL_BINS}) tensor "
                        f"for {frames} frames at {fps:g} fps")
    return problems
