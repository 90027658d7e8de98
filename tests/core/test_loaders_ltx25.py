"""LTX-2.5 files in the loaders: generation from the metadata, the components each file holds, the key maps on the
Lightricks and ComfyUI layouts (including Comfy-Org's int8-convrot repackaging, header level), and the generation
rule that lets the nodes refuse a 2.5 LoRA on a 2.3 model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from support import tiny_ltx25 as t25

from aiprod.aiprod_core.pipelines.validation import check_lora_generation, generation_family
from aiprod.loaders.component_loader import load_component, plan_load
from aiprod.loaders.detect import describe_file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> t25.Tiny25:
    return t25.build(tmp_path_factory.mktemp("ltx25"), t25.LTX25)


def _tensors(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(path, "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def test_describe_the_three_files(tiny: t25.Tiny25) -> None:
    transformer = describe_file(tiny.transformer_path)
    assert transformer.generation == "LTX-2.5 (22B family)" and transformer.kind == "transformer only"
    assert set(transformer.component_names) == {"transformer", "video_embeddings_connector",
                                                "audio_embeddings_connector"}
    encoder = describe_file(tiny.text_encoder_path)  # no model_version: its Gemma 4 config says it
    assert encoder.generation == "LTX-2.5 (22B family, from its Gemma 4 text encoder config)"
    head = describe_file(tiny.duration_head_path)
    assert (head.kind, head.component_names) == ("duration head", ("duration_head",))


@pytest.mark.parametrize(("version", "label"), [
    ("2.5.0", "LTX-2.5 (22B family)"), ("2.4.1", "LTX-2.5 (22B family, pre-release model_version 2.4)"),
    ("2.3.0", "LTX-2.3 (22B family)"), ("2.0.1", "LTX-2 (19B family)"),
])
def test_generation_from_model_version(tiny: t25.Tiny25, tmp_path, version: str, label: str) -> None:
    tensors, metadata = _tensors(tiny.duration_head_path)
    path = tmp_path / "head.safetensors"
    save_file(tensors, str(path), {**metadata, "model_version": version})
    assert describe_file(path).generation == label
    assert generation_family(label) == version[:3].replace("2.4", "2.5")


def test_a_25_lora_on_a_23_model_is_refused_naming_both() -> None:
    assert generation_family("2.5.0") == generation_family("ltx25") == "2.5"
    check_lora_generation("LTX-2.5 (22B family)", "2.5.0")
    with pytest.raises(ValueError) as info:
        check_lora_generation("LTX-2.5 (22B family)", "LTX-2.3 (22B family)", "distilled-lora-450.safetensors")
    assert str(info.value) == (
        "distilled-lora-450.safetensors: generation='LTX-2.5 (22B family)' (LTX-2.5) does not match the model's "
        "'LTX-2.3 (22B family)' (LTX-2.3); use a LoRA trained for LTX-2.3")


def test_comfy_int8_convrot_layout_is_taken_by_the_key_maps(tiny: t25.Tiny25, tmp_path) -> None:
    """Comfy-Org's int8-convrot 2.5 transformer keeps the ``model.diffusion_model.`` layout with the connectors
    and adds per quantised Linear ``.weight_scale`` (F32) and ``.comfy_quant`` (U8 JSON): the transformer map takes
    every DiT tensor (the quantised-weights loader consumes the extras), the connectors stay the text map's."""
    tensors, metadata = _tensors(tiny.transformer_path)
    quantised = {}
    for key, value in tensors.items():
        if ".transformer_blocks." in key and key.endswith(".weight") and value.ndim == 2:
            base = key.removesuffix(".weight")
            quantised[key] = torch.zeros(value.shape, dtype=torch.int8)
            quantised[base + ".weight_scale"] = torch.ones(1)
            quantised[base + ".comfy_quant"] = torch.tensor(list(b'{"format": "int8_tensorwise"}'), dtype=torch.uint8)
        else:
            quantised[key] = value
    path = tmp_path / "ltx-2.5-tiny-transformer-comfy-int8-convrot.safetensors"
    save_file(quantised, str(path), metadata)
    plan = plan_load(path, "transformer")
    assert plan.layout.name == "AIPRODV_MODEL_COMFY_RENAMING_MAP"
    taken = plan.layout.select(quantised)  # module key -> file key, before any quantisation handling
    assert taken["transformer_blocks.0.ff.net.2.weight_scale"] == (
        "model.diffusion_model.transformer_blocks.0.ff.net.2.weight_scale")
    assert "transformer_blocks.0.attn2.to_k.comfy_quant" in taken and "keyframes_abs_pos_embedding" in taken
    assert not any("embeddings_connector" in f for f in taken.values())
    expected = set(load_component(tiny.transformer_path, "transformer", dtype=torch.float32).module.state_dict())
    extras = {k for k in taken if k.endswith((".weight_scale", ".comfy_quant"))}
    assert set(taken) - extras == expected
    connectors = load_component(path, "text_connectors", dtype=torch.float32)  # bf16 connectors, untouched
    assert connectors.layout == "CONNECTORS_MAP"


def test_unprefixed_and_prefixed_layouts(tiny: t25.Tiny25, tmp_path) -> None:
    tensors, metadata = _tensors(tiny.transformer_path)
    bare = {k.removeprefix(t25.PREFIX): v for k, v in tensors.items()}
    path = tmp_path / "bare.safetensors"
    save_file(bare, str(path), metadata)
    assert load_component(path, "transformer", dtype=torch.float32).layout == "TRANSFORMER_SPLIT_MAP"
    assert load_component(path, "text_connectors", dtype=torch.float32).layout == "CONNECTORS_SPLIT_MAP"
    # the duration head stored beside the transformer (ComfyUI reads it under model.diffusion_model.duration_head.)
    head, head_metadata = _tensors(tiny.duration_head_path)
    both = {**tensors, **{t25.PREFIX + k: v for k, v in head.items()}}
    merged = tmp_path / "with_head.safetensors"
    config = {**json.loads(metadata["config"]), "duration_head": dict(t25.DURATION)}
    save_file(both, str(merged), {**metadata, "config": json.dumps(config)})
    assert load_component(merged, "duration_head", dtype=torch.float32).layout == "DURATION_HEAD_PREFIXED_MAP"
    assert not any("duration_head" in k for k in plan_load(merged, "transformer").keys)


def test_strict_load_names_missing_and_unexpected_keys(tiny: t25.Tiny25, tmp_path) -> None:
    tensors, metadata = _tensors(tiny.transformer_path)
    missing = t25.PREFIX + "transformer_blocks.1.attn2.to_k.weight"
    extra = t25.PREFIX + "transformer_blocks.0.ff.net.0.proj.bias"  # LTX-2.5: ff_bias false, so no such bias
    broken = {k: v for k, v in tensors.items() if k != missing}
    broken[extra] = torch.zeros(tiny.section["cross_attention_dim"] * 4)
    path = tmp_path / "ltx-2.5-broken-transformer.safetensors"
    save_file(broken, str(path), metadata)
    with pytest.raises(ValueError) as info:
        load_component(path, "transformer", dtype=torch.float32)
    message = str(info.value)
    assert "transformer_blocks.1.attn2.to_k.weight" in message and "transformer_blocks.0.ff.net.0.proj.bias" in message
    assert str(path) in message
