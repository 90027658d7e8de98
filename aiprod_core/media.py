"""Write generated clips to disk: MP4 (H.264 + AAC) for sharing, MOV (ProRes 422 HQ + PCM) for editing, and audio
alone as WAV (16-bit PCM) or FLAC (16-bit, lossless).

Frames are ``(F, H, W, 3)`` floats in [0, 1] (ComfyUI's IMAGE layout); audio is ``(C, S)`` at its own sample
rate. The audio track is fitted to exactly the video's duration (``round(F * sample_rate / fps)`` samples,
zero-padded or trimmed), so the two streams end together. Files are written atomically: a hidden temporary
file beside the target is renamed over it only after the container is closed, and removed on any error.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

__all__ = [
    "AUDIO_FORMATS",
    "VIDEO_FORMATS",
    "AudioFormat",
    "VideoFormat",
    "audio_samples_for",
    "fit_audio",
    "frame_rate",
    "read_audio_file",
    "write_audio_file",
    "write_video_file",
]

logger = logging.getLogger(__name__)

AUDIO_CHUNK_SAMPLES = 1024  # AAC's frame size; PCM accepts any chunk
NTSC_RATES = (24, 30, 60, 120)  # 24000/1001 ... for fps given as 23.976 etc.
MIN_FPS, MAX_FPS = 1.0, 240.0  # as the generation's frame-rate rule (aiprod_core.pipelines.validation)


@dataclass(frozen=True)
class VideoFormat:
    """A container with its video and audio encoders."""

    container: str
    suffix: str
    video_codec: str
    pixel_format: str
    audio_codec: str
    audio_sample_format: str
    video_options: dict[str, str] = field(default_factory=dict)


VIDEO_FORMATS: dict[str, VideoFormat] = {
    "mp4": VideoFormat("mp4", ".mp4", "libx264", "yuv420p", "aac", "fltp", {"preset": "medium"}),
    "mov-prores": VideoFormat("mov", ".mov", "prores_ks", "yuv422p10le", "pcm_s16le", "s16", {"profile": "3"}),
}


def frame_rate(fps: float) -> Fraction:
    """Exact rational frame rate: 23.976 -> 24000/1001, 25.0 -> 25."""
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps={fps!r}: must be a finite number > 0")
    if not MIN_FPS <= fps <= MAX_FPS:  # the audio track is fitted to frames / fps seconds: bound what that asks for
        raise ValueError(f"fps={fps!r}: must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second")
    for nominal in NTSC_RATES:
        ntsc = Fraction(nominal * 1000, 1001)
        if abs(fps - float(ntsc)) < 1e-3:
            return ntsc
    return Fraction(fps).limit_denominator(1000)


def audio_samples_for(frames: int, fps: float, sample_rate: int) -> int:
    """Audio samples spanning exactly ``frames`` video frames."""
    return round(frames * sample_rate / frame_rate(fps))


def fit_audio(waveform: torch.Tensor, samples: int) -> torch.Tensor:
    """(C, S) -> (C, samples): trim the tail or pad it with silence."""
    if waveform.shape[-1] >= samples:
        return waveform[..., :samples]
    return torch.nn.functional.pad(waveform, (0, samples - waveform.shape[-1]))


def _check_inputs(frames: torch.Tensor, waveform: torch.Tensor | None, sample_rate: int | None, fmt: str) -> None:
    if fmt not in VIDEO_FORMATS:
        raise ValueError(f"format={fmt!r}: expected one of {', '.join(VIDEO_FORMATS)}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames shape {tuple(frames.shape)}: expected (F, H, W, 3) with F >= 1")
    if not torch.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinite values; the generation diverged (try other settings)")
    if waveform is None:
        return
    if waveform.ndim != 2 or not 1 <= waveform.shape[0] <= 2:
        raise ValueError(f"audio waveform shape {tuple(waveform.shape)}: expected (C, S) with C = 1 or 2")
    if sample_rate is None or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}: must be a positive integer when audio is given")
    if not torch.isfinite(waveform).all():
        raise ValueError("audio waveform contains NaN or infinite values")


def _to_uint8_even(frames: torch.Tensor) -> np.ndarray:
    """(F, H, W, 3) [0, 1] -> uint8, edge-padded to even H and W (4:2:0 / 4:2:2 chroma needs even sizes)."""
    pixels = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pad_h, pad_w = pixels.shape[1] % 2, pixels.shape[2] % 2
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return pixels


def _encode_video(container: av.container.OutputContainer, spec: VideoFormat, pixels: np.ndarray,
                  rate: Fraction, crf: int) -> None:
    stream = container.add_stream(spec.video_codec, rate=rate)
    stream.width, stream.height = pixels.shape[2], pixels.shape[1]
    stream.pix_fmt = spec.pixel_format
    stream.time_base = 1 / rate
    options = dict(spec.video_options)
    if spec.video_codec == "libx264":
        options["crf"] = str(crf)
    stream.options = options
    for index, image in enumerate(pixels):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _audio_stream(container: av.container.OutputContainer, spec: VideoFormat, channels: int, sample_rate: int):
    stream = container.add_stream(spec.audio_codec, rate=sample_rate)
    stream.layout = "stereo" if channels == 2 else "mono"
    stream.time_base = Fraction(1, sample_rate)
    return stream


def _encode_audio(container: av.container.OutputContainer, stream, spec: VideoFormat,
                  waveform: torch.Tensor) -> None:
    channels, total = waveform.shape
    layout = "stereo" if channels == 2 else "mono"
    samples = waveform.detach().float().clamp(-1, 1).cpu().numpy()  # planar (C, S)
    packed = spec.audio_sample_format == "s16"
    if packed:
        samples = (samples * 32767).round().astype(np.int16).T.reshape(1, -1)  # interleaved (1, S * C)
    step = AUDIO_CHUNK_SAMPLES
    for start in range(0, total, step):
        if packed:
            chunk = samples[:, start * channels:(start + step) * channels]
        else:
            chunk = np.ascontiguousarray(samples[:, start:start + step])
        frame = av.AudioFrame.from_ndarray(chunk, format=spec.audio_sample_format, layout=layout)
        frame.sample_rate = stream.rate
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _discard(temp: Path) -> None:
    """Remove a temporary file; never mask the error being handled (e.g. on a folder that turned read-only)."""
    try:
        temp.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not remove the temporary file %s: %s", temp, exc)


def write_video_file(path: str | os.PathLike[str], frames: torch.Tensor, fps: float,
                     waveform: torch.Tensor | None = None, sample_rate: int | None = None,
                     fmt: str = "mp4", crf: int = 19) -> Path:
    """Encode ``frames`` (F, H, W, 3) and optional ``waveform`` (C, S) into ``path`` atomically.

    The audio is fitted to exactly F / fps seconds. Raises ``ValueError`` for bad inputs before anything is
    written; any encoding or disk error removes the temporary file and leaves ``path`` untouched.
    """
    _check_inputs(frames, waveform, sample_rate, fmt)
    spec = VIDEO_FORMATS[fmt]
    rate = frame_rate(fps)
    target = Path(path)
    if "\x00" in str(target):  # C code (FFmpeg) would cut the name at the NUL and write another file
        raise ValueError(f"path={str(target)!r}: a file name cannot contain a NUL byte")
    if target.suffix.lower() != spec.suffix:
        raise ValueError(f"path={str(target)!r}: a {fmt} file must end in {spec.suffix}")
    pixels = _to_uint8_even(frames)
    temp = target.with_name(f".{target.stem}.partial{spec.suffix}")
    try:
        with av.open(str(temp), mode="w", format=spec.container) as container:
            audio_stream = None
            if waveform is not None:
                waveform = fit_audio(waveform, audio_samples_for(frames.shape[0], fps, sample_rate))
                audio_stream = _audio_stream(container, spec, waveform.shape[0], sample_rate)
            _encode_video(container, spec, pixels, rate, crf)
            if audio_stream is not None:
                _encode_audio(container, audio_stream, spec, waveform)
        os.replace(temp, target)
    except OSError as exc:  # disk full, read-only folder ...: say which file, and that nothing is left behind
        _discard(temp)
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror or exc}; nothing was saved (free disk "
                      "space or pick a writable output folder)") from exc
    except BaseException:
        _discard(temp)
        raise
    logger.info("wrote %s (%d frames at %s fps%s)", target, frames.shape[0], rate,
                f", audio {waveform.shape[-1]} samples at {sample_rate} Hz" if waveform is not None else "")
    return target


@dataclass(frozen=True)
class AudioFormat:
    """An audio-only container and its encoder (sample format, bits kept)."""

    container: str
    suffix: str
    codec: str
    sample_format: str


AUDIO_FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", ".wav", "pcm_s16le", "s16"),
    "flac": AudioFormat("flac", ".flac", "flac", "s16"),
}


def _check_audio(waveform: torch.Tensor, sample_rate: int, fmt: str, target: Path) -> AudioFormat:
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"format={fmt!r}: expected one of {', '.join(AUDIO_FORMATS)}")
    spec = AUDIO_FORMATS[fmt]
    if waveform.ndim != 2 or not 1 <= waveform.shape[0] <= 2 or waveform.shape[1] < 1:
        raise ValueError(f"audio waveform shape {tuple(waveform.shape)}: expected (C, S) with C = 1 or 2, S >= 1")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample_rate={sample_rate!r}: must be an integer in [1000, 384000] Hz")
    if not torch.isfinite(waveform).all():
        raise ValueError("audio waveform contains NaN or infinite values")
    if "\x00" in str(target):
        raise ValueError(f"path={str(target)!r}: a file name cannot contain a NUL byte")
    if target.suffix.lower() != spec.suffix:
        raise ValueError(f"path={str(target)!r}: a {fmt} file must end in {spec.suffix}")
    return spec


def write_audio_file(path: str | os.PathLike[str], waveform: torch.Tensor, sample_rate: int,
                     fmt: str = "wav") -> Path:
    """Encode ``waveform`` (C, S) in [-1, 1] (clipped) at ``sample_rate`` into ``path`` (WAV or FLAC), atomically:
    bad inputs raise ``ValueError`` before anything is written; any encoding or disk error removes the temporary
    file and leaves ``path`` untouched."""
    target = Path(path)
    spec = _check_audio(waveform, sample_rate, fmt, target)
    channels = waveform.shape[0]
    layout = "stereo" if channels == 2 else "mono"
    samples = (waveform.detach().float().clamp(-1, 1).cpu().numpy() * 32767).round().astype(np.int16)
    interleaved = np.ascontiguousarray(samples.T.reshape(1, -1))  # packed s16: (1, S * C)
    temp = target.with_name(f".{target.stem}.partial{spec.suffix}")
    try:
        with av.open(str(temp), mode="w", format=spec.container) as container:
            stream = container.add_stream(spec.codec, rate=sample_rate)
            stream.layout = layout
            for start in range(0, samples.shape[1], AUDIO_CHUNK_SAMPLES):
                chunk = interleaved[:, start * channels : (start + AUDIO_CHUNK_SAMPLES) * channels]
                frame = av.AudioFrame.from_ndarray(chunk, format=spec.sample_format, layout=layout)
                frame.sample_rate, frame.pts = sample_rate, start
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(temp, target)
    except OSError as exc:
        _discard(temp)
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror or exc}; nothing was saved (free disk "
                      "space or pick a writable output folder)") from exc
    except BaseException:
        _discard(temp)
        raise
    logger.info("wrote %s (%d samples at %d Hz, %d channel(s))", target, samples.shape[1], sample_rate, channels)
    return target


def read_audio_file(path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """(waveform (C, S) float32 in [-1, 1], sample rate) of an audio file's first audio stream, decoded whole."""
    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise ValueError(f"{path}: no audio stream")
        chunks = [frame.to_ndarray().astype(np.float32, copy=False).reshape(stream.channels, -1)
                  if frame.format.is_planar else frame.to_ndarray().reshape(-1, stream.channels).T
                  for frame in container.decode(stream)]  # fmt: skip
        rate = stream.rate
    data = np.concatenate(chunks, axis=-1)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), int(rate)
