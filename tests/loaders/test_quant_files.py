"""Every quantized layout users have, built from the tiny reference checkpoints by our converters, loaded through
the node a user would pick (Checkpoint Loader for single files, Diffusion Model Loader for transformer-only
files) in both modes; each de-quantised weight equals the bf16 original within its format's own rounding (the
bound of each format is stated in `error_bound`), ``keep`` holds the quantized bytes (measured), ``keep`` and
``upcast`` compute the same transformer output, and each refusal names the file, the format and what to use.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from support import quant_files as qf
from support.comfy_folders import model_folders

from aiprod.loaders.component_loader import plan_load
from aiprod.loaders.quant.linear import QuantLinear
from aiprod.loaders.safetensors_header import read_header

PREFIX = qf.PREFIX
# (case id, converter kind, carrier, transformer-only file, generation)
CASES = [
    ("comfy_quant-float8_e4m3fn", "float8_e4m3fn", "comfy_quant", True, "ltx23"),
    ("comfy_quant-float8_e4m3fn-ltx2", "float8_e4m3fn", "comfy_quant", True, "ltx2"),
    ("comfy_quant-nvfp4", "nvfp4", "comfy_quant", True, "ltx23"),
    ("comfy_quant-mxfp8", "mxfp8", "comfy_quant", True, "ltx23"),
    ("comfy_quant-int8_tensorwise", "int8_tensorwise", "comfy_quant", True, "ltx23"),
    ("comfy_quant-int8_convrot", "int8_convrot", "comfy_quant", True, "ltx23"),
    ("quantization_metadata-nvfp4-checkpoint", "nvfp4", "_quantization_metadata", False, "ltx23"),
    ("quantization_metadata-int8_convrot-checkpoint", "int8_convrot", "_quantization_metadata", False, "ltx2"),
    ("legacy-scaled_fp8-checkpoint", "scaled_fp8", "comfy_quant", False, "ltx23"),
    ("lightricks-fp8-checkpoint", "lightricks_fp8", "comfy_quant", False, "ltx23"),
    ("lightricks-nvfp4-checkpoint", "lightricks_nvfp4", "comfy_quant", False, "ltx23"),
]


def error_bound(kind: str, weight: torch.Tensor) -> torch.Tensor:
    """Per-element bound of |de-quantised - original| for ``weight`` (out, in) float32 quantized as ``kind``."""
    a, (rows, cols) = weight.abs(), weight.shape
    if kind in ("float8_e4m3fn", "scaled_fp8", "lightricks_fp8"):
        # e4m3 keeps 3 mantissa bits: round-to-nearest is within 2^-4 relative; below 2^-6 (x scale) the
        # subnormal step is 2^-9 x scale, so half of it absolute. Scale = amax / 448.
        scale = a.amax() / qf.F8_MAX
        return 2**-4 * a + 2**-10 * scale
    if kind in ("nvfp4", "lightricks_nvfp4"):
        # E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6} x the block's scale: the widest gap (4 -> 6) is 2 units, so the
        # rounding error is <= 1 unit. The unit is tensor scale x e4m3(block max / 6 / tensor scale): <= 2^-4
        # relative above the max (plus the clamp at 6 it can cause) -> (block max / 6)(1 + 2^-3), and an e4m3
        # subnormal block scale is off by <= 2^-10 absolute -> 6 codes x tensor scale x 2^-10 (doubled).
        tensor_scale = a.amax() / (qf.F8_MAX * qf.F4_MAX)
        block = a.reshape(rows, cols // 16, 16).amax(-1, keepdim=True)
        return ((block / 6) * (1 + 2**-3) + 6 * tensor_scale * 2**-9).expand(rows, cols // 16, 16).reshape(rows, cols)
    if kind == "mxfp8":
        # e4m3 values x a power-of-two block scale 2^e >= block max / 448: 2^-4 relative, subnormals 2^-10 x 2^e.
        block = a.reshape(rows, cols // 32, 32).amax(-1, keepdim=True)
        exponent = torch.ceil(torch.log2((block / qf.F8_MAX).clamp(min=2.0**-126)))
        return 2**-4 * a + (2**-10 * torch.exp2(exponent)).expand(rows, cols // 32, 32).reshape(rows, cols)
    if kind == "int8_tensorwise":
        return torch.full_like(a, 0.5 * float(a.amax()) / qf.INT8_MAX)  # half a step of amax / 127
    if kind == "int8_convrot":
        # Rounded in the rotated basis (half a step of the row's rotated amax / 127); rotating back by the
        # orthonormal Hadamard (entries +-1/sqrt(g)) sums g such errors: <= sqrt(g) x half a step.
        group = qf.CONVROT_GROUP
        rotated = weight.reshape(rows, cols // group, group) @ qf.hadamard(group).T
        step = rotated.reshape(rows, cols).abs().amax(-1, keepdim=True) / qf.INT8_MAX
        return (math.sqrt(group) * step / 2).expand(rows, cols)
    raise KeyError(kind)


@pytest.fixture
def folders(comfy_cpu, tmp_path):
    """ComfyUI's checkpoints / diffusion_models folders -> empty tmp folders (restored afterwards)."""
    for name in ("checkpoints", "diffusion_models"):
        (tmp_path / name).mkdir()
    with model_folders({name: tmp_path / name for name in ("checkpoints", "diffusion_models")}):
        yield tmp_path


