"""LoRA adapter kinds against ComfyUI's own formulas (the host's comfy.lora.calculate_weight as the oracle):
fp8 LoRA files, alpha / rank for every naming style, .diff / .diff_b / .set_weight, DoRA on both axes, LoKr,
LoHa, stacks of kinds; refusals of unsupported kinds and of patches a kept-quantized layer cannot take.

Tolerances: on a float32 model every kind computed in float32 is bit-identical to ComfyUI (the same float32
operations in the same order; ComfyUI's stochastic rounding only acts on 16-bit weights). Plain lora_A/lora_B
pairs keep the reference's order (``((strength * scale) * B) @ A``, in the LoRA's dtype) for bit parity with
ltx-core, so against ComfyUI's ``(strength * scale) * (B @ A)`` they differ by float32 rounding: <= 1e-6 of the
delta's largest entry plus one float32 ulp of the weight.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from support import tiny_configs as tc

from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import LoraMismatchError
from aiprod.loaders.fp8 import Fp8Linear
from aiprod.loaders.lora import LoraFormatError, check_lora_fits, read_lora
from aiprod.loaders.lora_apply import LoraAdapter, check_transformer_lora, load_component_with_loras
from aiprod.loaders.safetensors_header import read_header

FF = "transformer_blocks.1.ff.net.0.proj"  # (256, 64): out != in, so DoRA's two axes differ
A2V = "transformer_blocks.1.audio_to_video_attn.to_q"  # (32, 64)
TARGET = "transformer_blocks.1.audio_to_video_attn.to_v"  # the tiny LoRA's (32, 32) layer
RANK = 4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(*shape: int, seed: int, scale: float = 0.1) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed)) * scale


@pytest.fixture(scope="module")
def base(tiny_set) -> dict[str, torch.Tensor]:
    return load_component(tiny_set.ltx2, "transformer", dtype=torch.float32).module.state_dict()


def _save(tmp_path, name: str, tensors: dict[str, torch.Tensor]):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _fused(tiny_set, path, strength: float, dtype=torch.float32, **kwargs) -> dict[str, torch.Tensor]:
    loaded = load_component_with_loras(tiny_set.ltx2, "transformer", [(path, strength)], dtype=dtype, strict=True,
                                       **kwargs)
    assert not loaded.lora_report.unmatched
    return loaded.module.state_dict()


def comfy_weight(weight: torch.Tensor, stack: list[tuple[dict[str, torch.Tensor], str, float]],
                 param: str = "weight") -> torch.Tensor:
    """ComfyUI's result for ``weight`` patched by ``stack`` [(LoRA tensors, module name, strength)], in order."""
    import comfy.lora

    patches = []
    for tensors, stem, strength in stack:
        patch_dict = comfy.lora.load_lora(tensors, {stem: "layer.weight"}, log_missing=False)
        patches.append((strength, patch_dict[f"layer.{param}"], 1.0, None, None))
    return comfy.lora.calculate_weight(patches, weight.to(torch.float32).clone(), f"layer.{param}")


