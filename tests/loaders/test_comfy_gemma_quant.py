"""Quantized ComfyUI Gemma files (``gemma_3_12B_it_fp4_mixed`` / ``_fp8_scaled``) load through the quantized-weights
loader, in both modes, and encode prompts exactly as a Gemma file holding the de-quantised weights.

The tiny ComfyUI-layout Gemma (embedded tokenizer, vision tower, projector) is quantized with the quant test
converters (`support.quant_files`): nvfp4 for most Linears, float8 for ``o_proj``, bf16 ``down_proj``
(``fp4_mixed``), every Linear float8 (``fp8_scaled``, with ``comfy_quant`` markers, the ``_quantization_metadata``
header, or the legacy ``scaled_fp8`` marker). The reference file holds each quantized weight as comfy-kitchen's
eager backend de-quantises it (float32); ``upcast``, ``keep`` and the reference give equal hidden states (same
weights, same float32 matmuls). Against the bf16 original the de-quantised weights stay within the formats' own
rounding: float8 e4m3 |err| <= |w| * 2^-4 + scale * 2^-10 (3 mantissa bits, round to nearest; subnormal step
2^-9 * scale), nvfp4 |err| <= block amax / 6 * (1 + 2^-4) (the largest E2M1 gap 4 -> 6 is 2 steps of the block
scale, amax / 6, itself rounded to fp8 within 2^-4).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from support import comfy_gemma as cg

from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.quant.linear import QuantLinear
from aiprod.loaders.text_encoder_files import check_gemma, load_gemma

PROMPTS = ["A red fox trots through fresh snow", "", "Ünïcödé 東京 😀 <start_of_turn>"]
CASES = [("fp4_mixed", "comfy_quant"), ("fp4_mixed", "_quantization_metadata"), ("fp8_scaled", "comfy_quant"),
         ("fp8_scaled_legacy", "comfy_quant")]
LAYOUTS = {"nvfp4": "TensorCoreNVFP4Layout", "float8_e4m3fn": "TensorCoreFP8Layout",
           "scaled_fp8": "TensorCoreFP8Layout"}


@pytest.fixture(scope="module")
def weights():
    model = cg.spiece_model()
    return model, cg.gemma_text_tensors(cg.piece_count(model) + 16)


def _kitchen(tensors: dict[str, torch.Tensor], layer: str, kind: str, shape) -> torch.Tensor:
    """comfy-kitchen's eager de-quantisation of one layer, float32 (the oracle)."""
    from comfy_kitchen.tensor import QuantizedTensor, get_layout_class

    layout = LAYOUTS[kind]
    if kind == "nvfp4":
        params = {"scale": tensors[f"{layer}.weight_scale_2"], "block_scale": tensors[f"{layer}.weight_scale"]}
    else:
        params = {"scale": tensors[f"{layer}.{'scale_weight' if kind == 'scaled_fp8' else 'weight_scale'}"]}
    cls = get_layout_class(layout)
    qt = QuantizedTensor(tensors[f"{layer}.weight"], layout,
                         cls.Params(orig_dtype=torch.float32, orig_shape=tuple(shape), **params))
    return qt.dequantize()


def _files(tmp_path, weights, recipe, carrier):
    model, text = weights
    original = cg.comfy_gemma_tensors(model, text)
    quantized, metadata, formats = cg.quantize_comfy_gemma(original, recipe, carrier)
    folder = tmp_path / "text_encoders"
    folder.mkdir(exist_ok=True)
    path = folder / f"gemma_3_12B_it_{recipe}.safetensors"
    save_file(quantized, str(path), metadata=metadata)
    reference = dict(original)
    for layer, kind in formats.items():
        reference[f"{layer}.weight"] = _kitchen(quantized, layer, kind, original[f"{layer}.weight"].shape)
    ref_path = tmp_path / "reference" / "gemma_3_12B_it_dequantized.safetensors"
    ref_path.parent.mkdir(exist_ok=True)
    save_file(reference, str(ref_path))
    return path, ref_path, original, quantized, formats


