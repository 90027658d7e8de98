"""LoRAs: key formats, fusion parity with the reference, stacking, connectors / text projection, reports."""

from __future__ import annotations

import pytest
import torch
from loader_oracle import assert_bit_identical, reference_state_dict, undo_reference_lora_dtype_quirk
from safetensors.torch import load_file, save_file
from support import tiny_configs as tc

from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import LoraMismatchError
from aiprod.loaders.lora import check_lora_fits, read_lora
from aiprod.loaders.lora_apply import LoraAdapter, load_component_with_loras

TARGET = "transformer_blocks.1.audio_to_video_attn.to_v"


@pytest.fixture(scope="module")
def comfy_lora(tiny_set):
    return load_file(str(tiny_set.lora))


def _save(tmp_path, name, tensors, metadata=None):
    path = tmp_path / name
    save_file(tensors, str(path), metadata=metadata)
    return path


def _reformat(comfy: dict[str, torch.Tensor], style: str) -> dict[str, torch.Tensor]:
    """The ComfyUI-format tiny LoRA rewritten in another key format with the same deltas."""
    out = {}
    for key, value in comfy.items():
        path = key.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0]
        is_down = ".lora_A." in key
        if style == "diffusers":
            out[f"transformer.{path}.lora_{'A' if is_down else 'B'}.weight"] = value
        elif style == "bare":
            out[key.removeprefix("diffusion_model.")] = value
        elif style == "single_file":
            out["model." + key] = value
        elif style == "comfy_with_alpha":  # alpha == rank (KJNodes' resized LoRAs): scale 1
            out[key] = value
            out[f"diffusion_model.{path}.alpha"] = torch.tensor(float(tc.LORA_RANK))
        elif style == "kohya":  # alpha = rank / 2 halves the scale; doubling B (exact in bf16) compensates
            name = "lora_unet_" + path.replace(".", "_")
            out[f"{name}.lora_{'down' if is_down else 'up'}.weight"] = value if is_down else value * 2
            out[f"{name}.alpha"] = torch.tensor(tc.LORA_RANK / 2)
    return out


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_fused_lora_is_bit_identical_to_the_reference(tiny_set, dtype):
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps

    for generation in tc.GENERATIONS:
        path = tiny_set.checkpoint(generation)
        ours = load_component_with_loras(path, "transformer", [(tiny_set.lora, 0.7)], dtype=dtype)
        ref = reference_state_dict(path, "transformer", dtype,
                                   [LoraPathStrengthAndSDOps(str(tiny_set.lora), 0.7, LTXV_LORA_COMFY_RENAMING_MAP)])
        if dtype == torch.float32:
            ref = undo_reference_lora_dtype_quirk(ref, ours.module.state_dict())
        assert_bit_identical(ours.module.state_dict(), ref)
        base = load_component(path, "transformer", dtype=dtype).module.state_dict()
        assert not torch.equal(base[f"{TARGET}.weight"], ours.module.state_dict()[f"{TARGET}.weight"])
        assert len(ours.lora_report.applied[str(tiny_set.lora)]) == 2 * 6 * 4  # blocks x attentions x projections


@pytest.mark.oracle
def test_stacked_loras_are_bit_identical_to_the_reference(tiny_set):
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps

    stack = [(tiny_set.lora, 0.8), (tiny_set.ic_lora, -0.45)]
    ours = load_component_with_loras(tiny_set.ltx23, "transformer", stack, dtype=torch.bfloat16)
    ref_loras = [LoraPathStrengthAndSDOps(str(p), s, LTXV_LORA_COMFY_RENAMING_MAP) for p, s in stack]
    assert_bit_identical(ours.module.state_dict(),
                         reference_state_dict(tiny_set.ltx23, "transformer", torch.bfloat16, ref_loras))


@pytest.mark.parametrize("style", ["diffusers", "bare", "single_file", "comfy_with_alpha", "kohya"])
def test_every_key_format_applies_the_same_delta(tiny_set, tmp_path, comfy_lora, style):
    path = _save(tmp_path, f"{style}.safetensors", _reformat(comfy_lora, style))
    ours = load_component_with_loras(tiny_set.ltx2, "transformer", [(path, 0.7)], dtype=torch.float32, strict=True)
    comfy = load_component_with_loras(tiny_set.ltx2, "transformer", [(tiny_set.lora, 0.7)], dtype=torch.float32)
    assert_bit_identical(ours.module.state_dict(), comfy.module.state_dict())
    assert not ours.lora_report.unmatched


