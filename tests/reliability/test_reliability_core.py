"""Reliability of the core and the loaders, called directly (sharper than through the host): atomic video writes
under disk errors, the out-of-memory advice of sampling and the video decode, unreadable files, over-long prompts."""

from __future__ import annotations

import builtins
import errno
import logging
import os

import pytest
import torch
from torch import nn

from aiprod.aiprod_core import media
from aiprod.aiprod_core.pipelines import LocalHost, decode_video, stages
from aiprod.aiprod_core.pipelines.latents import empty_latents
from aiprod.aiprod_core.pipelines.stages import sample
from aiprod.aiprod_core.pipelines.validation import validate_request, value_problem
from aiprod.aiprod_core.sampling import Guidance, Prompt
from aiprod.aiprod_core.video_vae import TilingConfig
from aiprod.aiprod_core.video_vae.tiling import SpatialTiling, TemporalTiling
from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.safetensors_header import read_header


def _frames() -> torch.Tensor:
    return torch.rand(9, 32, 32, 3)  # (F, H, W, 3)


def _audio() -> torch.Tensor:
    return torch.rand(2, 18000) * 0.2 - 0.1  # (C, S)


def _disk_full_after_video(monkeypatch) -> None:
    encode = media._encode_video

    def fill_disk(container, *args, **kwargs):
        encode(container, *args, **kwargs)  # the video stream is in the file: a truncated file exists now
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(media, "_encode_video", fill_disk)


def test_video_write_on_a_full_disk_leaves_nothing_and_names_the_file(tmp_path, monkeypatch):
    _disk_full_after_video(monkeypatch)
    target = tmp_path / "clip_00001_.mp4"
    with pytest.raises(OSError, match="No space left on device") as caught:
        media.write_video_file(target, _frames(), 24.0, _audio(), 48000)
    assert caught.value.errno == errno.ENOSPC
    assert "clip_00001_.mp4" in str(caught.value) and "nothing was saved" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_video_write_error_is_not_masked_when_the_temporary_cannot_be_removed(tmp_path, monkeypatch, caplog):
    """A folder that turns read-only mid-write refuses the clean-up too: the user still sees the disk error."""
    _disk_full_after_video(monkeypatch)
    real_unlink = type(tmp_path).unlink

    def refuse(self, missing_ok=False):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(type(tmp_path), "unlink", refuse)
    with caplog.at_level(logging.WARNING), pytest.raises(OSError) as caught:
        media.write_video_file(tmp_path / "clip.mp4", _frames(), 24.0, _audio(), 48000)
    monkeypatch.setattr(type(tmp_path), "unlink", real_unlink)
    assert caught.value.errno == errno.ENOSPC
    assert "could not remove the temporary file" in caplog.text
    assert not (tmp_path / "clip.mp4").exists()


def test_video_write_keeps_an_existing_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "clip.mp4"
    media.write_video_file(target, _frames(), 24.0, _audio(), 48000)
    good = target.read_bytes()
    _disk_full_after_video(monkeypatch)
    with pytest.raises(OSError):
        media.write_video_file(target, _frames(), 12.0, None, None)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize(("frames", "fps", "phrase"), [
    (torch.full((9, 32, 32, 3), float("nan")), 24.0, "NaN or infinite"),
    (torch.rand(9, 32, 32, 3), 0.0, "fps=0.0"),
    (torch.rand(9, 32, 32, 3), float("inf"), "fps=inf"),
    (torch.rand(0, 32, 32, 3), 24.0, "F >= 1"),
    (torch.rand(9, 32, 32, 3), 1e-6, "between 1 and 240"),  # the audio would be padded to 9e6 seconds
])
def test_bad_video_is_refused_before_anything_is_written(tmp_path, frames, fps, phrase):
    with pytest.raises(ValueError, match=phrase):
        media.write_video_file(tmp_path / "x.mp4", frames, fps, torch.zeros(2, 100), 48000)
    assert list(tmp_path.iterdir()) == []


