"""LoRAs on transformers whose layers stay quantized (``quantized_weights = keep``), through the nodes a user picks:
the AIPROD Diffusion Model Loader on a ComfyUI ``comfy_quant`` fp8 / NVFP4 / int8 file or a GGUF, then the AIPROD
LoRA Loader.

- A low-rank LoRA (an fp8 file, alpha != rank) plus a ``.diff_b`` bias patch works on a kept layer: the weight
  stays quantized, a run-time adapter adds ``x A^T B^T (strength alpha / rank)`` and the bias takes the patch.
  Bound: the kept layer de-quantises its weight in float32 for its matmul, the expectation uses the same
  de-quantised weight (from the ``upcast`` load) with the update merged: float32 reassociation only, <= 1e-5 of
  the largest output.
- DoRA, LoKr, LoHa and a weight ``.diff`` cannot run beside a quantized weight without de-quantising it: the LoRA
  node refuses them before anything loads, naming the LoRA file, the patch kind, the layer, its format and what
  to do (``upcast``). With ``upcast`` the node takes them, and each fused weight equals ComfyUI's
  ``calculate_weight`` on the de-quantised weight bit for bit.
- A workflow saved before the rename (``fp8: keep`` in its API prompt) still keeps the layers, LoRA adapters on
  them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from support import quant_files as qf
from support.comfy_folders import model_folders

from aiprod.loaders.errors import LoraMismatchError
from aiprod.loaders.quant.linear import QuantLinear

LAYER = "transformer_blocks.0.attn1.to_q"  # (64, 64)
WIDE = "transformer_blocks.0.ff.net.2"  # (64, 256): K-quants pack rows in blocks of 256 (narrower rows stay F32)
RANK, ALPHA, STRENGTH = 4, 2.0, 0.7
# case id -> (the layer's format name in the refusal, the layer the LoRAs patch)
KINDS = {"comfy_quant-float8_e4m3fn": ("float8_e4m3fn", LAYER), "comfy_quant-nvfp4": ("nvfp4", LAYER),
         "comfy_quant-int8_tensorwise": ("int8_tensorwise", LAYER), "gguf-Q8_0": ("Q8_0", LAYER),
         "gguf-Q4_K": ("Q4_K", WIDE)}


@pytest.fixture
def folders(comfy_cpu, tmp_path):
    """ComfyUI's diffusion_models / loras folders -> empty tmp folders (restored afterwards)."""
    for name in ("diffusion_models", "loras"):
        (tmp_path / name).mkdir()
    with model_folders({name: tmp_path / name for name in ("diffusion_models", "loras")}):
        yield tmp_path


def _quantized_file(tiny_set, folder, case: str):
    if case.startswith("gguf-"):
        path, _, _ = qf.write_gguf(tiny_set.ltx23, folder / f"tiny-{case}.gguf", case.removeprefix("gguf-"))
    else:
        path, _ = qf.quantize_file(tiny_set.ltx23, folder / f"tiny-{case}.safetensors",
                                   case.removeprefix("comfy_quant-"), transformer_only=True)
    return path.name  # one folder: the combo value is ComfyUI's own file name