def test_lora_for_connectors_and_text_projection(tiny_set, tmp_path):
    gen = torch.Generator().manual_seed(3)
    connector = "video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q"
    projection = "text_embedding_projection.video_aggregate_embed"
    dims = {connector: (tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM,) * 2,
            projection: (tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM, tc.CAPTION_CHANNELS * (tc.TINY_GEMMA_NUM_LAYERS + 1))}
    tensors = {}
    for name, (out_features, in_features) in dims.items():
        key = name if name.startswith("text_") else f"diffusion_model.{name}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(2, in_features, generator=gen).to(torch.bfloat16)
        tensors[f"{key}.lora_B.weight"] = torch.randn(out_features, 2, generator=gen).to(torch.bfloat16)
    path = _save(tmp_path, "text.safetensors", tensors)
    base = load_component(tiny_set.ltx23, "text_embeddings", dtype=torch.float32).module.state_dict()
    loaded = load_component_with_loras(tiny_set.ltx23, "text_embeddings", [(path, 0.5)], dtype=torch.float32,
                                       strict=True)
    state = loaded.module.state_dict()
    for name, module_key in ((connector, "video_connector.transformer_1d_blocks.0.attn1.to_q.weight"),
                             (projection, "feature_extractor.video_aggregate_embed.weight")):
        key = name if name.startswith("text_") else f"diffusion_model.{name}"
        delta = (tensors[f"{key}.lora_B.weight"] * 0.5) @ tensors[f"{key}.lora_A.weight"]
        assert torch.equal(state[module_key], delta.float() + base[module_key])
    assert len(loaded.lora_report.applied[str(path)]) == 2
    # the transformer load of the same LoRA reports them as belonging to the other component, not unmatched
    transformer = load_component_with_loras(tiny_set.ltx23, "transformer", [(path, 0.5)], strict=True)
    assert len(transformer.lora_report.other_components[str(path)]) == 2
    assert not transformer.lora_report.applied


def test_unmatched_keys_are_reported_by_name(tiny_set, tmp_path, comfy_lora):
    tensors = dict(comfy_lora)
    tensors["diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight"] = torch.zeros(4, 64)
    tensors["diffusion_model.transformer_blocks.7.attn1.to_q.lora_B.weight"] = torch.zeros(64, 4)
    tensors["diffusion_model.transformer_blocks.0.attn1.to_k.lora_B.weight"] = torch.zeros(32, 4)  # wrong shape
    path = _save(tmp_path, "extra.safetensors", tensors)
    loaded = load_component_with_loras(tiny_set.ltx2, "transformer", [(path, 1.0)])
    unmatched = loaded.lora_report.unmatched[str(path)]
    assert unmatched["diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight"] == (
        "no weight transformer_blocks.7.attn1.to_q in the checkpoint")
    assert "fits a [32, 64] weight but model.diffusion_model.transformer_blocks.0.attn1.to_k.weight is [64, 64]" in (
        unmatched["diffusion_model.transformer_blocks.0.attn1.to_k.lora_A.weight"])
    with pytest.raises(LoraMismatchError, match=r"extra\.safetensors: has 2 key\(s\) that match no weight: "
                                                r"diffusion_model\.transformer_blocks\.0\.attn1\.to_k"):
        load_component_with_loras(tiny_set.ltx2, "transformer", [(path, 1.0)], strict=True)


def test_lora_for_another_architecture(tiny_set, tmp_path):
    tensors = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(4, 3072),
               "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(9216, 4),
               "diffusion_model.double_blocks.0.img_attn.qkv.alpha": torch.tensor(4.0)}
    path = _save(tmp_path, "flux-lora.safetensors", tensors)
    with pytest.raises(LoraMismatchError) as info:
        load_component_with_loras(tiny_set.ltx23, "transformer", [(path, 1.0)])
    assert str(info.value) == (
        f"{path}: does not fit {tiny_set.ltx23}: none of its 1 LoRA keys match a weight of it "
        "(first: diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight; LoRA patches in the ComfyUI "
        "(diffusion_model.*) naming). It is probably a LoRA for another model or model version; use a LoRA trained "
        "for LTX-2 / LTX-2.3. Its keys look like a Flux / HunyuanVideo LoRA.")