def _loader(transformer_only: bool):
    from aiprod.nodes.loader_nodes import AIPRODCheckpointLoader, AIPRODDiffusionModelLoader

    return (AIPRODDiffusionModelLoader, "diffusion_models") if transformer_only else (AIPRODCheckpointLoader,
                                                                                        "checkpoints")


def _load(node, choice: str, mode: str):
    return node.execute(choice, "fp32", mode).args[0].module()


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _inputs(generation: str):
    from aiprod.aiprod_core.transformer import ModalityInput

    gen = torch.Generator().manual_seed(4)
    f, h, w = torch.meshgrid(torch.arange(2), torch.arange(2), torch.arange(2), indexing="ij")
    starts = torch.stack([f.flatten() * 8.0 / 24.0, h.flatten() * 32.0, w.flatten() * 32.0])
    video_positions = torch.stack([starts, starts + torch.tensor([8.0 / 24.0, 32.0, 32.0])[:, None]], -1)[None]
    audio_starts = torch.arange(4, dtype=torch.float32) * 0.04
    audio_positions = torch.stack([audio_starts, audio_starts + 0.04], dim=-1)[None, None]
    streams = []
    audio_width = 64 if generation == "ltx2" else 32  # LTX-2 projects the caption inside the transformer
    for tokens, positions, width in ((8, video_positions, 64), (4, audio_positions, audio_width)):
        sigma = torch.tensor([0.6])
        streams.append(ModalityInput(latent=torch.randn(1, tokens, 128, generator=gen), sigma=sigma,
                                     timesteps=sigma[:, None].expand(1, tokens), positions=positions,
                                     context=torch.randn(1, 5, width, generator=gen)))
    return streams


