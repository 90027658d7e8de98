"""Gemma 3 vs Gemma 4 from headers alone, the transformer's text-encoder generation, the refusal naming both, and
one loader for either family."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file
from support import tiny_gemma4 as tg

from aiprod.loaders.errors import WrongComponentError
from aiprod.loaders.gemma4_files import LoadedGemma4
from aiprod.loaders.text_encoder_files import LoadedGemma
from aiprod.loaders.text_encoder_generation import (
    GenerationMismatchError,
    check_text_encoder_generation,
    load_text_encoder,
    text_encoder_kind,
    transformer_text_needs,
)

GEMMA3_TEXT = {
    "model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "query_pre_attn_scalar": 16, "sliding_window": 8, "sliding_window_pattern": 2, "rope_theta": 1_000_000,
    "rope_local_base_freq": 10_000, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "max_position_embeddings": 1024, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Gemma-4 bundle / folder / ComfyUI repack, a ComfyUI-style Gemma-3 file, transformers of each generation."""
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config

    root = tmp_path_factory.mktemp("models")
    model = tg.build_model(seed=2)
    out = {
        "gemma4_bundle": tg.write_ltx_bundle(root / "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors", model),
        "gemma4_folder": tg.write_hf_folder(root / "gemma4-12b-ltx-v1", model),
    }
    repack = root / "repack" / "gemma4_repack.safetensors"
    repack.parent.mkdir()
    save_file(tg.ltx_bundle_tensors(model), str(repack))  # no gemma_config: told by its layer scalars
    out["gemma4_repack"] = repack
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gemma3 = GemmaTextEncoder(gemma_text_config(GEMMA3_TEXT), dtype=torch.bfloat16)
    gemma3_file = root / "gemma3" / "gemma_3_12B_it.safetensors"
    gemma3_file.parent.mkdir()
    save_file({k: v.contiguous() for k, v in gemma3.state_dict().items()}, str(gemma3_file))
    tg.write_tokenizer_folder(gemma3_file.parent)
    out["gemma3_file"] = gemma3_file
    for generation in ("2.5", "2.3", "2"):
        out[f"ltx{generation}"] = tg.transformer_header_file(root / f"ltx-{generation}.safetensors", generation)
    out["ltx2.5_other_stamp"] = tg.transformer_header_file(root / "other.safetensors", "2.5", "gemma4-12b-ltx-v2")
    out["ltx2.5_no_stamp"] = tg.transformer_header_file(root / "nostamp.safetensors", "2.5", None)
    return out


@pytest.mark.parametrize(("name", "family", "version"), [
    ("gemma4_bundle", "gemma4", tg.GEMMA_VERSION), ("gemma4_folder", "gemma4", tg.GEMMA_VERSION),
    ("gemma4_repack", "gemma4", None), ("gemma3_file", "gemma3", None),
])
def test_text_encoder_kind_from_headers(files, name, family, version) -> None:
    kind = text_encoder_kind(files[name])
    assert (kind.family, kind.gemma_version) == (family, version)


