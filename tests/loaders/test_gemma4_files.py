"""Gemma-4 text encoder files in their real layouts, loaded strictly, and the errors a bad one gets."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from support import tiny_gemma4 as tg

from aiprod.aiprod_core.text_encoder.gemma4 import TransformersVersionError
from aiprod.loaders.errors import CheckpointFormatError, StateDictMismatchError, WrongComponentError
from aiprod.loaders.gemma4_files import (
    GEMMA4_TEXT_MAPS,
    check_gemma4,
    find_gemma4_files,
    load_gemma4,
)
from aiprod.loaders.text_encoder_files import TokenizerFileError

PROMPTS = ["a red cat runs over the wet street at night", "the dog runs"]
LM = "model.language_model."


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tg.build_model(seed=7)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, model):
    """gemma4-12b-with-proj-ltx-2.5 in float32 (exact comparisons), ComfyUI-flat keys."""
    folder = tmp_path_factory.mktemp("text_encoders")
    return tg.write_ltx_bundle(folder / "gemma4-12b-with-proj-ltx-2.5-f32.safetensors", model, torch.float32)


def _lm_state(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"model." + k[len(LM):]: v.to(dtype) for k, v in model.state_dict().items() if k.startswith(LM)}


def _assert_weights(loaded, model, dtype) -> None:
    state = loaded.encoder.state_dict()
    expected = _lm_state(model, dtype)
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert state[key].dtype == dtype, key
        assert torch.equal(state[key], value), key


@torch.no_grad()
def test_lightricks_bundle_loads_and_encodes_like_the_model(bundle, model) -> None:
    plan = check_gemma4(bundle)
    assert plan.layout.name == "GEMMA4_FLAT_MAP" and len(plan.keys) == len(_lm_state(model, torch.float32))
    loaded = load_gemma4(bundle, dtype=torch.float32, max_length=16)
    assert loaded.layout == "GEMMA4_FLAT_MAP" and loaded.family == "gemma4"
    assert loaded.files.gemma_version == tg.GEMMA_VERSION and loaded.files.tokenizer_dir is None
    assert loaded.tokenizer.tokenizer.chat_template == tg.CHAT_TEMPLATE
    _assert_weights(loaded, model, torch.float32)
    ids, mask = loaded.tokenizer(PROMPTS)
    assert ids[:, -mask.sum(1).max()].tolist()[0] == 2  # <bos> starts the longest prompt
    expected = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    valid = mask.bool()
    for ours, ref in zip(loaded.encoder(ids, mask), expected, strict=True):
        bound = 1e-5 * max(1.0, ref[valid].abs().max().item())
        assert (ours[valid] - ref[valid]).abs().max().item() <= bound


@pytest.mark.parametrize("where", ["folder", "hf_keyed_file"])
def test_hugging_face_layouts(tmp_path, model, where) -> None:
    if where == "folder":
        path = tg.write_hf_folder(tmp_path / "gemma4-12b-ltx", model)
    else:  # ltx-core's packer with comfy_flat_lm_keys=False
        path = tg.write_ltx_bundle(tmp_path / "te.safetensors", model, flat=False)
    loaded = load_gemma4(path, dtype=torch.bfloat16)
    assert loaded.layout == "GEMMA4_HF_MAP"
    assert loaded.files.gemma_version == tg.GEMMA_VERSION
    _assert_weights(loaded, model, torch.bfloat16)
    ids, mask = loaded.tokenizer(PROMPTS)
    assert ids.shape == mask.shape == (2, 1024)


def test_tokenizer_as_int8_tensor_and_config_in_metadata(tmp_path, model) -> None:
    """ComfyUI may store tokenizer_json as I8; older packs keep tokenizer_config.json as a metadata string."""
    tensors = tg.ltx_bundle_tensors(model, tokenizer_dtype=torch.int8)
    del tensors["hf_asset__tokenizer_config.json"], tensors["hf_asset__chat_template.jinja"]
    path = tmp_path / "te.safetensors"
    save_file(tensors, str(path), metadata={"gemma_config": json.dumps(tg.config()),
                                            "tokenizer_config.json": json.dumps(tg.TOKENIZER_CONFIG)})
    loaded = load_gemma4(path)
    assert loaded.tokenizer.tokenizer.bos_token == "<bos>" and loaded.tokenizer.tokenizer.chat_template is None
    words = [len(tg.SPECIALS) + tg.WORDS.index(w) for w in ("the", "dog")]
    assert loaded.tokenizer(["the dog"])[0][0, -3:].tolist() == [2, *words]


def test_config_inferred_from_shapes_without_metadata(tmp_path, model) -> None:
    """A repack with neither gemma_config nor config.json: structure from the tensors, the rest as Gemma-4-12B."""
    tensors = tg.ltx_bundle_tensors(model)
    path = tmp_path / "gemma4_repack.safetensors"
    save_file(tensors, str(path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3"}))  # another model's, not used
    files = find_gemma4_files(path)
    text = files.config["text_config"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim", "global_head_dim", "layer_types",
                "num_attention_heads", "num_key_value_heads", "num_global_key_value_heads", "attention_k_eq_v",
                "intermediate_size"):
        assert text[key] == tg.TEXT_CONFIG[key], key
    assert files.gemma_version is None and "inferred" in files.config_source
    _assert_weights(load_gemma4(path), model, torch.bfloat16)


def test_real_12b_structure_and_its_inference_from_shapes() -> None:
    """The 12B config on the meta device: full-attention layers have 16 x 512 query heads, one shared K = V head and
    no v_proj; a config inferred from those shapes (as for a metadata-less repack) reproduces it."""
    from aiprod.aiprod_core.text_encoder.gemma4 import Gemma4TextEncoder, gemma4_text_config
    from aiprod.loaders.gemma4_files import _infer_config
    from aiprod.loaders.safetensors_header import TensorInfo

    real = tg.GEMMA4_12B_TEXT_CONFIG
    state = Gemma4TextEncoder(gemma4_text_config(real), dtype=torch.bfloat16, device="meta").state_dict()
    assert state["model.layers.5.self_attn.q_proj.weight"].shape == (8192, 3840)
    assert state["model.layers.5.self_attn.k_proj.weight"].shape == (512, 3840)
    assert "model.layers.5.self_attn.v_proj.weight" not in state
    assert state["model.layers.0.self_attn.v_proj.weight"].shape == (2048, 3840)
    assert 11.8e9 < sum(v.numel() for v in state.values()) < 12.0e9
    tensors = {k: TensorInfo("BF16", tuple(v.shape), 2 * v.numel()) for k, v in state.items()}
    inferred = _infer_config("repack", tensors, GEMMA4_TEXT_MAPS[1])["text_config"]
    assert {k: v for k, v in inferred.items() if real.get(k, v) != v} == {}


@pytest.mark.oracle
def test_int8_repack_loads_through_the_quant_loader_in_both_modes(tmp_path, model) -> None:
    """ComfyUI's int8 repack (int8 rows + weight_scale + comfy_quant per Linear, no config): the config is inferred,
    ``upcast`` weights equal comfy-kitchen's eager de-quantisation, ``keep`` holds int8 `QuantLinear` s and gives
    the same hidden states."""
    from comfy_kitchen.tensor import QuantizedTensor, get_layout_class

    from aiprod.loaders.quant.linear import QuantLinear

    path = tg.write_comfy_int8(tmp_path / "gemma4-12b-with-proj-ltx-2.5-comfy-int8-convrot.safetensors", model)
    files = find_gemma4_files(path)
    assert files.layout == "GEMMA4_FLAT_MAP" and files.config["text_config"]["attention_k_eq_v"] is True
    plan = check_gemma4(path, quantized_weights="keep")
    linears = sum(k.endswith("_proj.weight") for k in plan.keys)
    assert plan.quantization == {"int8_tensorwise": linears} and linears
    upcast = load_gemma4(path, dtype=torch.float32, quantized_weights="upcast")
    keep = load_gemma4(path, dtype=torch.float32, quantized_weights="keep")
    stored = load_file(str(path))
    layer = "model.layers.0.self_attn.q_proj"
    cls = get_layout_class("TensorWiseINT8Layout")
    params = cls.Params(orig_dtype=torch.float32, orig_shape=tuple(stored[layer + ".weight"].shape),
                        scale=stored[layer + ".weight_scale"])
    oracle = QuantizedTensor(stored[layer + ".weight"], "TensorWiseINT8Layout", params).dequantize()
    assert torch.equal(upcast.encoder.state_dict()[layer + ".weight"], oracle)
    held = keep.encoder.get_submodule(layer)
    assert isinstance(held, QuantLinear) and held.weight.dtype == torch.int8
    ids, mask = upcast.tokenizer(["a red cat runs", "the dog"])
    with torch.no_grad():
        for ours, kept in zip(upcast.encoder(ids, mask), keep.encoder(ids, mask), strict=True):
            assert torch.equal(ours, kept)


def test_missing_and_misshaped_weights_are_named(tmp_path, bundle) -> None:
    tensors = load_file(str(bundle))
    del tensors["model.layers.1.mlp.down_proj.weight"]
    tensors["model.layers.2.self_attn.k_proj.weight"] = torch.zeros(64, 64)
    path = tmp_path / "broken.safetensors"
    save_file(tensors, str(path), metadata={"gemma_config": json.dumps(tg.config())})
    for call in (check_gemma4, load_gemma4):  # the header-only check names it as the load would
        with pytest.raises(StateDictMismatchError, match=r"1 missing key\(s\), first: model\.layers\.1\.mlp\."
                           r"down_proj\.weight.*model\.layers\.2\.self_attn\.k_proj\.weight expected \[32, 64\] "
                           r"found \[64, 64\]"):
            call(path)


def test_gemma3_file_is_refused_by_the_gemma4_loader(tmp_path, bundle) -> None:
    tensors = {k: v for k, v in load_file(str(bundle)).items() if not k.endswith("layer_scalar")}
    path = tmp_path / "gemma_3_12B_it.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(WrongComponentError, match=r"has no model\.layers\.0\.layer_scalar: it is not a Gemma-4 "):
        load_gemma4(path)


def test_missing_or_broken_tokenizer(tmp_path, bundle) -> None:
    tensors = {k: v for k, v in load_file(str(bundle)).items() if k != "tokenizer_json"}
    path = tmp_path / "no_tokenizer.safetensors"
    save_file(tensors, str(path), metadata={"gemma_config": json.dumps(tg.config())})
    with pytest.raises(TokenizerFileError, match=r"has no Gemma-4 tokenizer: no embedded `tokenizer_json`"):
        find_gemma4_files(path)
    (tmp_path / "tokenizer.json").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    with pytest.raises(TokenizerFileError, match=r"tokenizer\.json: is a git-LFS pointer"):
        find_gemma4_files(path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
    with pytest.raises(TokenizerFileError, match=r"holds a Gemma-4 tokenizer that cannot be loaded"):
        load_gemma4(path)


def test_bad_gemma_config_is_named(tmp_path, bundle) -> None:
    tensors = load_file(str(bundle))
    path = tmp_path / "te.safetensors"
    save_file(tensors, str(path), metadata={"gemma_config": json.dumps(tg.config(model_type="gemma3"))})
    with pytest.raises(CheckpointFormatError, match=r"gemma_config` metadata of te\.safetensors: is not a usable "
                       r"Gemma-4 config: model_type='gemma3'"):
        load_gemma4(path)
    save_file(tensors, str(path), metadata={"gemma_config": "{not json"})
    with pytest.raises(CheckpointFormatError, match=r"`gemma_config` metadata entry that is not valid JSON"):
        load_gemma4(path)


def test_old_transformers_is_refused_before_anything_is_read(monkeypatch, tmp_path) -> None:
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    missing = tmp_path / "not-even-there.safetensors"
    with pytest.raises(TransformersVersionError, match=r"needs transformers>=5\.10\.1"):
        load_gemma4(missing)