@pytest.mark.parametrize(("kind", "carrier", "transformer_only", "generation"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_layout_loads_through_its_node_within_the_formats_rounding(folders, tiny_set, kind, carrier,
                                                                   transformer_only, generation):
    node, folder = _loader(transformer_only)
    path, originals = qf.quantize_file(tiny_set.checkpoint(generation), folders / folder / f"tiny-{kind}.safetensors",
                                       kind, carrier=carrier, transformer_only=transformer_only)
    choice = path.name  # one folder per loader: the combo value is ComfyUI's own file name
    assert choice in node.define_schema().inputs[0].options
    kept, upcast = _load(node, choice, "keep"), _load(node, choice, "upcast")
    plan = plan_load(path, "transformer", quantized_weights="keep")
    strip = "" if transformer_only else PREFIX
    layers = {k.removesuffix(".weight"): q for k, q in plan.quant_layers.items()}
    assert len(layers) == sum(qf.is_block_linear(PREFIX + k.removeprefix(PREFIX), v) for k, v in originals.items())
    held = 0
    for name, quant in layers.items():
        original = originals[f"{strip}{name}.weight"].float()
        layer, dense = kept.get_submodule(name), upcast.get_submodule(name)
        assert isinstance(layer, QuantLinear) and not isinstance(dense, QuantLinear)
        assert layer.weight.dtype not in (torch.float32, torch.bfloat16)  # the stored bytes, not a dense copy
        bound = error_bound(kind, original) * (1 + 1e-5) + 1e-7  # + float32 rounding of w / s and q x s
        assert ((dense.weight - original).abs() <= bound).all(), name
        assert torch.equal(layer.dequantize(torch.float32), dense.weight), name  # same numbers, per call or once
        held += sum(plan.header.tensors[k].nbytes for k in quant.tensors.values())
        held -= original.numel() * 4  # what the float32 dense layer holds for its weight
    # keep mode holds the file's quantized bytes (weights + scales) in place of the dense weights
    assert _nbytes(kept) == _nbytes(upcast) + held and held < 0
    with torch.no_grad():
        got, expected = kept(*_inputs(generation)), upcast(*_inputs(generation))
    assert torch.isfinite(expected.video).all() and torch.equal(got.video, expected.video)
    assert torch.equal(got.audio, expected.audio)


def test_keep_mode_layer_output_is_within_the_weight_bound(folders, tiny_set):
    """y = W x: with |W_q - W| <= E elementwise, |y_q - y| <= |x| E^T (float32 accumulation on top)."""
    node, folder = _loader(True)
    path, originals = qf.quantize_file(tiny_set.ltx23, folders / folder / "tiny-nvfp4.safetensors", "nvfp4",
                                       transformer_only=True)
    kept = _load(node, f"{folder}/{path.name}", "keep")
    name = "transformer_blocks.1.ff.net.2"
    layer, original = kept.get_submodule(name), originals[f"{name}.weight"].float()
    x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(8))
    exact = torch.nn.functional.linear(x, original, layer.bias)
    limit = x.abs() @ error_bound("nvfp4", original).T
    assert ((layer(x) - exact).abs() <= limit * (1 + 1e-4) + 1e-5).all()


def _node_error(folders, tensors, metadata, name="broken.safetensors"):
    from aiprod.nodes.loader_nodes import AIPRODDiffusionModelLoader

    path = qf.write_safetensors(folders / "diffusion_models" / name, tensors, metadata)
    with pytest.raises(ValueError) as info:
        AIPRODDiffusionModelLoader.execute(f"diffusion_models/{name}", "fp32", "keep")
    return str(info.value), path


@pytest.fixture
def transformer_only(folders, tiny_set):
    from safetensors.torch import load_file

    tensors = {k.removeprefix(PREFIX): v for k, v in load_file(str(tiny_set.ltx23)).items() if k.startswith(PREFIX)}
    return tensors, dict(read_header(tiny_set.ltx23).metadata)


LAYER = "transformer_blocks.0.attn1.to_q"


def test_a_format_we_do_not_read_is_refused_at_the_node_by_name(folders, transformer_only):
    tensors, metadata = transformer_only
    tensors.update({f"{LAYER}.weight": torch.zeros(64, 32, dtype=torch.int8),
                    f"{LAYER}.weight_scale": torch.ones(64, 1),
                    f"{LAYER}.comfy_quant": qf._json_tensor({"format": "convrot_w4a4"})})
    message, path = _node_error(folders, tensors, metadata)
    assert message.startswith(f"{path}: stores layer `{LAYER}` as 'convrot_w4a4' (a known ComfyUI format AIPROD "
                              "does not de-quantise; supported: float8_e4m3fn, float8_e5m2, nvfp4, mxfp8, "
                              "int8_tensorwise).")
    assert "Use the bf16 / fp8 release of this model" in message


def test_an_integer_weight_without_a_marker_is_refused(folders, transformer_only):
    tensors, metadata = transformer_only
    tensors.update({f"{LAYER}.weight": torch.zeros(64, 64, dtype=torch.int8), f"{LAYER}.weight_scale": torch.ones(())})
    message, path = _node_error(folders, tensors, metadata)
    assert f"{path}: stores layer `{LAYER}` as I8 with a weight_scale but without a `comfy_quant` marker" in message


def test_a_broken_quantized_layer_is_refused_at_the_node_with_the_expected_layout(folders, transformer_only):
    tensors, metadata = transformer_only
    good = qf.quantize_nvfp4(tensors[f"{LAYER}.weight"].float())
    tensors.update({f"{LAYER}.{k}": v for k, v in good.items()})
    tensors[f"{LAYER}.weight"] = good["weight"][:, :16]  # half of each packed row lost
    tensors[f"{LAYER}.comfy_quant"] = qf._json_tensor({"format": "nvfp4"})
    message, path = _node_error(folders, tensors, metadata)
    assert message.startswith(f"{path}: stores layer `{LAYER}` as nvfp4 (comfy_quant) with a U8 [64, 16] weight; a "
                              "[64, 64] weight in nvfp4 is U8 [64, 32].")


def test_an_unknown_format_name_and_a_bad_marker_are_refused(folders, transformer_only):
    tensors, metadata = transformer_only
    tensors[f"{LAYER}.comfy_quant"] = qf._json_tensor({"format": "float3_magic"})
    message, _ = _node_error(folders, tensors, metadata)
    assert "as 'float3_magic' (an unknown format; supported:" in message
    tensors[f"{LAYER}.comfy_quant"] = torch.tensor(list(b"{not json"), dtype=torch.uint8)
    message, _ = _node_error(folders, tensors, metadata, "broken2.safetensors")
    assert f"has a `{LAYER}.comfy_quant` entry that is not valid JSON." in message


def test_workflows_saved_with_the_old_fp8_option_still_choose_keep(folders, tiny_set):
    """An API prompt from before the rename carries ``fp8``; the node reads it from its hidden prompt."""
    from aiprod.nodes.loader_nodes import AIPRODCheckpointLoader

    path, _ = qf.quantize_file(tiny_set.ltx23, folders / "checkpoints" / "old.safetensors", "lightricks_fp8")
    prompt = {"7": {"class_type": "AIPRODCheckpointLoader", "inputs": {"checkpoint": "checkpoints/old.safetensors",
                                                                       "weight_dtype": "fp32", "fp8": "keep"}}}
    legacy = type("Clone", (AIPRODCheckpointLoader,), {"hidden": SimpleNamespace(prompt=prompt, unique_id="7")})
    model = legacy.execute("checkpoints/old.safetensors", "fp32").args[0]
    assert model.fp8 == "keep"
    assert isinstance(model.module().get_submodule(LAYER), QuantLinear)
    prompt["7"]["inputs"]["fp8"] = "fast"
    with pytest.raises(ValueError, match=r"fp8='fast', expected one of upcast, keep \(now named quantized_weights\)"):
        legacy.execute("checkpoints/old.safetensors", "fp32")
    listed = AIPRODCheckpointLoader.INPUT_TYPES()["optional"]["quantized_weights"][0]
    assert listed == ["upcast", "keep"]  # the option list is the type: ComfyUI refuses 'fast' itself, on that input
    names = [i.id for i in AIPRODCheckpointLoader.define_schema().inputs]
    assert names == ["checkpoint", "weight_dtype", "quantized_weights", "weight_streaming"]  # widget order kept


def test_inspector_reports_the_quantization_of_each_part(folders, tiny_set):
    from aiprod.loaders.detect import describe_file, format_report

    path, _ = qf.quantize_file(tiny_set.ltx23, folders / "checkpoints" / "q.safetensors", "nvfp4")
    report = format_report(describe_file(path))
    layers = len(plan_load(path, "transformer").quant_layers)
    assert layers == 2 * 34 and f"Quantization: transformer: nvfp4 x{layers}" in report  # 34 Linears a block
    assert "Loads with: AIPROD Checkpoint Loader (models/checkpoints)" in report
    bad = qf.write_safetensors(folders / "checkpoints" / "w4.safetensors", {
        f"{PREFIX}{LAYER}.weight": torch.zeros(4, 4, dtype=torch.int8),
        f"{PREFIX}{LAYER}.comfy_quant": qf._json_tensor({"format": "awq_w4a16"})},
        {"config": json.dumps({"transformer": {}})})
    assert "Loads with: none: stores layer" in format_report(describe_file(bad))


@pytest.mark.parametrize("kind", ["nvfp4", "int8_convrot", "gguf-Q8_0"])
def test_loras_apply_to_quantized_layers_in_both_modes(tiny_set, tmp_path, kind):
    """keep: a run-time adapter beside each kept layer; upcast: fused into the de-quantised weight; same outputs."""
    from aiprod.loaders.component_loader import load_component
    from aiprod.loaders.lora import check_lora_fits
    from aiprod.loaders.lora_apply import load_component_with_loras

    if kind.startswith("gguf"):
        path, _, _ = qf.write_gguf(tiny_set.ltx23, tmp_path / "tiny.gguf", kind.removeprefix("gguf-"))
    else:
        path, _ = qf.quantize_file(tiny_set.ltx23, tmp_path / "tiny.safetensors", kind, transformer_only=True)
    check_lora_fits(tiny_set.lora, path)  # header only, quantized weights at their logical shapes
    kept = load_component_with_loras(path, "transformer", [(tiny_set.lora, 0.6)], dtype=torch.float32,
                                     quantized_weights="keep")
    fused = load_component_with_loras(path, "transformer", [(tiny_set.lora, 0.6)], dtype=torch.float32)
    plain = load_component(path, "transformer", dtype=torch.float32).module
    report = kept.lora_report
    applied, unfused = report.applied[str(tiny_set.lora)], report.unfused[str(tiny_set.lora)]
    quantized = {q.weight_key for q in plan_load(path, "transformer").quant_layers.values()}
    # adapters on the quantized layers (GGUF keeps tensors of <= 1024 values in F32: those get the LoRA fused)
    assert applied and set(unfused) == set(applied) & quantized and unfused
    layer = kept.module.get_submodule(LAYER)
    assert isinstance(layer, QuantLinear) and len(layer.lora_adapters) == 1
    from safetensors.torch import load_file

    lora = load_file(str(tiny_set.lora))
    down, up = (lora[f"diffusion_model.{LAYER}.lora_{n}.weight"].float() for n in "AB")
    base = plain.get_submodule(LAYER).weight  # the de-quantised weight
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(6))
    expected = torch.nn.functional.linear(x, base + 0.6 * up @ down, layer.bias)
    assert (layer(x) - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    # upcast: fused into the de-quantised weight (the delta computed in the LoRA's bf16, as the reference does)
    delta = fused.module.get_submodule(LAYER).weight - base
    assert torch.allclose(delta, 0.6 * up @ down, rtol=2**-7, atol=2**-7 * (0.6 * up @ down).abs().max().item())
