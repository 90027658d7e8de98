"""MP4 / MOV writing: stream layout, exact audio duration, pixel fidelity, atomic writes and bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from aiprod.aiprod_core.media import audio_samples_for, frame_rate, write_video_file

FPS, SAMPLE_RATE = 24.0, 48000


def clip(frames: int = 17, height: int = 64, width: int = 96) -> torch.Tensor:
    """A smooth moving gradient (compresses well, so decoded pixels stay close)."""
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(0, 1, height)[None, :, None]
    x = torch.linspace(0, 1, width)[None, None, :]
    shape = (frames, height, width)
    channels = [((x + t) % 1).expand(shape), y.expand(shape), (0.5 + 0.3 * torch.sin(6 * x + t)).expand(shape)]
    return torch.stack(channels, dim=-1).contiguous()


def tone(seconds: float, channels: int = 2, rate: int = SAMPLE_RATE) -> torch.Tensor:
    n = torch.arange(int(seconds * rate)) / rate
    return 0.3 * torch.sin(2 * math.pi * 440 * n).repeat(channels, 1)


def probe(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        info = {"rate": video.average_rate, "width": video.width, "height": video.height, "frames": frames,
                "codec": video.codec_context.name}
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            info["audio_samples"] = sum(f.samples for f in container.decode(audio=0))
            info["audio_rate"] = audio.rate
            info["audio_codec"] = audio.codec_context.name
    return info


@pytest.mark.parametrize(("fps", "expected"), [
    (24.0, Fraction(24)), (23.976, Fraction(24000, 1001)), (25, Fraction(25)), (29.97, Fraction(30000, 1001)),
    (12.5, Fraction(25, 2)),
])
def test_frame_rate_is_exact(fps, expected):
    assert frame_rate(fps) == expected


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf")])
def test_bad_fps_is_rejected(fps):
    with pytest.raises(ValueError, match="fps="):
        frame_rate(fps)


def test_mp4_has_requested_frames_size_fps_and_audio_covering_the_video(tmp_path):
    frames = clip(17)
    # Audio shorter than the video: it must be padded to exactly 17 / 24 s.
    path = write_video_file(tmp_path / "out.mp4", frames, FPS, tone(0.5), SAMPLE_RATE)
    info = probe(path)
    assert (info["codec"], info["audio_codec"]) == ("h264", "aac")
    assert len(info["frames"]) == 17
    assert (info["width"], info["height"]) == (96, 64)
    assert info["rate"] == 24
    assert info["audio_rate"] == SAMPLE_RATE
    video_seconds = 17 / FPS
    audio_seconds = info["audio_samples"] / SAMPLE_RATE
    assert abs(audio_seconds - video_seconds) <= 1 / FPS  # AAC pads to whole 1024-sample frames
    assert audio_samples_for(17, FPS, SAMPLE_RATE) == 34000
    decoded = np.stack(info["frames"]).astype(np.float32) / 255
    assert np.abs(decoded - frames.numpy()).mean() < 0.02


def test_prores_mov_with_pcm_is_exact_in_length(tmp_path):
    frames = clip(9)
    path = write_video_file(tmp_path / "edit.mov", frames, 25.0, tone(2.0, channels=1, rate=24000), 24000,
                            fmt="mov-prores")
    info = probe(path)
    assert info["codec"] == "prores"
    assert info["audio_codec"] == "pcm_s16le"
    assert len(info["frames"]) == 9
    assert info["audio_samples"] == audio_samples_for(9, 25.0, 24000) == 8640  # PCM: exact, trimmed
    decoded = np.stack(info["frames"]).astype(np.float32) / 255
    assert np.abs(decoded - frames.numpy()).mean() < 0.01


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = write_video_file(tmp_path / "odd.mp4", clip(1, 33, 47), FPS)
    info = probe(path)
    assert (info["width"], info["height"]) == (48, 34)
    assert len(info["frames"]) == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"frames": torch.zeros(5, 8, 8)}, r"frames shape \(5, 8, 8\)"),
    ({"frames": torch.full((2, 8, 8, 3), float("nan"))}, "NaN"),
    ({"waveform": torch.zeros(3, 100)}, r"audio waveform shape \(3, 100\)"),
    ({"waveform": torch.zeros(2, 100), "sample_rate": None}, "sample_rate=None"),
    ({"fmt": "avi"}, "format='avi'"),
    ({"fps": 0.0}, "fps=0.0"),
])
def test_bad_input_raises_before_writing(tmp_path, kwargs, match):
    args = {"frames": clip(2), "fps": FPS, "waveform": None, "sample_rate": SAMPLE_RATE, "fmt": "mp4"} | kwargs
    with pytest.raises(ValueError, match=match):
        write_video_file(tmp_path / "x.mp4", **args)
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from aiprod.aiprod_core import media

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(media, "_encode_audio", fail)
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous file")
    with pytest.raises(OSError, match="No space left"):
        write_video_file(target, clip(3), FPS, tone(0.2), SAMPLE_RATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert target.read_bytes() == b"previous file"


def test_read_only_directory_fails_cleanly(tmp_path):
    missing = tmp_path / "no-such-dir" / "clip.mp4"
    with pytest.raises(OSError):
        write_video_file(missing, clip(2), FPS)
    assert not missing.parent.exists()
