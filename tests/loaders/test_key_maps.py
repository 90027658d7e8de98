"""Key maps are data: each named map selects and renames the same keys as the reference's, connectors aside."""

from __future__ import annotations

import dataclasses

import pytest
from support import tiny_configs as tc

from aiprod.loaders import key_maps as km
from aiprod.loaders.safetensors_header import read_header


def _reference_maps():
    from ltx_core.model.audio_vae import (
        AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
        VOCODER_COMFY_KEYS_FILTER,
    )
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP
    from ltx_core.model.video_vae import VAE_DECODER_COMFY_KEYS_FILTER, VAE_ENCODER_COMFY_KEYS_FILTER
    from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS

    return {
        "AIPRODV_MODEL_COMFY_RENAMING_MAP": LTXV_MODEL_COMFY_RENAMING_MAP,
        "VIDEO_VAE_ENCODER_MAP": VAE_ENCODER_COMFY_KEYS_FILTER,
        "VIDEO_VAE_DECODER_MAP": VAE_DECODER_COMFY_KEYS_FILTER,
        "AUDIO_VAE_ENCODER_MAP": AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
        "AUDIO_VAE_DECODER_MAP": AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        "VOCODER_MAP": VOCODER_COMFY_KEYS_FILTER,
        "TEXT_EMBEDDINGS_MAP": EMBEDDINGS_PROCESSOR_KEY_OPS,
    }


def _reference_key(sd_ops, key: str) -> str | None:
    import torch

    renamed = sd_ops.apply_to_key(key)
    if renamed is None:
        return None
    ((new_key, _),) = sd_ops.apply_to_key_value(renamed, torch.zeros(()))
    return new_key


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_maps_select_and_rename_like_the_reference(tiny_set, generation):
    keys = list(read_header(tiny_set.checkpoint(generation)).tensors)
    for name, sd_ops in _reference_maps().items():
        ours_map = getattr(km, name)
        ours = {k: ours_map.to_module_key(k) for k in keys}
        ref = {k: _reference_key(sd_ops, k) for k in keys}
        if name == "AIPRODV_MODEL_COMFY_RENAMING_MAP":
            # the reference's transformer map also takes the connectors (LTXModel then drops them silently
            # through its strict=False load); ours leaves them to TEXT_EMBEDDINGS_MAP
            taken_by_ref_only = {k for k in keys if ref[k] is not None and ours[k] is None}
            assert taken_by_ref_only and all("_embeddings_connector." in k for k in taken_by_ref_only)
            ref = {k: None if k in taken_by_ref_only else v for k, v in ref.items()}
        assert ours == ref, name
        assert ours_map.is_present(keys)


def test_maps_are_frozen_named_data():
    maps = [v for v in vars(km).values() if isinstance(v, km.KeyMap)]
    assert len({m.name for m in maps}) == len(maps)
    assert all(getattr(km, m.name) is m for m in maps if m.name in km.__all__)
    with pytest.raises(dataclasses.FrozenInstanceError):
        km.VOCODER_MAP.name = "other"  # type: ignore[misc]


@pytest.mark.oracle
def test_only_the_leading_prefix_is_replaced():
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP

    # The reference's LoRA map str.replace()s "diffusion_model." anywhere: a LoRA saved with the single-file prefix
    # becomes "model.transformer_blocks..." and then matches no weight (silently). Ours strips leading prefixes.
    key = "model.diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight"
    assert LTXV_LORA_COMFY_RENAMING_MAP.apply_to_key(key) == "model.transformer_blocks.0.attn1.to_q.lora_A.weight"
    assert km.LORA_SINGLE_FILE_MAP.to_module_key(key) == "transformer_blocks.0.attn1.to_q.lora_A.weight"
    assert km.AIPRODV_LORA_COMFY_RENAMING_MAP.to_module_key("diffusion_model.a.diffusion_model.b") == (
        "a.diffusion_model.b")
    assert km.VOCODER_MAP.to_module_key("vocoder.vocoder.conv_pre.weight") == "vocoder.conv_pre.weight"


def test_round_trip_and_split_layouts():
    for keymap, module_key in ((km.VIDEO_VAE_ENCODER_MAP, "per_channel_statistics.mean-of-means"),
                               (km.TEXT_EMBEDDINGS_MAP, "audio_connector.learnable_registers"),
                               (km.TRANSFORMER_SPLIT_MAP, "transformer_blocks.0.attn1.to_q.weight")):
        file_key = keymap.to_file_key(module_key)
        assert file_key is not None and keymap.to_module_key(file_key) == module_key
    assert km.TRANSFORMER_SPLIT_MAP.to_module_key("video_embeddings_connector.x") is None
    assert km.TRANSFORMER_SPLIT_MAP.to_module_key("vae.decoder.x") is None
    assert km.TEXT_EMBEDDINGS_SPLIT_MAP.to_module_key("audio_embeddings_connector.y") == "audio_connector.y"
    assert not km.TRANSFORMER_SPLIT_MAP.is_present(["decoder.conv_in.weight"])
    assert km.VIDEO_VAE_DECODER_SPLIT_MAP.is_present(["decoder.conv_in.weight"])
    assert not km.VIDEO_VAE_DECODER_SPLIT_MAP.is_present(["per_channel_statistics.mean-of-means"])
