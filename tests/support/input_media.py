"""Input media for the edit and audio templates: a short clip (H.264 + AAC MP4) and an audio track (WAV), written
with the pack's own writers into a ComfyUI input folder under the names the templates' 'Load Video' / 'Load
Audio' nodes use."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .demo_module import load_demo_models_module

__all__ = ["CLIP_FPS", "CLIP_FRAMES", "CLIP_SIZE", "SOURCE_CLIP", "SOURCE_TRACK", "TRACK_SECONDS",
           "write_input_media"]

SOURCE_CLIP = "aiprod-example-clip.mp4"  # the retake / extension templates' 'Load Video' file
SOURCE_TRACK = "aiprod-example-track.wav"  # the audio-to-video template's 'Load Audio' file
CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 17, 24.0, (64, 64)  # (frames 8k+1, fps, (height, width) multiples of 32)
CLIP_RATE = 48000
TRACK_SECONDS, TRACK_RATE = 2.0, 44100


def _tone(seconds: float, rate: int, hz: float, channels: int) -> torch.Tensor:
    """A (C, S) sine at ``hz`` with a slow swell, amplitude below 0.5."""
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    wave = 0.4 * torch.sin(2 * math.pi * hz * t) * (0.6 + 0.4 * torch.sin(2 * math.pi * 1.5 * t))
    return wave.float().expand(channels, -1).clone()


def _frames() -> torch.Tensor:
    """(F, H, W, 3) in [0, 1]: a colour gradient that drifts from frame to frame."""
    height, width = CLIP_SIZE
    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width)[None, :].expand(height, width)
    frames = [torch.stack(((x + i / CLIP_FRAMES) % 1, y, 0.5 + 0.5 * torch.sin(torch.tensor(i / 3.0)) * x), -1)
              for i in range(CLIP_FRAMES)]
    return torch.stack(frames)


def write_input_media(input_dir: Path) -> dict[str, Path]:
    """Write the clip (17 frames of 64 x 64 at 24 fps, stereo audio a little longer than the clip: AAC pads) and
    the track (2 s mono at 44.1 kHz) into ``input_dir``; returns {name: path}."""
    load_demo_models_module()  # registers the pack as package `aiprod`
    from aiprod.aiprod_core.media import write_audio_file, write_video_file

    input_dir.mkdir(parents=True, exist_ok=True)
    clip, track = input_dir / SOURCE_CLIP, input_dir / SOURCE_TRACK
    if not clip.exists():
        audio = _tone(CLIP_FRAMES / CLIP_FPS + 0.1, CLIP_RATE, 330.0, 2)
        write_video_file(clip, _frames(), CLIP_FPS, audio, CLIP_RATE)
    if not track.exists():
        write_audio_file(track, _tone(TRACK_SECONDS, TRACK_RATE, 220.0, 1), TRACK_RATE, "wav")
    return {SOURCE_CLIP: clip, SOURCE_TRACK: track}