def test_file_name_with_a_nul_byte_is_refused_and_nothing_is_written(tmp_path):
    """FFmpeg would open the name cut at the NUL (``.a`` for ``a\\x00b``) and leave that file behind."""
    with pytest.raises(ValueError, match="NUL byte"):
        media.write_video_file(tmp_path / "a\x00b_00001_.mp4", _frames(), 24.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps", [1e-6, 0.5, 240.5, 1e9])
def test_generation_frame_rate_outside_1_to_240_is_refused(fps):
    """The audio latent covers frames / fps seconds: a tiny rate would allocate days of audio tokens."""
    assert value_problem("fps", fps).startswith(f"fps={fps!r}: must be a finite number in [1, 240]")
    with pytest.raises(ValueError, match=r"fps=.*in \[1, 240\]"):
        validate_request("one_stage", width=32, height=32, frames=9, fps=fps, seed=0)


class _HungryDecoder(nn.Module):
    """Stands in for the video decoder: runs out of memory like CUDA does."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, latent, generator=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")


@pytest.mark.parametrize(("tiling", "now"), [
    (None, "spatial_tile=0, temporal_tile=0"),
    (TilingConfig(SpatialTiling(512, 64), TemporalTiling(64, 24)), "spatial_tile=512, temporal_tile=64"),
])
def test_decode_out_of_memory_says_how_to_fit(tiling, now, monkeypatch):
    def hungry_tiles(decoder, latent, tiling, generator=None, on_chunk=None):
        return decoder(latent, generator=generator)

    monkeypatch.setattr(stages, "tiled_decode", hungry_tiles)
    latent = torch.zeros(1, 128, 2, 1, 1)  # (B, C, F', H', W')
    with pytest.raises(torch.OutOfMemoryError) as caught:
        decode_video(_HungryDecoder(), latent, LocalHost(), tiling=tiling)
    message = str(caught.value)
    assert message.startswith("CUDA out of memory. Tried to allocate 12.00 GiB")  # the original stays first
    assert now in message and "spatial_tile 256" in message and "--lowvram" in message


def test_unreadable_file_names_the_file(tmp_path, monkeypatch):
    """Root ignores chmod, so the denial is injected where the OS would raise it."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(CheckpointFormatError, match="permission denied") as caught:
        read_header(path)
    assert str(path) in str(caught.value)


def test_directory_given_as_a_model_file_is_named(tmp_path):
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointFormatError, match="is a directory"):
        read_header(folder)


def test_prompt_longer_than_the_tokenizer_warns_with_its_length(demo_models, caplog):
    from aiprod.aiprod_core.text_encoder import GemmaPromptTokenizer
    from aiprod.loaders.text_encoder_files import _clipping_tokenizer_class

    tokenizer = _clipping_tokenizer_class(GemmaPromptTokenizer).from_folder(demo_models.text_encoder_dir, 16)
    with caplog.at_level(logging.WARNING):
        ids, mask = tokenizer(["short", "a fox in the snow " * 10])
    assert ids.shape == mask.shape == (2, 16)
    assert "only the first 16 reach the model" in caplog.text
    assert caplog.text.count("only the first") == 1  # the short prompt is not flagged


class _HungryTransformer(nn.Module):
    """Stands in for the transformer: runs out of memory on its first forward, like CUDA does."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")


def test_sampling_out_of_memory_says_how_to_fit():
    latents = empty_latents(64, 64, 9, 24.0)  # latent 2 x 2 x 2
    guidance = Guidance(Prompt(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8)))
    with pytest.raises(torch.OutOfMemoryError) as caught:
        sample(_HungryTransformer(), latents, [], torch.tensor([1.0, 0.0]), guidance, 0, LocalHost(),
               dtype=torch.float32)
    message = str(caught.value)
    assert message.startswith("CUDA out of memory. Tried to allocate 3.00 GiB")  # the original stays first
    assert "2 x 2 x 2 (8 video tokens" in message and "weight_streaming = on" in message
    assert "quantized_weights = keep" in message