def _pair(layer: str, out_features: int, in_features: int, seed: int, dtype=torch.float32) -> dict:
    return {f"diffusion_model.{layer}.lora_A.weight": _rand(RANK, in_features, seed=seed).to(dtype),
            f"diffusion_model.{layer}.lora_B.weight": _rand(out_features, RANK, seed=seed + 1).to(dtype)}


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2], ids=["e4m3fn", "e5m2"])
def test_an_fp8_lora_file_is_up_cast_and_fused(tiny_set, tmp_path, base, comfy_cpu, fp8):
    """Kijai's ``..._fp8`` LoRAs: a real fp8 file (F8 dtypes in its header) fuses like ComfyUI; before, the fused
    delta ``up * strength`` raised '"mul_cpu_reduced_float" not implemented for Float8' when the model loaded."""
    tensors = {k: v.to(fp8) for k, v in load_file(str(tiny_set.lora)).items()}
    path = _save(tmp_path, "lora_fp8.safetensors", tensors)
    assert {info.dtype for info in read_header(path).tensors.values()} == {"F8_E4M3" if fp8 == torch.float8_e4m3fn
                                                                             else "F8_E5M2"}
    fused = _fused(tiny_set, path, 0.7)
    stem = f"diffusion_model.{TARGET}"
    expected = comfy_weight(base[f"{TARGET}.weight"], [(tensors, stem, 0.7)])
    assert torch.equal(fused[f"{TARGET}.weight"], expected)
    down, up = (tensors[f"{stem}.lora_{n}.weight"].float() for n in "AB")
    assert torch.allclose(expected, base[f"{TARGET}.weight"] + 0.7 * up @ down, rtol=0, atol=1e-6)
    bf16 = _fused(tiny_set, path, 0.7, dtype=torch.bfloat16)  # round to nearest once (ComfyUI: stochastically)
    assert torch.equal(bf16[f"{TARGET}.weight"], comfy_weight(base[f"{TARGET}.weight"].bfloat16(),
                                                              [(tensors, stem, 0.7)]).bfloat16())
    # run-time adapters (layers kept quantized) take fp8 LoRA tensors too: up-cast once
    unfused = load_component_with_loras(tiny_set.ltx2, "transformer", [(path, 0.7)], dtype=torch.float32,
                                        mode="unfused").module
    layer = unfused.get_submodule(TARGET)
    assert all(a.down.dtype == torch.float32 for a in layer.lora_adapters if isinstance(a, LoraAdapter))
    x = torch.randn(3, layer.in_features, generator=_gen(9))
    exact = torch.nn.functional.linear(x, expected, base[f"{TARGET}.bias"])
    assert (layer(x) - exact).abs().max() <= 1e-5 * exact.abs().max()