def _lora_files(folder, out_features: int, in_features: int, layer: str = LAYER) -> dict[str, dict[str, torch.Tensor]]:
    """One file per kind on ``layer``: low_rank (fp8, alpha != rank, plus a .diff_b), DoRA, LoKr, LoHa, diff."""
    gen = torch.Generator().manual_seed(12)
    stem = f"diffusion_model.{layer}"

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    pair = {f"{stem}.lora_A.weight": rand(RANK, in_features), f"{stem}.lora_B.weight": rand(out_features, RANK)}
    files = {
        "low_rank": {**{k: v.to(torch.float8_e4m3fn) for k, v in pair.items()}, f"{stem}.alpha": torch.tensor(ALPHA),
                     f"{stem}.diff_b": rand(out_features)},
        "DoRA": {**pair, f"{stem}.alpha": torch.tensor(ALPHA), f"{stem}.dora_scale": 1 + rand(out_features, 1)},
        "LoKr": {f"{stem}.lokr_w1": 1 + rand(2, 2), f"{stem}.lokr_w2": rand(out_features // 2, in_features // 2)},
        "LoHa": {f"{stem}.hada_w1_a": rand(out_features, 2), f"{stem}.hada_w1_b": rand(2, in_features),
                 f"{stem}.hada_w2_a": rand(out_features, 2), f"{stem}.hada_w2_b": rand(2, in_features)},
        "diff": {f"{stem}.diff": rand(out_features, in_features)},
    }
    for name, tensors in files.items():
        save_file(tensors, str(folder / f"{name}.safetensors"))
    return files


@pytest.mark.parametrize("case", list(KINDS))
def test_loras_on_kept_quantized_layers_run_or_are_refused_at_the_node(folders, tiny_set, case):
    import folder_paths

    from aiprod.nodes.loader_nodes import AIPRODDiffusionModelLoader, AIPRODLoraLoader

    form, layer_name = KINDS[case]
    stem = f"diffusion_model.{layer_name}"
    choice = _quantized_file(tiny_set, folders / "diffusion_models", case)
    kept = AIPRODDiffusionModelLoader.execute(choice, "fp32", "keep").args[0]
    dense = AIPRODDiffusionModelLoader.execute(choice, "fp32", "upcast").args[0].module().get_submodule(layer_name)
    out_features, in_features = dense.weight.shape
    files = _lora_files(folders / "loras", out_features, in_features, layer_name)
    folder_paths.filename_list_cache.clear()

    (with_lora,) = AIPRODLoraLoader.execute(kept, "low_rank.safetensors", STRENGTH).args
    assert with_lora.quantized_weights == "keep" and not kept.lazy.loaded
    layer = with_lora.module().get_submodule(layer_name)
    assert isinstance(layer, QuantLinear) and layer.weight.element_size() == 1  # the quantized bytes
    assert len(layer.lora_adapters) == 1  # the weight stays quantized; the update runs beside it
    low_rank = files["low_rank"]
    down, up = (low_rank[f"{stem}.lora_{n}.weight"].float() for n in "AB")
    weight = dense.weight + STRENGTH * (ALPHA / RANK) * up @ down
    bias = dense.bias + STRENGTH * low_rank[f"{stem}.diff_b"]
    assert torch.equal(layer.bias, bias)  # biases are never quantized: the bias patch fuses (float32, as ComfyUI)
    x = torch.randn(3, in_features, generator=torch.Generator().manual_seed(13))
    expected = torch.nn.functional.linear(x, weight, bias)
    assert (layer(x) - expected).abs().max() <= 1e-5 * expected.abs().max()

    for kind in ("DoRA", "LoKr", "LoHa", "diff"):
        fresh = AIPRODDiffusionModelLoader.execute(choice, "fp32", "keep").args[0]
        with pytest.raises(LoraMismatchError) as info:
            AIPRODLoraLoader.execute(fresh, f"{kind}.safetensors", STRENGTH)
        message, lora = str(info.value), folders / "loras" / f"{kind}.safetensors"
        assert message.startswith(f"{lora}: has a {kind} patch ({stem}."), message
        assert f"for {layer_name}.weight, a layer kept quantized ({form}, quantized_weights 'keep')" in message
        assert message.endswith("Set quantized_weights to 'upcast' on the model loader (the layer is then "
                                "de-quantised once and takes any patch).")
        assert not fresh.lazy.loaded  # refused from the headers, before any weight is read


def test_upcast_quantized_layers_take_every_kind_like_comfyui(folders, tiny_set):
    """quantized_weights = upcast: DoRA / LoKr / LoHa / .diff fuse into the de-quantised weight as ComfyUI's
    calculate_weight does (float32, same order: bit for bit)."""
    import comfy.lora
    import folder_paths

    from aiprod.nodes.loader_nodes import AIPRODDiffusionModelLoader, AIPRODLoraLoader

    choice = _quantized_file(tiny_set, folders / "diffusion_models", "comfy_quant-nvfp4")
    model = AIPRODDiffusionModelLoader.execute(choice, "fp32", "upcast").args[0]
    plain = model.module().get_submodule(LAYER).weight.detach()
    files = _lora_files(folders / "loras", *plain.shape)
    folder_paths.filename_list_cache.clear()
    for kind in ("DoRA", "LoKr", "LoHa", "diff"):
        (with_lora,) = AIPRODLoraLoader.execute(model, f"{kind}.safetensors", STRENGTH).args
        fused = with_lora.module().get_submodule(LAYER).weight.detach()
        patches = comfy.lora.load_lora(files[kind], {f"diffusion_model.{LAYER}": "w.weight"}, log_missing=False)
        expected = comfy.lora.calculate_weight([(STRENGTH, patches["w.weight"], 1.0, None, None)], plain.clone(),
                                               "w.weight")
        assert torch.equal(fused, expected) and not torch.equal(fused, plain), kind


def test_a_workflow_saved_with_fp8_keep_keeps_layers_under_its_loras(folders, tiny_set):
    """An API prompt from before the rename (``fp8: keep`` on the loader) still keeps the layers quantized, and the
    LoRA node then puts its low-rank update beside them."""
    import folder_paths

    from aiprod.nodes.loader_nodes import AIPRODDiffusionModelLoader, AIPRODLoraLoader

    choice = _quantized_file(tiny_set, folders / "diffusion_models", "comfy_quant-float8_e4m3fn")
    prompt = {"3": {"class_type": "AIPRODDiffusionModelLoader",
                    "inputs": {"model_file": choice, "weight_dtype": "fp32", "fp8": "keep"}}}
    legacy = type("Saved", (AIPRODDiffusionModelLoader,), {"hidden": SimpleNamespace(prompt=prompt, unique_id="3")})
    model = legacy.execute(choice, "fp32").args[0]
    assert model.quantized_weights == "keep" == model.fp8  # the handle still answers to the former name
    _lora_files(folders / "loras", *AIPRODDiffusionModelLoader.execute(choice, "fp32", "upcast").args[0]
                .module().get_submodule(LAYER).weight.shape)
    folder_paths.filename_list_cache.clear()
    (with_lora,) = AIPRODLoraLoader.execute(model, "low_rank.safetensors", STRENGTH).args
    layer = with_lora.module().get_submodule(LAYER)
    assert isinstance(layer, QuantLinear) and len(layer.lora_adapters) == 1
    with pytest.raises(LoraMismatchError, match=r"a layer kept quantized \(float8_e4m3fn, quantized_weights 'keep'\)"):
        AIPRODLoraLoader.execute(model, "LoKr.safetensors", STRENGTH)
    # the loader API: quantized_weights, with fp8 (its former name) still read; a bad value is named
    from aiprod.loaders.lora_apply import check_transformer_lora

    lokr, path = folders / "loras" / "LoKr.safetensors", folders / "diffusion_models" / choice
    with pytest.raises(LoraMismatchError, match="a layer kept quantized"):
        check_transformer_lora(lokr, path, fp8="keep")
    check_transformer_lora(lokr, path, quantized_weights="upcast", fp8="keep")  # the new name wins
    with pytest.raises(ValueError, match=r"quantized_weights='fast', expected 'upcast' or 'keep'"):
        check_transformer_lora(lokr, path, "fast")  # type: ignore[arg-type]