def test_unfused_adapters_match_the_fused_weights(tiny_set):
    fused = load_component_with_loras(tiny_set.ltx2, "transformer", [(tiny_set.lora, 0.9)], dtype=torch.float32)
    unfused = load_component_with_loras(tiny_set.ltx2, "transformer", [(tiny_set.lora, 0.9)], dtype=torch.float32,
                                        mode="unfused")
    base = load_component(tiny_set.ltx2, "transformer", dtype=torch.float32).module.state_dict()
    assert_bit_identical(unfused.module.state_dict(), base)  # weights untouched, keys unchanged
    layer = unfused.module.get_submodule(TARGET)
    assert isinstance(layer.lora_adapters[0], LoraAdapter)
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(0))
    lora = load_file(str(tiny_set.lora))
    down, up = (lora[f"diffusion_model.{TARGET}.lora_{n}.weight"].float() for n in "AB")
    exact = torch.nn.functional.linear(x, base[f"{TARGET}.weight"] + 0.9 * up @ down, base[f"{TARGET}.bias"])
    got = layer(x)
    assert (got - exact).abs().max() <= 1e-5 * max(1.0, exact.abs().max().item())
    # the fused weight carries the delta rounded to the LoRA's dtype (bf16), as the reference computes it
    fused_out = fused.module.get_submodule(TARGET)(x)
    assert (fused_out - exact).abs().max() <= 1e-2 * max(1.0, exact.abs().max().item())
    assert len(unfused.lora_report.unfused[str(tiny_set.lora)]) == 48


def test_zero_strength_and_ic_lora_metadata(tiny_set):
    loaded = load_component_with_loras(tiny_set.ltx2, "transformer", [(tiny_set.ic_lora, 0.0)], dtype=torch.float32)
    assert_bit_identical(loaded.module.state_dict(),
                         load_component(tiny_set.ltx2, "transformer", dtype=torch.float32).module.state_dict())
    assert read_lora(tiny_set.ic_lora).reference_downscale_factor == 2
    assert read_lora(tiny_set.lora).reference_downscale_factor is None
    with_ic = load_component_with_loras(tiny_set.ltx2, "transformer", [(tiny_set.ic_lora, 1.0)])
    assert with_ic.lora_report.reference_downscale_factors == {str(tiny_set.ic_lora): 2}


def test_orphan_and_foreign_keys_are_reported(tiny_set, tmp_path, comfy_lora):
    tensors = dict(comfy_lora)
    tensors["diffusion_model.transformer_blocks.0.attn1.to_q.dora_scale"] = torch.ones(64)  # 1-D: not LyCORIS'
    tensors["diffusion_model.transformer_blocks.0.attn1.to_q.weight_scale"] = torch.ones(())
    del tensors["diffusion_model.transformer_blocks.1.attn2.to_out.0.lora_B.weight"]
    lora = read_lora(_save(tmp_path, "odd.safetensors", tensors))
    assert lora.orphans == {
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight":
            "dora_scale [64] is neither (out, 1) nor (1, in) for a [64, 64] weight",
        "diffusion_model.transformer_blocks.0.attn1.to_q.weight_scale":
            "not a LoRA tensor (expected lora_A/lora_B, lora_down/lora_up, alpha, dora_scale, diff, diff_b, "
            "set_weight, lokr_*, hada_*)",
        "diffusion_model.transformer_blocks.1.attn2.to_out.0.lora_A.weight":
            "has no matching partner (e.g. lora_A without lora_B)",
    }
    assert lora.formats == ("AIPRODV_LORA_COMFY_RENAMING_MAP",) and lora.kinds == ("LoRA",)


def test_check_lora_fits_reads_headers_only(tiny_set, tmp_path):
    shallow = check_lora_fits(tiny_set.ic_lora, tiny_set.ltx2)
    full = read_lora(tiny_set.ic_lora)
    assert shallow.reference_downscale_factor == 2
    assert [(p.stem, p.down.shape, p.up.shape) for p in shallow.pairs] == \
        [(p.stem, p.down.shape, p.up.shape) for p in full.pairs]
    assert all(p.down.is_meta and p.up.is_meta for p in shallow.pairs)  # nothing but the header was read
    tensors = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(4, 3072),
               "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(9216, 4)}
    foreign = _save(tmp_path, "flux-lora.safetensors", tensors)
    with pytest.raises(LoraMismatchError, match="none of its 1 LoRA keys match a weight"):
        check_lora_fits(foreign, tiny_set.ltx23)
