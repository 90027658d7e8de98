"""LoRA nodes through their V3 schema in-process on the demo model set: the text-encoder LoRA node (registration,
tooltips, lazy stacking, fused into Gemma), an fp8 LoRA file through the model LoRA node, and the refusals at the
node: the other model's LoRA, an unsupported adapter kind, a patch a kept-fp8 layer cannot take."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from aiprod.loaders.errors import LoraMismatchError

REPO_ROOT = Path(__file__).resolve().parents[2]
COMFY_TE = "text_encoders.gemma3_12b.transformer."
RANK = 4


@pytest.fixture
def nodes(demo_folders):
    from aiprod.nodes import loader_nodes, lora_nodes, text_nodes

    return loader_nodes, lora_nodes, text_nodes


@pytest.fixture
def lora_dir(demo_folders, tmp_path):
    """An extra models/loras folder (restored with the others by ``demo_folders``)."""
    folder = tmp_path / "loras"
    folder.mkdir()
    demo_folders.folder_names_and_paths["loras"][0].append(str(folder))
    demo_folders.filename_list_cache.clear()
    return folder


def _gemma_lora(nodes, encoder, folder: Path, name: str, kohya: bool = False) -> dict[str, torch.Tensor]:
    """A LoRA on every q_proj / down_proj of the demo Gemma, in ComfyUI's text-encoder naming (or kohya's)."""
    from aiprod.loaders.lora_apply import gemma_targets

    shapes = gemma_targets(encoder.gemma_path).shapes
    gen = torch.Generator().manual_seed(len(name))
    tensors = {}
    for key, (out_features, in_features) in [(k, s) for k, s in shapes.items()
                                             if k.endswith(("q_proj.weight", "down_proj.weight"))]:
        path = key.removesuffix(".weight")
        stem = "lora_te_" + path.replace(".", "_") if kohya else COMFY_TE + path
        tensors[f"{stem}.lora_down.weight"] = torch.randn(RANK, in_features, generator=gen) * 0.05
        tensors[f"{stem}.lora_up.weight"] = torch.randn(out_features, RANK, generator=gen) * 0.05
    save_file(tensors, str(folder / name))
    return tensors


def test_the_text_encoder_lora_node_is_registered_with_tooltips(demo_folders, demo_models):
    spec = importlib.util.spec_from_file_location("aiprod._lora_registration_probe", REPO_ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "aiprod"
    spec.loader.exec_module(module)
    cls = module.NODE_CLASS_MAPPINGS["AIPRODTextEncoderLoraLoader"]
    assert module.NODE_DISPLAY_NAME_MAPPINGS["AIPRODTextEncoderLoraLoader"] == "AIPROD Text Encoder LoRA Loader"
    schema = cls.GET_SCHEMA()
    assert [i.id for i in schema.inputs] == ["text_encoder", "lora", "strength"]
    assert all(item.tooltip for item in [*schema.inputs, *schema.outputs]) and schema.description
    assert "validate_inputs" not in cls.__dict__  # ComfyUI checks the combo's list and the strength's min / max
    lora, strength = schema.inputs[1], schema.inputs[2]
    assert lora.get_io_type() == lora.options and demo_models.combo("distilled_lora") in lora.options
    assert (strength.min, strength.max) == (-10.0, 10.0)
    with pytest.raises(ValueError, match=r"lora='loras/missing\.safetensors'"):
        cls.execute(None, "loras/missing.safetensors", 1.0)  # an API prompt past validation: named, nothing loaded


def test_text_encoder_loras_stack_lazily_and_fuse_into_gemma(nodes, demo_models, lora_dir):
    loader_nodes, lora_nodes, text_nodes = nodes
    c = demo_models.combos()
    (encoder,) = loader_nodes.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    first = _gemma_lora(nodes, encoder, lora_dir, "gemma_lora.safetensors")
    second = _gemma_lora(nodes, encoder, lora_dir, "gemma_lora_kohya_naming.safetensors", kohya=True)
    node = lora_nodes.AIPRODTextEncoderLoraLoader
    assert "gemma_lora.safetensors" in node.define_schema().inputs[1].options  # listed by file name first
    (one,) = node.execute(encoder, "gemma_lora.safetensors", 0.5).args
    (two,) = node.execute(one, "loras/gemma_lora_kohya_naming.safetensors", -0.3).args
    assert [s for _, s in two.loras] == [0.5, -0.3] and two.processor is encoder.processor
    assert not (encoder.gemma.loaded or one.gemma.loaded or two.gemma.loaded)
    fused = two.gemma.get().encoder.state_dict()
    assert not encoder.gemma.loaded
    plain = encoder.gemma.get().encoder.state_dict()
    changed = 0
    for key, weight in plain.items():
        stem = COMFY_TE + key.removesuffix(".weight")
        expected = weight
        if f"{stem}.lora_down.weight" in first:
            kohya = "lora_te_" + key.removesuffix(".weight").replace(".", "_")
            expected = (weight + 0.5 * first[f"{stem}.lora_up.weight"] @ first[f"{stem}.lora_down.weight"]
                        - 0.3 * second[f"{kohya}.lora_up.weight"] @ second[f"{kohya}.lora_down.weight"])
            changed += 1
        assert (fused[key] - expected).abs().max() <= 1e-6, key
    assert changed == len(first) // 2
    (with_lora,) = text_nodes.AIPRODTextEncode.execute(two, "rain on a tin roof", "", True).args
    (without,) = text_nodes.AIPRODTextEncode.execute(encoder, "rain on a tin roof", "", True).args
    assert not torch.allclose(with_lora.positive.video, without.positive.video)


def test_lora_nodes_refuse_the_other_models_lora_naming_file_format_and_node(nodes, demo_models, lora_dir):
    loader_nodes, lora_nodes, _ = nodes
    c = demo_models.combos()
    (encoder,) = loader_nodes.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    model, _, _ = loader_nodes.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    _gemma_lora(nodes, encoder, lora_dir, "gemma_lora.safetensors")
    gemma_lora = str(lora_dir / "gemma_lora.safetensors")
    for node in (loader_nodes.AIPRODLoraLoader, loader_nodes.AIPRODICLoraLoader):
        with pytest.raises(LoraMismatchError) as info:
            node.execute(model, "loras/gemma_lora.safetensors", 1.0)
        message = str(info.value)
        assert message.startswith(f"{gemma_lora}: is a text-encoder (Gemma) LoRA (LoRA patches in the ComfyUI text "
                                  "encoder (text_encoders.gemma3_12b.transformer.*) naming")
        assert message.endswith("Apply it with the AIPROD Text Encoder LoRA Loader (on the text_encoder).")
    with pytest.raises(LoraMismatchError) as info:
        lora_nodes.AIPRODTextEncoderLoraLoader.execute(encoder, c["distilled_lora"], 1.0)
    assert "is a transformer LoRA" in str(info.value) and str(info.value).endswith(
        "Apply it with the AIPROD LoRA Loader (on the model).")
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.oft_blocks": torch.zeros(4, 16, 16)},
              str(lora_dir / "oft.safetensors"))
    with pytest.raises(LoraMismatchError, match=r"oft\.safetensors: holds OFT / BOFT adapter weights"):
        loader_nodes.AIPRODLoraLoader.execute(model, "loras/oft.safetensors", 1.0)
    (untouched,) = loader_nodes.AIPRODLoraLoader.execute(model, "loras/gemma_lora.safetensors", 0.0).args
    assert untouched.loras[-1][1] == 0.0  # strength 0 disables the LoRA: nothing to check


def test_an_fp8_lora_file_through_the_lora_node(nodes, demo_models, lora_dir):
    """The crash of issue 12 ('"mul_cpu_reduced_float" not implemented for Float8_e4m3fn' in the sampler, when the
    lazily loaded model fused the fp8 LoRA): the fp8 file now loads through the node and fuses up-cast."""
    loader_nodes, _, _ = nodes
    c = demo_models.combos()
    tensors = {k: v.to(torch.float8_e4m3fn) for k, v in load_file(str(demo_models.distilled_lora)).items()}
    save_file(tensors, str(lora_dir / "distilled_lora_fp8.safetensors"))
    model, _, _ = loader_nodes.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    (with_lora,) = loader_nodes.AIPRODLoraLoader.execute(model, "loras/distilled_lora_fp8.safetensors", 0.9).args
    fused, plain = with_lora.module().state_dict(), model.module().state_dict()
    down_key = next(k for k in tensors if k.endswith(".lora_A.weight"))
    key = down_key.removeprefix("diffusion_model.").removesuffix(".lora_A.weight") + ".weight"
    delta = 0.9 * tensors[down_key.replace("lora_A", "lora_B")].float() @ tensors[down_key].float()
    assert (fused[key] - plain[key] - delta).abs().max() <= 1e-6 * max(1.0, delta.abs().max().item())


def test_a_lokr_lora_on_a_kept_fp8_model_is_refused_at_the_node(nodes, demo_models, lora_dir, tmp_path):
    from aiprod.loaders.safetensors_header import read_header

    loader_nodes, _, _ = nodes
    checkpoint = loader_nodes.resolve_model_file("checkpoint", demo_models.combo("checkpoint"), ("checkpoints",))
    tensors = load_file(checkpoint)
    layer = next(k for k in tensors if k.endswith("transformer_blocks.0.attn1.to_q.weight"))
    tensors[layer] = tensors[layer].to(torch.float8_e4m3fn)
    fp8_path = tmp_path / "demo-one-fp8-layer.safetensors"
    save_file(tensors, str(fp8_path), metadata=read_header(checkpoint).metadata)
    out_features, in_features = tensors[layer].shape
    stem = layer.removeprefix("model.").removesuffix(".weight")
    save_file({f"{stem}.lokr_w1": torch.ones(1, 1), f"{stem}.lokr_w2": torch.zeros(out_features, in_features)},
              str(lora_dir / "lokr.safetensors"))
    kept = loader_nodes.make_transformer(str(fp8_path), "fp32", "keep")
    with pytest.raises(LoraMismatchError) as info:
        loader_nodes.AIPRODLoraLoader.execute(kept, "loras/lokr.safetensors", 1.0)
    assert str(info.value).startswith(f"{lora_dir / 'lokr.safetensors'}: has a LoKr patch ({stem}.lokr_w1) for "
                                      f"{layer}, a layer kept quantized (fp8, quantized_weights 'keep')")
    assert "Set quantized_weights to 'upcast' on the model loader" in str(info.value)
    upcast = loader_nodes.make_transformer(str(fp8_path), "fp32", "upcast")
    loader_nodes.AIPRODLoraLoader.execute(upcast, "loras/lokr.safetensors", 1.0)  # de-quantised: accepted


def _kind_files(layer: str, out_features: int, in_features: int) -> dict[str, dict[str, torch.Tensor]]:
    """One tiny file per LoRA kind of issue 12's table, all on ``layer`` (module path under diffusion_model.)."""
    gen = torch.Generator().manual_seed(5)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    stem = f"diffusion_model.{layer}"
    pair = {f"{stem}.lora_A.weight": rand(RANK, in_features), f"{stem}.lora_B.weight": rand(out_features, RANK)}
    return {
        "alpha_not_rank": {**pair, f"{stem}.alpha": torch.tensor(1.0)},
        "fp8_alpha_not_rank": {**{k: v.to(torch.float8_e4m3fn) for k, v in pair.items()},
                               f"{stem}.alpha": torch.tensor(2.0)},
        "diff": {f"{stem}.diff": rand(out_features, in_features), f"{stem}.diff_b": rand(out_features)},
        "dora": {**pair, f"{stem}.alpha": torch.tensor(8.0), f"{stem}.dora_scale": 1 + rand(1, in_features)},
        "lokr": {f"{stem}.lokr_w1": 1 + rand(2, 1), f"{stem}.lokr_w2_a": rand(out_features // 2, 2),
                 f"{stem}.lokr_w2_b": rand(2, in_features), f"{stem}.alpha": torch.tensor(1.0)},
        "loha": {f"{stem}.hada_w1_a": rand(out_features, 2), f"{stem}.hada_w1_b": rand(2, in_features),
                 f"{stem}.hada_w2_a": rand(out_features, 2), f"{stem}.hada_w2_b": rand(2, in_features)},
    }


def test_every_lora_kind_loads_through_the_lora_node_like_comfyui(nodes, demo_models, lora_dir, comfy_cpu):
    """alpha != rank (bf16 and fp8 files), .diff / .diff_b, DoRA, LoKr, LoHa: through the AIPROD LoRA Loader on an
    fp32 model, each equals ComfyUI's calculate_weight on the same weight (bit for bit: float32 everywhere, same
    order; the plain float32 pair keeps the reference's order: within 1e-6 of its delta plus one float32 ulp of the
    weight)."""
    import comfy.lora

    loader_nodes, _, _ = nodes
    c = demo_models.combos()
    model, _, _ = loader_nodes.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    plain = model.module().state_dict()
    layer = "transformer_blocks.0.ff.net.0.proj"
    out_features, in_features = plain[f"{layer}.weight"].shape
    for kind, tensors in _kind_files(layer, out_features, in_features).items():
        save_file(tensors, str(lora_dir / f"{kind}.safetensors"))
        (with_lora,) = loader_nodes.AIPRODLoraLoader.execute(model, f"loras/{kind}.safetensors", 0.7).args
        fused = with_lora.module().state_dict()
        patches = comfy.lora.load_lora(tensors, {f"diffusion_model.{layer}": "w.weight"}, log_missing=False)
        for param in ("weight", "bias"):
            if f"w.{param}" not in patches:
                assert torch.equal(fused[f"{layer}.{param}"], plain[f"{layer}.{param}"]), kind
                continue
            expected = comfy.lora.calculate_weight([(0.7, patches[f"w.{param}"], 1.0, None, None)],
                                                   plain[f"{layer}.{param}"].clone(), f"w.{param}")
            ulp = torch.finfo(torch.float32).eps * expected.abs().max()  # reference order: one rounding apart
            bound = 1e-6 * (expected - plain[f"{layer}.{param}"]).abs().max() + ulp if kind == "alpha_not_rank" else 0
            assert (fused[f"{layer}.{param}"] - expected).abs().max() <= bound, kind
            assert not torch.equal(fused[f"{layer}.{param}"], plain[f"{layer}.{param}"]), kind


def _te_kind_files(stem: str, out_features: int, in_features: int, norm: str) -> dict[str, dict[str, torch.Tensor]]:
    """One text-encoder LoRA file per kind of issue 12's table, on the projection ``stem`` (ComfyUI's naming)."""
    gen = torch.Generator().manual_seed(9)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    fp8 = {f"{stem}.lora_A.weight": rand(RANK, in_features).to(torch.float8_e4m3fn),
           f"{stem}.lora_B.weight": rand(out_features, RANK).to(torch.float8_e4m3fn),
           f"{stem}.alpha": torch.tensor(2.0)}
    return {
        "fp8_alpha_not_rank": fp8,
        "diff": {f"{stem}.diff": rand(out_features, in_features), f"{norm}.diff": rand(out_features)},
        "dora": {f"{stem}.lora_down.weight": rand(RANK, in_features),
                 f"{stem}.lora_up.weight": rand(out_features, RANK), f"{stem}.alpha": torch.tensor(8.0),
                 f"{stem}.dora_scale": 1 + rand(out_features, 1)},
        "lokr": {f"{stem}.lokr_w1": 1 + rand(2, 2), f"{stem}.lokr_w2": rand(out_features // 2, in_features // 2)},
        "loha": {f"{stem}.hada_w1_a": rand(out_features, 2), f"{stem}.hada_w1_b": rand(2, in_features),
                 f"{stem}.hada_w2_a": rand(out_features, 2), f"{stem}.hada_w2_b": rand(2, in_features),
                 f"{stem}.alpha": torch.tensor(1.0)},
    }


def test_every_lora_kind_loads_through_the_text_encoder_lora_node_like_comfyui(nodes, demo_models, lora_dir,
                                                                              comfy_cpu):
    """fp8 with alpha != rank, .diff (a projection and a norm), DoRA, LoKr, LoHa in ComfyUI's text-encoder naming:
    through the AIPROD Text Encoder LoRA Loader, the fused Gemma weight equals ComfyUI's calculate_weight on the
    same float32 weight bit for bit (every kind here takes ComfyUI's float32 path), and the prompt changes."""
    import comfy.lora

    from aiprod.loaders.lora_apply import gemma_targets

    loader_nodes, lora_nodes, text_nodes = nodes
    c = demo_models.combos()
    (encoder,) = loader_nodes.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    plain = encoder.gemma.get().encoder.state_dict()
    (without,) = text_nodes.AIPRODTextEncode.execute(encoder, "rain on a tin roof", "", True).args
    module = "model.layers.0.mlp.down_proj"
    norm = "model.layers.0.input_layernorm"
    out_features, in_features = gemma_targets(encoder.gemma_path).shapes[f"{module}.weight"]
    assert plain[f"{norm}.weight"].shape == (out_features,)  # the hidden width: down_proj's output
    files = _te_kind_files(COMFY_TE + module, out_features, in_features, COMFY_TE + norm)
    for kind, tensors in files.items():
        save_file(tensors, str(lora_dir / f"te_{kind}.safetensors"))
        (with_lora,) = lora_nodes.AIPRODTextEncoderLoraLoader.execute(encoder, f"loras/te_{kind}.safetensors",
                                                                      -0.8).args
        fused = with_lora.gemma.get().encoder.state_dict()
        key_map = {COMFY_TE + module: "w.weight", COMFY_TE + norm: "n.weight"}
        patches = comfy.lora.load_lora(tensors, key_map, log_missing=False)
        for ours, theirs in ((f"{module}.weight", "w.weight"), (f"{norm}.weight", "n.weight")):
            if theirs not in patches:
                assert torch.equal(fused[ours], plain[ours]), kind
                continue
            expected = comfy.lora.calculate_weight([(-0.8, patches[theirs], 1.0, None, None)],
                                                   plain[ours].clone(), theirs)
            assert torch.equal(fused[ours], expected), (kind, ours)
            assert not torch.equal(fused[ours], plain[ours]), kind
        untouched = [k for k in plain if k not in (f"{module}.weight", f"{norm}.weight")]
        assert all(torch.equal(fused[k], plain[k]) for k in untouched), kind
        (conditioned,) = text_nodes.AIPRODTextEncode.execute(with_lora, "rain on a tin roof", "", True).args
        assert not torch.allclose(conditioned.positive.video, without.positive.video), kind