def _kj_resized(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """KJNodes' LoraReduceRank facts: merge up @ down (no alpha in the source: scale 1), SVD, keep a per-layer
    rank r (here 4 or 2 alternately), up = U sqrt(S), down = sqrt(S) Vh, ``<stem>.alpha`` = scale * r, every
    tensor (alpha included) saved in the output dtype."""
    out = {}
    downs = sorted(k for k in tensors if k.endswith(".lora_A.weight"))
    for i, down_key in enumerate(downs):
        stem = down_key.removesuffix(".lora_A.weight")
        merged = tensors[f"{stem}.lora_B.weight"].float() @ tensors[down_key].float()
        u, s, vh = torch.linalg.svd(merged, full_matrices=False)
        rank = RANK if i % 2 == 0 else RANK // 2
        root = torch.sqrt(s[:rank])
        out[f"{stem}.lora_B.weight"] = (u[:, :rank] * root).to(dtype)
        out[f"{stem}.lora_A.weight"] = (root[:, None] * vh[:rank]).to(dtype)
        out[f"{stem}.alpha"] = torch.tensor(1.0 * rank).to(dtype)
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn], ids=["bf16", "fp8"])
def test_kjnodes_resized_dynamic_loras(tiny_set, tmp_path, base, comfy_cpu, dtype):
    """``..._resized_dynamic_fro09_avg_rank_N_{bf16,fp8}``: per-layer ranks, alpha = rank (scale 1), stored in
    bf16 or fp8 (alpha too). Fused like ComfyUI: fp8 bit-identical (float32 path); bf16 pairs keep the reference's
    order, <= 2**-7 of the largest delta entry from ComfyUI's float32 product."""
    source = load_file(str(tiny_set.lora))
    tensors = _kj_resized(source, dtype)
    path = _save(tmp_path, "resized.safetensors", tensors)
    ranks = {p.rank for p in read_lora(path).patches}
    assert ranks == {RANK, RANK // 2}
    fused = _fused(tiny_set, path, 1.0)
    for down_key in [k for k in tensors if k.endswith(".lora_A.weight")]:
        stem = down_key.removesuffix(".lora_A.weight")
        key = stem.removeprefix("diffusion_model.") + ".weight"
        comfy = comfy_weight(base[key], [(tensors, stem, 1.0)])
        delta = (comfy - base[key]).abs().max()
        bound = 0.0 if dtype == torch.float8_e4m3fn else 2**-7 * delta
        assert (fused[key] - comfy).abs().max() <= bound, key
        if tensors[down_key].shape[0] == RANK:  # full rank kept: the source LoRA's delta, up to storage rounding
            original = source[f"{stem}.lora_B.weight"].float() @ source[down_key].float()
            assert (fused[key] - base[key] - original).abs().max() <= 0.1 * original.abs().max()


@pytest.mark.parametrize("style", ["comfy", "peft_default", "diffusers", "kohya", "lora_dot"])
def test_alpha_scales_every_naming_style_as_comfyui_does(tiny_set, tmp_path, base, comfy_cpu, style):
    """alpha / rank applies to lora_A / lora_B too (it used to apply to kohya names only); alpha 2 on rank 4
    halves the delta that the same file without alpha gives."""
    down, up = _rand(RANK, 64, seed=1), _rand(256, RANK, seed=2)
    names = {"comfy": (f"diffusion_model.{FF}", ".lora_A.weight", ".lora_B.weight"),
             "peft_default": (f"transformer.{FF}", ".lora_A.default.weight", ".lora_B.default.weight"),
             "diffusers": (f"transformer.{FF}", ".lora_A.weight", ".lora_B.weight"),
             "kohya": ("lora_unet_" + FF.replace(".", "_"), ".lora_down.weight", ".lora_up.weight"),
             "lora_dot": (f"diffusion_model.{FF}", ".lora.down.weight", ".lora.up.weight")}
    stem, down_suffix, up_suffix = names[style]
    tensors = {stem + down_suffix: down, stem + up_suffix: up, f"{stem}.alpha": torch.tensor(2.0)}
    fused = _fused(tiny_set, _save(tmp_path, "alpha.safetensors", tensors), 0.8)[f"{FF}.weight"]
    comfy = comfy_weight(base[f"{FF}.weight"], [(tensors, stem, 0.8)])
    delta = 0.8 * 2.0 / RANK * up @ down
    assert (fused - comfy).abs().max() <= 1e-6 * delta.abs().max() + torch.finfo(torch.float32).eps * comfy.abs().max()
    without_alpha = {k: v for k, v in tensors.items() if not k.endswith(".alpha")}
    old = _fused(tiny_set, _save(tmp_path, "no_alpha.safetensors", without_alpha), 0.8)[f"{FF}.weight"]
    assert (old - base[f"{FF}.weight"] - 2 * (fused - base[f"{FF}.weight"])).abs().max() <= 1e-6
    assert (fused - old).abs().max() > 0.1 * delta.abs().max()  # what the old behaviour (alpha ignored) gave


def test_diff_and_diff_b_patch_weights_biases_norms_and_tables(tiny_set, tmp_path, base, comfy_cpu):
    """.diff on a weight, a 1-D norm weight and a bare parameter (scale_shift_table); .diff_b on a bias."""
    q_norm, table = "transformer_blocks.0.attn1.q_norm", "transformer_blocks.1.scale_shift_table"
    tensors = {f"diffusion_model.{FF}.diff": _rand(256, 64, seed=3, scale=0.01).half(),
               f"diffusion_model.{FF}.diff_b": _rand(256, seed=4, scale=0.01),
               f"diffusion_model.{q_norm}.diff": _rand(64, seed=5, scale=0.01),
               f"diffusion_model.{table}.diff": _rand(6, 64, seed=6, scale=0.01)}
    path = _save(tmp_path, "diff.safetensors", tensors)
    assert read_lora(path).kinds == ("diff",)
    fused = _fused(tiny_set, path, 0.5)
    checks = [(f"{FF}.weight", FF, "weight"), (f"{FF}.bias", FF, "bias"), (f"{q_norm}.weight", q_norm, "weight")]
    for key, layer, param in checks:
        assert torch.equal(fused[key], comfy_weight(base[key], [(tensors, f"diffusion_model.{layer}", 0.5)], param))
    assert torch.equal(fused[table], base[table] + 0.5 * tensors[f"diffusion_model.{table}.diff"])
    untouched = [k for k in base if k not in {c[0] for c in checks} | {table}]
    assert all(torch.equal(fused[k], base[k]) for k in untouched)


def test_set_weight_replaces_the_weight_like_comfyui(tiny_set, tmp_path, base, comfy_cpu):
    tensors = {f"diffusion_model.{A2V}.set_weight": _rand(32, 64, seed=7)}
    fused = _fused(tiny_set, _save(tmp_path, "set.safetensors", tensors), 0.3)
    assert torch.equal(fused[f"{A2V}.weight"], comfy_weight(base[f"{A2V}.weight"],
                                                            [(tensors, f"diffusion_model.{A2V}", 0.3)]))
    assert torch.equal(fused[f"{A2V}.weight"], tensors[f"diffusion_model.{A2V}.set_weight"])


@pytest.mark.parametrize("axis", ["output", "input"])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_dora_uses_comfyui_weight_norm_semantics(tiny_set, tmp_path, base, comfy_cpu, axis, strength):
    """dora_scale (out, 1) = wd_on_output (row norm of the original weight), (1, in) = LyCORIS' default (column
    norm of W + delta); strength 1 returns W', other strengths W + s (W' - W)."""
    stem = f"diffusion_model.{FF}"
    shape = (256, 1) if axis == "output" else (1, 64)
    tensors = {**_pair(FF, 256, 64, seed=8), f"{stem}.alpha": torch.tensor(8.0),
               f"{stem}.dora_scale": 1.0 + _rand(*shape, seed=10)}
    path = _save(tmp_path, "dora.safetensors", tensors)
    assert read_lora(path).kinds == ("DoRA", "LoRA")
    fused = _fused(tiny_set, path, strength)[f"{FF}.weight"]
    assert torch.equal(fused, comfy_weight(base[f"{FF}.weight"], [(tensors, stem, strength)]))
    plain = comfy_weight(base[f"{FF}.weight"], [({k: v for k, v in tensors.items() if "dora" not in k}, stem,
                                                 strength)])
    assert (fused - plain).abs().max() > 1e-3  # the magnitude really changes the weight


def _lokr(variant: str) -> dict[str, torch.Tensor]:
    stem = f"diffusion_model.{FF}.lokr_"  # kron (4, 2) x (64, 32) = (256, 64)
    tensors = {"alpha": torch.tensor(3.0)}
    if variant in ("w1_full", "both_full", "cp"):
        tensors["w1"] = _rand(4, 2, seed=11, scale=1.0)
    else:
        tensors |= {"w1_a": _rand(4, 2, seed=11, scale=1.0), "w1_b": _rand(2, 2, seed=12, scale=1.0)}
    if variant == "both_full":
        tensors["w2"] = _rand(64, 32, seed=13)
    elif variant == "cp":  # Tucker core (rank, rank, 1, 1); w2_a (rank, out), w2_b (rank, in)
        tensors |= {"t2": _rand(3, 3, 1, 1, seed=13, scale=1.0), "w2_a": _rand(3, 64, seed=14),
                    "w2_b": _rand(3, 32, seed=15)}
    else:
        tensors |= {"w2_a": _rand(64, 3, seed=14), "w2_b": _rand(3, 32, seed=15)}
    return {(f"diffusion_model.{FF}.alpha" if k == "alpha" else stem + k): v for k, v in tensors.items()}


@pytest.mark.parametrize("variant", ["w1_full", "both_factorised", "both_full", "cp"])
def test_lokr_matches_comfyui(tiny_set, tmp_path, base, comfy_cpu, variant):
    tensors = _lokr(variant)
    path = _save(tmp_path, "lokr.safetensors", tensors)
    assert read_lora(path).kinds == ("LoKr",)
    fused = _fused(tiny_set, path, 0.9)[f"{FF}.weight"]
    assert (fused - base[f"{FF}.weight"]).abs().max() > 1e-3
    if variant == "cp":
        # ComfyUI 0.3.75 (torch 2.11) logs "view size is not compatible" here and leaves the weight unchanged:
        # torch.kron rejects the non-contiguous einsum result. We apply its formula on a contiguous copy.
        get = {n: tensors[f"diffusion_model.{FF}.lokr_{n}"] for n in ("w1", "t2", "w2_a", "w2_b")}
        w2 = torch.einsum("i j k l, j r, i p -> p r k l", get["t2"], get["w2_b"], get["w2_a"]).contiguous()
        diff = torch.kron(get["w1"][:, :, None, None], w2).reshape(256, 64)
        assert torch.equal(fused, base[f"{FF}.weight"] + (0.9 * 3.0 / 3) * diff)
        return
    assert torch.equal(fused, comfy_weight(base[f"{FF}.weight"], [(tensors, f"diffusion_model.{FF}", 0.9)]))
    if variant == "both_full":  # no factorised factor: ComfyUI ignores alpha (scale 1)
        w1, w2 = (tensors[f"diffusion_model.{FF}.lokr_{n}"] for n in ("w1", "w2"))
        assert torch.equal(fused, base[f"{FF}.weight"] + 0.9 * torch.kron(w1, w2))


@pytest.mark.parametrize("cp", [False, True], ids=["plain", "cp"])
def test_loha_matches_comfyui(tiny_set, tmp_path, base, comfy_cpu, cp):
    stem = f"diffusion_model.{FF}"
    if cp:  # cores (rank, rank, 1, 1); w_a (rank, out), w_b (rank, in)
        parts = {"w1_a": (3, 256), "w1_b": (3, 64), "w2_a": (3, 256), "w2_b": (3, 64), "t1": (3, 3, 1, 1),
                 "t2": (3, 3, 1, 1)}
    else:
        parts = {"w1_a": (256, 3), "w1_b": (3, 64), "w2_a": (256, 3), "w2_b": (3, 64)}
    tensors = {f"{stem}.hada_{n}": _rand(*s, seed=20 + i, scale=0.5) for i, (n, s) in enumerate(parts.items())}
    tensors[f"{stem}.alpha"] = torch.tensor(1.5)
    tensors[f"{stem}.dora_scale"] = 1.0 + _rand(1, 64, seed=30)
    path = _save(tmp_path, "loha.safetensors", tensors)
    assert read_lora(path).kinds == ("DoRA", "LoHa")
    fused = _fused(tiny_set, path, 0.75)[f"{FF}.weight"]
    assert (fused - base[f"{FF}.weight"]).abs().max() > 1e-3
    assert torch.equal(fused, comfy_weight(base[f"{FF}.weight"], [(tensors, stem, 0.75)]))


def test_a_stack_of_kinds_is_applied_in_order_like_comfyui(tiny_set, tmp_path, base, comfy_cpu):
    stem = f"diffusion_model.{FF}"
    stack = [(_pair(FF, 256, 64, seed=40), 0.7),
             ({**_pair(FF, 256, 64, seed=42), f"{stem}.dora_scale": 1.0 + _rand(256, 1, seed=44)}, 1.0),
             (_lokr("both_factorised"), -0.4), ({f"{stem}.diff_b": _rand(256, seed=45)}, 0.5)]
    paths = [(_save(tmp_path, f"stack{i}.safetensors", t), s) for i, (t, s) in enumerate(stack)]
    loaded = load_component_with_loras(tiny_set.ltx2, "transformer", paths, dtype=torch.float32, strict=True)
    state = loaded.module.state_dict()
    comfy_stack = [(t, stem, s) for t, s in stack]
    assert torch.equal(state[f"{FF}.weight"], comfy_weight(base[f"{FF}.weight"], comfy_stack[:3]))
    assert torch.equal(state[f"{FF}.bias"], comfy_weight(base[f"{FF}.bias"], comfy_stack[3:], "bias"))


@pytest.mark.parametrize(("suffixes", "name"), [((".oft_blocks", ".rescale"), "OFT / BOFT"),
                                                ((".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight"), "GLoRA"),
                                                ((".lora_magnitude_vector",), "PEFT DoRA")])
def test_unsupported_adapter_kinds_are_refused_by_name(tiny_set, tmp_path, suffixes, name):
    tensors = {f"diffusion_model.{FF}{s}": torch.zeros(4, 4) for s in suffixes}
    tensors |= _pair(A2V, 32, 64, seed=50)  # a usable part does not make the file acceptable
    path = _save(tmp_path, "odd-adapter.safetensors", tensors)
    for attempt in (lambda: check_lora_fits(path, tiny_set.ltx2),
                    lambda: load_component_with_loras(tiny_set.ltx2, "transformer", [(path, 1.0)])):
        with pytest.raises(LoraFormatError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith(f"{path}: holds {name}") and "which AIPROD does not apply" in message
        assert f"diffusion_model.{FF}{suffixes[0]}" in message and "AIPROD applies LoRA" in message


def test_a_text_encoder_lora_at_the_transformer_names_the_node_to_use(tiny_set, tmp_path):
    prefix = "text_encoders.gemma3_12b.transformer.model.layers.0.self_attn.q_proj"
    path = _save(tmp_path, "gemma_lora.safetensors", {f"{prefix}.lora_up.weight": torch.zeros(64, 4),
                                                       f"{prefix}.lora_down.weight": torch.zeros(4, 64)})
    with pytest.raises(LoraMismatchError) as info:
        check_lora_fits(path, tiny_set.ltx2)
    assert str(info.value) == (
        f"{path}: is a text-encoder (Gemma) LoRA (LoRA patches in the ComfyUI text encoder "
        f"(text_encoders.gemma3_12b.transformer.*) naming, e.g. {prefix}.lora_down.weight), not a LoRA for the "
        "transformer. Apply it with the AIPROD Text Encoder LoRA Loader (on the text_encoder).")


FP8_LAYERS = (".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight", "ff.net.0.proj.weight")


@pytest.fixture
def fp8_checkpoint(tiny_set, tmp_path):
    tensors = load_file(str(tiny_set.ltx2))
    for key in [k for k in tensors if k.startswith("model.diffusion_model.transformer_blocks.")
                and k.endswith(FP8_LAYERS)]:
        tensors[key] = tensors[key].to(torch.float8_e4m3fn)
    path = tmp_path / "ltx-2-tiny-fp8.safetensors"
    save_file(tensors, str(path), metadata=read_header(tiny_set.ltx2).metadata)
    return path


def test_kept_fp8_layers_take_low_rank_and_bias_patches_and_refuse_the_rest(fp8_checkpoint, tmp_path):
    stem = f"diffusion_model.{FF}"
    plain = _save(tmp_path, "plain.safetensors", {**_pair(FF, 256, 64, seed=60, dtype=torch.float8_e4m3fn),
                                                  f"{stem}.diff_b": _rand(256, seed=62)})
    check_transformer_lora(plain, fp8_checkpoint, "keep")
    kept = load_component_with_loras(fp8_checkpoint, "transformer", [(plain, 0.5)], dtype=torch.float32,
                                     quantized_weights="keep").module
    upcast = load_component(fp8_checkpoint, "transformer", dtype=torch.float32).module.state_dict()
    layer = kept.get_submodule(FF)
    assert isinstance(layer, Fp8Linear) and len(layer.lora_adapters) == 1
    lora = load_file(str(plain))
    down, up = (lora[f"{stem}.lora_{n}.weight"].float() for n in "AB")
    weight = upcast[f"{FF}.weight"] + 0.5 * up @ down
    bias = upcast[f"{FF}.bias"] + 0.5 * lora[f"{stem}.diff_b"]
    assert torch.equal(layer.bias, bias)  # the bias is never quantized: the bias patch fuses
    x = torch.randn(3, 64, generator=_gen(61))
    expected = torch.nn.functional.linear(x, weight, bias)
    assert (layer(x) - expected).abs().max() <= 1e-5 * expected.abs().max()
    lokr = _save(tmp_path, "lokr.safetensors", _lokr("w1_full"))
    with pytest.raises(LoraMismatchError) as info:
        check_transformer_lora(lokr, fp8_checkpoint, "keep")
    assert str(info.value) == (
        f"{lokr}: has a LoKr patch ({stem}.lokr_w1) for model.{stem}.weight, a layer kept quantized (fp8, "
        "quantized_weights 'keep'); "
        "only plain low-rank LoRA patches can run beside a quantized weight. Set quantized_weights to 'upcast' on "
        "the model loader (the layer is then de-quantised once and takes any patch).")
    with pytest.raises(LoraMismatchError, match="a layer kept quantized"):
        load_component_with_loras(fp8_checkpoint, "transformer", [(lokr, 1.0)], quantized_weights="keep")
    check_transformer_lora(lokr, fp8_checkpoint, "upcast")  # de-quantised once: any patch applies
    fused = load_component_with_loras(fp8_checkpoint, "transformer", [(lokr, 1.0)], dtype=torch.float32)
    assert not torch.equal(fused.module.state_dict()[f"{FF}.weight"], upcast[f"{FF}.weight"])


def test_header_only_checks_see_every_kind_and_its_shape(tiny_set, tmp_path):
    """check_lora_fits reads the header only, and a LoKr / LoHa / diff of the wrong size is named with its shape."""
    tensors = _lokr("w1_full") | {f"diffusion_model.{A2V}.diff": torch.zeros(64, 64)}
    path = _save(tmp_path, "sizes.safetensors", tensors)
    shallow = check_lora_fits(path, tiny_set.ltx2)
    assert all(t.is_meta for p in shallow.patches for t in vars(p).values() if isinstance(t, torch.Tensor))
    loaded = load_component_with_loras(tiny_set.ltx2, "transformer", [(path, 1.0)])
    assert loaded.lora_report.unmatched[str(path)] == {
        f"diffusion_model.{A2V}.diff": f"fits a [64, 64] weight but model.diffusion_model.{A2V}.weight is [32, 64]"}
    assert tc.LORA_RANK == RANK
