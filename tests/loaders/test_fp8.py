"""fp8 checkpoints: kept in fp8 with per-call up-cast, or de-quantised at load; reference parity; LoRAs on fp8."""

from __future__ import annotations

import pytest
import torch
from loader_oracle import assert_bit_identical, reference_state_dict, undo_reference_lora_dtype_quirk
from safetensors.torch import load_file, save_file

from aiprod.loaders.component_loader import load_component
from aiprod.loaders.fp8 import Fp8Linear
from aiprod.loaders.lora_apply import load_component_with_loras
from aiprod.loaders.safetensors_header import read_header

# The layers the official fp8 files (and the reference's fp8-cast policy) store in float8_e4m3fn.
FP8_SUFFIXES = (".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight", "ff.net.0.proj.weight",
                "ff.net.2.weight")
FP8_MAX = torch.finfo(torch.float8_e4m3fn).max
LAYER = "transformer_blocks.0.audio_attn2.to_out.0"


def _is_fp8_layer(key: str) -> bool:
    return key.startswith("model.diffusion_model.transformer_blocks.") and key.endswith(FP8_SUFFIXES)


def _write_fp8(tiny_set, tmp_path, scaled: bool):
    tensors = load_file(str(tiny_set.ltx23))
    for key in [k for k in tensors if _is_fp8_layer(k)]:
        weight = tensors[key].float()
        if scaled:
            scale = weight.abs().amax() / FP8_MAX
            tensors[key] = (weight / scale).to(torch.float8_e4m3fn)
            tensors[key.replace(".weight", ".weight_scale")] = scale.reshape(())
            tensors[key.replace(".weight", ".input_scale")] = torch.tensor(1.0)
        else:
            tensors[key] = weight.to(torch.float8_e4m3fn)
    path = tmp_path / f"ltx-2.3-tiny-fp8{'-scaled' if scaled else ''}.safetensors"
    save_file(tensors, str(path), metadata=read_header(tiny_set.ltx23).metadata)
    return path, tensors


@pytest.fixture
def fp8_file(tiny_set, tmp_path):
    return _write_fp8(tiny_set, tmp_path, scaled=False)


@pytest.fixture
def scaled_fp8_file(tiny_set, tmp_path):
    return _write_fp8(tiny_set, tmp_path, scaled=True)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_upcast_load_of_an_fp8_file_matches_the_reference(fp8_file, dtype):
    path, _ = fp8_file
    ours = load_component(path, "transformer", dtype=dtype, fp8="upcast")
    assert_bit_identical(ours.module.state_dict(), reference_state_dict(path, "transformer", dtype))


def test_keep_mode_holds_fp8_and_computes_like_the_dequantised_weight(fp8_file):
    path, tensors = fp8_file
    kept = load_component(path, "transformer", dtype=torch.bfloat16, fp8="keep").module
    upcast = load_component(path, "transformer", dtype=torch.bfloat16, fp8="upcast").module
    fp8_layers = [n for n, m in kept.named_modules() if isinstance(m, Fp8Linear)]
    assert len(fp8_layers) == sum(_is_fp8_layer(k) for k in tensors) == 2 * (6 * 4 + 2 * 2)
    layer = kept.get_submodule(LAYER)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.weight, tensors[f"model.diffusion_model.{LAYER}.weight"])
    x = torch.randn(2, 7, layer.in_features, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    assert torch.equal(layer(x), upcast.get_submodule(LAYER)(x))
    assert torch.equal(layer(x.float()), torch.nn.functional.linear(x.float(), layer.weight.float(),
                                                                     layer.bias.float()))


def test_scaled_fp8_file(scaled_fp8_file):
    path, tensors = scaled_fp8_file
    key = f"model.diffusion_model.{LAYER}"
    dequantised = tensors[f"{key}.weight"].float() * tensors[f"{key}.weight_scale"]
    kept = load_component(path, "transformer", dtype=torch.float32, fp8="keep").module
    layer = kept.get_submodule(LAYER)
    assert layer.weight_scale is not None and layer.input_scale is not None
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(2))
    expected = torch.nn.functional.linear(x, dequantised, layer.bias)
    assert (layer(x) - expected).abs().max() <= 1e-6 * max(1.0, expected.abs().max().item())
    upcast = load_component(path, "transformer", dtype=torch.float32, fp8="upcast").module
    assert torch.equal(upcast.state_dict()[f"{LAYER}.weight"], dequantised)
    bf16 = load_component(path, "transformer", dtype=torch.bfloat16, fp8="keep").module.get_submodule(LAYER)
    assert bf16.weight_scale.dtype == torch.float32 and torch.equal(bf16.weight_scale, layer.weight_scale)
    # in bf16 the weight is de-quantised as comfy-kitchen / ComfyUI do it: fp8 and scale cast to bf16, then multiplied
    stored, scale = tensors[f"{key}.weight"], tensors[f"{key}.weight_scale"]
    in_bf16 = stored.to(torch.bfloat16) * scale.to(torch.bfloat16)
    assert torch.equal(bf16(x.bfloat16()), torch.nn.functional.linear(x.bfloat16(), in_bf16, bf16.bias))
    assert not any(k.endswith(("weight_scale", "input_scale")) for k in upcast.state_dict())


