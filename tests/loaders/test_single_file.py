"""Strict component loading: every component of both tiny generations equals the reference loader's tensors."""

from __future__ import annotations

import json

import pytest
import torch
from loader_oracle import assert_bit_identical, reference_state_dict
from support import tiny_configs as tc
from support.tiny_checkpoints import safetensors_bytes

from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import CheckpointFormatError

COMPONENT_NAMES = ("transformer", "video_encoder", "video_decoder", "audio_encoder", "audio_decoder", "vocoder",
                   "text_embeddings")


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_every_component_matches_the_reference_loader(tiny_set, generation, dtype):
    path = tiny_set.checkpoint(generation)
    for component in COMPONENT_NAMES:
        loaded = load_component(path, component, dtype=dtype)
        ref = reference_state_dict(path, component, dtype)
        assert_bit_identical(loaded.module.state_dict(), ref)
        assert all(not t.requires_grad for t in loaded.module.parameters())
        assert not loaded.module.training


@pytest.mark.oracle
@pytest.mark.parametrize("which", ["upsampler_x2", "upsampler_x1_5"])
def test_upsampler_matches_the_reference_loader(tiny_set, which):
    path = getattr(tiny_set, which)
    for dtype in (torch.float32, torch.bfloat16):
        loaded = load_component(path, "latent_upsampler", dtype=dtype)
        assert loaded.layout == "UPSAMPLER_MAP"
        assert_bit_identical(loaded.module.state_dict(), reference_state_dict(path, "latent_upsampler", dtype))


def test_transformer_map_leaves_the_connectors_to_the_text_embeddings(tiny_set):
    transformer = load_component(tiny_set.ltx23, "transformer", dtype=torch.float32).module.state_dict()
    text = load_component(tiny_set.ltx23, "text_embeddings", dtype=torch.float32).module.state_dict()
    assert not any("embeddings_connector" in k for k in transformer)
    assert {k.split(".")[0] for k in text} == {"feature_extractor", "video_connector", "audio_connector"}


def test_dtype_none_keeps_the_stored_dtype(tiny_set):
    loaded = load_component(tiny_set.ltx2, "video_decoder", dtype=None)
    assert {t.dtype for t in loaded.module.state_dict().values()} == {torch.bfloat16}


def _split_file(tiny_set, tmp_path, name: str, source_prefixes: tuple[str, ...], strip: str,
                with_config: bool = True):
    """A ComfyUI-style split file: only the keys under ``source_prefixes``, with ``strip`` removed."""
    from safetensors.torch import load_file

    full = load_file(str(tiny_set.ltx23))
    tensors = {k.removeprefix(strip): v for k, v in full.items() if k.startswith(source_prefixes)}
    meta = {"config": json.dumps(tiny_set.configs[tc.LTX23])} if with_config else {}
    path = tmp_path / name
    path.write_bytes(safetensors_bytes(tensors, meta))
    return path


@pytest.mark.parametrize("strip", ["", "model.diffusion_model."], ids=["prefixed", "unprefixed"])
def test_diffusion_models_split_file(tiny_set, tmp_path, strip):
    path = _split_file(tiny_set, tmp_path, "dit.safetensors", ("model.diffusion_model.",), strip)
    ours = load_component(path, "transformer", dtype=torch.float32)
    assert ours.layout == ("TRANSFORMER_SPLIT_MAP" if strip else "AIPRODV_MODEL_COMFY_RENAMING_MAP")
    single = load_component(tiny_set.ltx23, "transformer", dtype=torch.float32).module.state_dict()
    assert_bit_identical(ours.module.state_dict(), single)


@pytest.mark.parametrize("strip", ["", "vae."], ids=["prefixed", "unprefixed"])
def test_vae_split_file(tiny_set, tmp_path, strip):
    path = _split_file(tiny_set, tmp_path, "vae.safetensors", ("vae.",), strip)
    for component in ("video_encoder", "video_decoder"):
        ours = load_component(path, component, dtype=torch.float32).module.state_dict()
        single = load_component(tiny_set.ltx23, component, dtype=torch.float32).module.state_dict()
        assert_bit_identical(ours, single)


def test_split_file_without_config_takes_an_explicit_config(tiny_set, tmp_path):
    path = _split_file(tiny_set, tmp_path, "vae.safetensors", ("vae.",), "vae.", with_config=False)
    with pytest.raises(CheckpointFormatError, match=r"has no `config` metadata, so the video VAE decoder"):
        load_component(path, "video_decoder")
    loaded = load_component(path, "video_decoder", config=tiny_set.configs[tc.LTX23], dtype=torch.float32)
    assert_bit_identical(loaded.module.state_dict(),
                         load_component(tiny_set.ltx23, "video_decoder", dtype=torch.float32).module.state_dict())


def test_unknown_component_and_fp8_mode_are_rejected(tiny_set):
    with pytest.raises(ValueError, match=r"component='unet', expected one of"):
        load_component(tiny_set.ltx2, "unet")
    with pytest.raises(ValueError, match=r"fp8='fast', expected 'upcast' or 'keep'"):
        load_component(tiny_set.ltx2, "transformer", fp8="fast")  # type: ignore[arg-type]