def test_dense_gemma4_and_other_models_are_not_text_encoders(tmp_path) -> None:
    folder = tmp_path / "gemma-4-E2B-it"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma4"}))
    with pytest.raises(WrongComponentError, match=r"dense Gemma 4 .* prompt enhancer, not its text encoder"):
        text_encoder_kind(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises(WrongComponentError, match=r"model_type='qwen3', expected a Gemma 3 or Gemma 4"):
        text_encoder_kind(folder)


@pytest.mark.parametrize(("name", "generation", "family"), [
    ("ltx2.5", "LTX-2.5", "gemma4"), ("ltx2.3", "LTX-2.3", "gemma3"), ("ltx2", "LTX-2", "gemma3"),
])
def test_transformer_generation_from_its_header(files, name, generation, family) -> None:
    needs = transformer_text_needs(files[name])
    assert (needs.generation, needs.family) == (generation, family)


def test_gemma3_with_ltx25_is_refused_naming_both(files) -> None:
    with pytest.raises(GenerationMismatchError, match=r"gemma_3_12B_it\.safetensors: is Gemma 3 \(the text encoder "
                       r"of LTX-2 / LTX-2\.3\), but the transformer ltx-2\.5\.safetensors is LTX-2\.5, which needs "
                       r"Gemma 4 \(the text encoder of LTX-2\.5\)\. LTX-2\.5 needs its own Gemma 4"):
        check_text_encoder_generation(files["gemma3_file"], files["ltx2.5"])


@pytest.mark.parametrize("transformer", ["ltx2.3", "ltx2"])
def test_gemma4_with_an_older_transformer_is_refused_naming_both(files, transformer) -> None:
    generation = {"ltx2.3": "LTX-2.3", "ltx2": "LTX-2"}[transformer]
    with pytest.raises(GenerationMismatchError, match=rf"is Gemma 4 \(the text encoder of LTX-2\.5\), but the "
                       rf"transformer .* is {generation}, which needs Gemma 3 \(the text encoder of LTX-2 / LTX-2\.3"):
        check_text_encoder_generation(files["gemma4_bundle"], files[transformer])


def test_gemma_version_stamp_must_match(files, caplog) -> None:
    assert check_text_encoder_generation(files["gemma4_bundle"], files["ltx2.5"]).family == "gemma4"
    assert check_text_encoder_generation(files["gemma3_file"], files["ltx2.3"]).family == "gemma3"
    with pytest.raises(GenerationMismatchError, match=r"is Gemma 4 gemma_version 'gemma4-12b-ltx-v1', but the "
                       r"transformer other\.safetensors \(LTX-2\.5\) was trained with gemma_version "
                       r"'gemma4-12b-ltx-v2'"):
        check_text_encoder_generation(files["gemma4_folder"], files["ltx2.5_other_stamp"])
    stock = files["gemma4_folder"].parent / "gemma-4-12B"  # Google's release: a config without gemma_version
    stock.mkdir(exist_ok=True)
    (stock / "config.json").write_text(json.dumps(tg.config(gemma_version=None)))
    with pytest.raises(GenerationMismatchError, match=r"declares no gemma_version, but the transformer "
                       r"ltx-2\.5\.safetensors \(LTX-2\.5\) was trained with gemma_version 'gemma4-12b-ltx-v1'"):
        check_text_encoder_generation(stock, files["ltx2.5"])
    with caplog.at_level(logging.WARNING):  # one side without a stamp: cannot be checked, warned
        check_text_encoder_generation(files["gemma4_repack"], files["ltx2.5"])
        check_text_encoder_generation(files["gemma4_bundle"], files["ltx2.5_no_stamp"])
    assert caplog.text.count("cannot check the Gemma-4 version") == 2


@pytest.mark.parametrize(("bias", "generation"), [(False, "LTX-2.5"), (True, "LTX-2 / LTX-2.3")])
def test_metadata_less_transformer_told_by_its_feed_forward_bias(tmp_path, bias, generation) -> None:
    block = "transformer_blocks.0.ff.net.0.proj."
    tensors = {block + "weight": torch.zeros(8, 4), "video_embeddings_connector.transformer_1d_blocks.0.ff.net.0."
               "proj.bias": torch.zeros(8)}  # connectors keep their biases in every generation
    if bias:
        tensors[block + "bias"] = torch.zeros(8)
    path = tmp_path / "repack.safetensors"
    save_file(tensors, str(path))
    assert transformer_text_needs(path).generation == generation


def test_a_header_without_generation_facts_is_not_refused(files, tmp_path, caplog) -> None:
    path = tmp_path / "bare.safetensors"
    save_file({"transformer_blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}, str(path))
    with caplog.at_level(logging.WARNING):
        assert check_text_encoder_generation(files["gemma3_file"], path).family == "gemma3"
    assert "is not checked" in caplog.text


@torch.no_grad()
@pytest.mark.parametrize(("name", "loaded_type", "states"), [
    ("gemma4_bundle", LoadedGemma4, tg.LAYERS + 1), ("gemma3_file", LoadedGemma, GEMMA3_TEXT["num_hidden_layers"] + 1),
])
def test_one_loader_for_both_families(files, name, loaded_type, states) -> None:
    loaded = load_text_encoder(files[name], dtype=torch.float32, max_length=16)
    assert isinstance(loaded, loaded_type)
    ids, mask = loaded.tokenizer(["the dog runs"])
    hidden = loaded.encoder(ids, mask)
    assert len(hidden) == states and hidden[0].shape == (1, 16, 64)