@pytest.mark.oracle
def test_lora_on_fp8_upcast_matches_the_reference_fusion(fp8_file, tiny_set):
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps

    path, _ = fp8_file
    ours = load_component_with_loras(path, "transformer", [(tiny_set.lora, 0.6)], dtype=torch.bfloat16)
    ref = reference_state_dict(path, "transformer", torch.bfloat16,
                               [LoraPathStrengthAndSDOps(str(tiny_set.lora), 0.6, LTXV_LORA_COMFY_RENAMING_MAP)])
    # the reference leaves the ff weights (no LoRA) in fp8 inside plain Linears (see the helper's docstring)
    assert ref["transformer_blocks.0.ff.net.2.weight"].dtype == torch.float8_e4m3fn
    assert_bit_identical(ours.module.state_dict(), undo_reference_lora_dtype_quirk(ref, ours.module.state_dict()))


def test_lora_on_fp8_kept_layers_runs_unfused(fp8_file, tiny_set):
    path, _ = fp8_file
    kept = load_component_with_loras(path, "transformer", [(tiny_set.lora, 0.6)], dtype=torch.float32, fp8="keep")
    upcast = load_component(path, "transformer", dtype=torch.float32, fp8="upcast").module
    layer = kept.module.get_submodule(LAYER)
    assert isinstance(layer, Fp8Linear) and layer.weight.dtype == torch.float8_e4m3fn
    report = kept.lora_report
    assert report.unfused[str(tiny_set.lora)] == report.applied[str(tiny_set.lora)]  # all targets are fp8 here
    lora = load_file(str(tiny_set.lora))
    down, up = (lora[f"diffusion_model.{LAYER}.lora_{n}.weight"].float() for n in "AB")
    weight = upcast.state_dict()[f"{LAYER}.weight"] + 0.6 * up @ down
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(3))
    expected = torch.nn.functional.linear(x, weight, upcast.state_dict()[f"{LAYER}.bias"])
    assert (layer(x) - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    with pytest.raises(ValueError, match=r"mode='fused' with quantized_weights='keep': layers kept quantized"):
        load_component_with_loras(path, "transformer", [(tiny_set.lora, 0.6)], quantized_weights="keep", mode="fused")


@pytest.mark.oracle
def test_kept_fp8_weights_equal_the_reference_fp8_cast_policy(tiny_set, fp8_file):
    """The reference's fp8-cast policy (down-cast at load) yields the same fp8 weights the fp8 file holds."""
    from ltx_core.loader.sd_ops import SDOps
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.quantization import QuantizationPolicy

    policy = QuantizationPolicy.fp8_cast()
    sd_ops = SDOps("chain", (*LTXV_MODEL_COMFY_RENAMING_MAP.mapping, *policy.sd_ops.mapping))
    ref = SingleGPUModelBuilder(LTXModelConfigurator, str(tiny_set.ltx23), sd_ops,
                                module_ops=policy.module_ops).build(device=torch.device("cpu")).state_dict()
    path, _ = fp8_file
    ours = load_component(path, "transformer", dtype=torch.bfloat16, fp8="keep").module.state_dict()
    fp8_keys = [k for k, v in ours.items() if v.dtype == torch.float8_e4m3fn]
    assert fp8_keys and all(ref[k].dtype == torch.float8_e4m3fn for k in fp8_keys)
    for key in fp8_keys:
        assert torch.equal(ours[key].view(torch.uint8), ref[key].view(torch.uint8)), key


def _transformer_inputs(dtype: torch.dtype):
    from aiprod.aiprod_core.transformer import ModalityInput

    gen = torch.Generator().manual_seed(4)
    frames, height, width = 2, 2, 2
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    starts = torch.stack([f.flatten() * 8.0 / 24.0, h.flatten() * 32.0, w.flatten() * 32.0])  # (3, T)
    video_positions = torch.stack([starts, starts + torch.tensor([8.0 / 24.0, 32.0, 32.0])[:, None]], -1)[None]
    audio_starts = torch.arange(4, dtype=torch.float32) * 0.04
    audio_positions = torch.stack([audio_starts, audio_starts + 0.04], dim=-1)[None, None]  # (1, 1, T, 2)
    streams = []
    for tokens, positions, width_ in ((8, video_positions, 64), (4, audio_positions, 32)):
        sigma = torch.tensor([0.6])
        streams.append(ModalityInput(latent=torch.randn(1, tokens, 128, generator=gen).to(dtype), sigma=sigma,
                                     timesteps=sigma[:, None].expand(1, tokens), positions=positions,
                                     context=torch.randn(1, 5, width_, generator=gen).to(dtype)))
    return streams


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_whole_transformer_in_fp8_keep_mode_equals_the_upcast_load(fp8_file, dtype):
    path, _ = fp8_file
    kept = load_component(path, "transformer", dtype=dtype, fp8="keep").module
    upcast = load_component(path, "transformer", dtype=dtype, fp8="upcast").module
    video, audio = _transformer_inputs(dtype)
    with torch.no_grad():
        got, expected = kept(video, audio), upcast(video, audio)
    for ours, ref in ((got.video, expected.video), (got.audio, expected.audio)):
        assert torch.isfinite(ref).all()
        assert torch.equal(ours, ref)  # the same fp8 -> dtype cast, per call instead of once


def test_dtype_none_keeps_stored_dtypes_but_upcasts_fp8_to_bf16(fp8_file):
    path, tensors = fp8_file
    state = load_component(path, "transformer", dtype=None).module.state_dict()
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    key = f"{LAYER}.weight"
    assert torch.equal(state[key], tensors[f"model.diffusion_model.{key}"].to(torch.bfloat16))