def _bound(kind: str, weight: torch.Tensor, quantized: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    if kind == "nvfp4":
        rows, cols = weight.shape
        amax = weight.abs().reshape(rows, cols // 16, 16).amax(-1, keepdim=True).expand(-1, -1, 16)
        return amax.reshape(rows, cols) / 6 * (1 + 2 ** -4) + 1e-7
    scale = quantized[f"{layer}.{'scale_weight' if kind == 'scaled_fp8' else 'weight_scale'}"].float()
    return weight.abs() * 2 ** -4 + scale * 2 ** -10 + 1e-7


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(t.nbytes for t in [*module.parameters(), *module.buffers()])


@pytest.mark.oracle
@pytest.mark.parametrize(("recipe", "carrier"), CASES, ids=[f"{r}-{c}" for r, c in CASES])
def test_quantized_comfy_gemma_loads_in_both_modes(tmp_path, weights, recipe, carrier):
    path, ref_path, original, quantized, formats = _files(tmp_path, weights, recipe, carrier)
    counts = {name: list(formats.values()).count(kind) for kind, name in (
        ("nvfp4", "nvfp4"), ("float8_e4m3fn", "float8_e4m3fn"), ("scaled_fp8", "scaled_fp8")) if kind in
        formats.values()}
    assert check_gemma(path, "keep").quantization == counts
    upcast = load_gemma(path, dtype=torch.float32, quantized_weights="upcast")
    keep = load_gemma(path, dtype=torch.float32, quantized_weights="keep")
    reference = load_gemma(ref_path, dtype=torch.float32)
    state = upcast.encoder.state_dict()
    for layer, kind in formats.items():  # the formats' own rounding against the bf16 original
        weight = original[f"{layer}.weight"].float()
        error = (state[f"{layer}.weight"] - weight).abs()
        assert (error <= _bound(kind, weight, quantized, layer)).all(), (layer, kind)
        held = keep.encoder.get_submodule(layer)
        assert isinstance(held, QuantLinear) and held.weight.dtype == quantized[f"{layer}.weight"].dtype
        stored = sum(t.nbytes for k, t in quantized.items() if k.startswith(layer + ".") and
                     not k.endswith(".comfy_quant") and not k.endswith("scaled_fp8"))
        assert _module_bytes(held) == stored  # keep holds the file's quantized bytes, no dense copy
    dense = [k.removesuffix(".weight") for k in original if k.endswith("_proj.weight") and
             k.removesuffix(".weight") not in formats and k.startswith("model.")]
    assert all(isinstance(keep.encoder.get_submodule(layer), torch.nn.Linear) for layer in dense)
    assert _module_bytes(keep.encoder) < _module_bytes(upcast.encoder)
    ids, mask = upcast.tokenizer(PROMPTS)
    with torch.no_grad():
        outputs = [m.encoder(ids, mask) for m in (upcast, keep, reference)]
    for ours, kept, ref in zip(*outputs, strict=True):
        assert torch.equal(ours, kept) and torch.equal(ours, ref)


def test_quantized_layers_of_an_unknown_format_are_refused(tmp_path, weights):
    model, text = weights
    quantized, _, _ = cg.quantize_comfy_gemma(cg.comfy_gemma_tensors(model, text), "fp8_scaled")
    layer = "model.layers.0.self_attn.q_proj"
    quantized[f"{layer}.comfy_quant"] = torch.tensor(list(json.dumps({"format": "svdquant_w4a4"}).encode()),
                                                     dtype=torch.uint8)
    path = tmp_path / "gemma_3_12B_it_svdq.safetensors"
    save_file(quantized, str(path))
    with pytest.raises(CheckpointFormatError, match=rf"gemma_3_12B_it_svdq\.safetensors: stores layer `{layer}` "
                                                    r"as 'svdquant_w4a4' \(a known ComfyUI format AIPROD does not "
                                                    r"de-quantise"):
        check_gemma(path)
    quantized, _, _ = cg.quantize_comfy_gemma(cg.comfy_gemma_tensors(model, text), "fp8_scaled")
    quantized[f"{layer}.weight"] = quantized[f"{layer}.weight"].view(torch.uint8)  # bytes with no marker
    del quantized[f"{layer}.comfy_quant"], quantized[f"{layer}.weight_scale"], quantized[f"{layer}.input_scale"]
    save_file(quantized, str(path))
    with pytest.raises(CheckpointFormatError, match=rf"stores `{layer}\.weight` as U8 with no quantization marker"):
        check_gemma(path)
    with pytest.raises(ValueError, match=r"quantized_weights='fp4', expected one of upcast, keep"):
        check_gemma(path, "fp4")
