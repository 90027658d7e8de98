"""Header-only inspection: component detection, generation, precision and every defect's message."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from support.bad_files import write_bad_files, write_component_file

from aiprod.loaders.detect import describe_file, format_report
from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.safetensors_header import read_header

SINGLE_FILE_KEYS = {
    "model.diffusion_model.patchify_proj.weight": (64, 128),
    "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": (64, 64),
    "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight": (64, 64),
    "model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight": (32, 32),
    "vae.decoder.conv_in.conv.weight": (32, 128, 3, 3, 3),
    "vae.per_channel_statistics.mean-of-means": (128,),
    "audio_vae.decoder.conv_in.conv.weight": (16, 8, 3, 3),
    "vocoder.conv_pre.weight": (32, 128, 7),
    "text_embedding_projection.video_aggregate_embed.weight": (64, 96),
}
CONFIG = {"transformer": {"num_layers": 1}, "vae": {}, "audio_vae": {}, "vocoder": {}}


@pytest.fixture
def single_file(tmp_path):
    meta = {"config": json.dumps(CONFIG), "model_version": "2.3.0"}
    return write_component_file(tmp_path / "ltx.safetensors", SINGLE_FILE_KEYS, metadata=meta)


@pytest.fixture
def bad_files(tmp_path):
    return write_bad_files(tmp_path / "bad")


def test_header_matches_safetensors_library(single_file):
    header = read_header(single_file)
    tensors = load_file(str(single_file))
    assert set(header.tensors) == set(tensors)
    for name, info in header.tensors.items():
        assert info.shape == tuple(tensors[name].shape)
        assert info.dtype == "BF16"
        assert info.nbytes == tensors[name].numel() * 2
    assert header.metadata["model_version"] == "2.3.0"


def test_single_file_components_and_generation(single_file):
    desc = describe_file(single_file)
    assert desc.kind == "single-file checkpoint"
    assert desc.generation.startswith("LTX-2.3")
    assert desc.component_names == (
        "video_embeddings_connector", "audio_embeddings_connector", "transformer", "video_vae",
        "audio_vae", "vocoder", "text_projection",
    )
    transformer = next(c for c in desc.components if c.name == "transformer")
    assert transformer.tensor_count == 2
    assert transformer.parameter_count == 64 * 128 + 64 * 64
    assert desc.tensor_count == len(SINGLE_FILE_KEYS)
    assert desc.config_sections == ("audio_vae", "transformer", "vae", "vocoder")
    assert not desc.fp8


def test_ltx2_generation_from_version_and_from_keys(tmp_path):
    keys = {"model.diffusion_model.patchify_proj.weight": (8, 8),
            "text_embedding_projection.aggregate_embed.weight": (8, 8)}
    with_version = write_component_file(tmp_path / "a.safetensors", keys,
                                        metadata={"config": "{}", "model_version": "2.0.1"})
    assert describe_file(with_version).generation.startswith("LTX-2 (19B")
    without_version = write_component_file(tmp_path / "b.safetensors", keys, metadata={"config": "{}"})
    assert "from its text projection keys" in describe_file(without_version).generation


def test_report_names_everything(single_file):
    report = format_report(describe_file(single_file))
    for word in ("ltx.safetensors", "LTX-2.3", "transformer", "video_vae", "audio_vae", "vocoder",
                 "text_projection", "video_embeddings_connector", "BF16", "9 tensors"):
        assert word in report, word


def test_fp8_and_lora_and_upsampler_kinds(tmp_path):
    fp8 = write_component_file(tmp_path / "fp8.safetensors",
                               {"model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": (8, 8)},
                               metadata={"config": "{}"}, dtype=torch.float8_e4m3fn)
    assert describe_file(fp8).fp8
    lora = write_component_file(tmp_path / "lora.safetensors", {
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": (4, 64),
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": (64, 4)})
    assert describe_file(lora).kind == "LoRA"  # LoRAs legitimately carry no config
    upsampler = write_component_file(tmp_path / "up.safetensors", {
        "initial_conv.weight": (8, 128, 3, 3, 3), "final_conv.weight": (128, 8, 3, 3, 3)},
        metadata={"config": "{}"})
    assert describe_file(upsampler).kind == "latent upsampler"


@pytest.mark.parametrize(("defect", "phrase"), [
    ("not_safetensors", "not a valid safetensors file"),
    ("truncated", "is truncated"),
    ("no_metadata", "has no `config` metadata"),
    ("lfs_pointer", "git-LFS pointer"),
    ("empty", "too short to be a safetensors file"),
])
def test_defects_raise_messages_naming_the_file(bad_files, defect, phrase):
    path = bad_files[defect]
    with pytest.raises(CheckpointFormatError) as info:
        describe_file(path)
    message = str(info.value)
    assert str(path) in message
    assert phrase in message


def test_pickle_formats_are_refused_without_opening(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x04 pickle bytes that must never be unpickled")
    with pytest.raises(CheckpointFormatError, match=r"model\.ckpt: is a pickle-based checkpoint format"):
        describe_file(path)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(CheckpointFormatError, match="is a directory"):
        describe_file(tmp_path)
    with pytest.raises(CheckpointFormatError, match="does not exist"):
        describe_file(tmp_path / "nope.safetensors")


def test_invalid_config_json_is_reported(tmp_path):
    path = write_component_file(tmp_path / "c.safetensors", {"vae.decoder.conv_in.conv.weight": (4, 4)},
                                metadata={"config": "{not json"})
    with pytest.raises(CheckpointFormatError, match="not valid JSON"):
        describe_file(path)


def test_unreadable_file(single_file, monkeypatch):
    # chmod cannot stop root (CI runs as root), so make the OS refuse the open instead.
    from aiprod.loaders import safetensors_header

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(safetensors_header, "open", refuse, raising=False)
    with pytest.raises(CheckpointFormatError, match="permission denied") as info:
        describe_file(single_file)
    assert str(single_file) in str(info.value)
