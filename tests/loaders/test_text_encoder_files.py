"""Gemma-3 text encoder files: HF folder and single file + tokenizer; bad tokenizer / config files named."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from support import tiny_configs as tc
from support.word_tokenizer import write_word_tokenizer

from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.text_encoder_files import TokenizerFileError, find_gemma_files, load_gemma

LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:61a7b147390c64585d6c3543dd6fc636906c9af3865a5548f27f31aee1d4c8e2\nsize 4689074\n")
TEXT_CONFIG = {
    "model_type": "gemma3_text", "vocab_size": 32, "hidden_size": tc.TINY_GEMMA_HIDDEN_SIZE,
    "intermediate_size": 96, "num_hidden_layers": tc.TINY_GEMMA_NUM_LAYERS, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8,
    "sliding_window_pattern": 2, "rope_theta": 1_000_000, "rope_local_base_freq": 10_000,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "max_position_embeddings": 1024,
    "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
}


@pytest.fixture(scope="module")
def gemma_state() -> dict[str, torch.Tensor]:
    """Seeded tiny Gemma-3 text backbone weights (bf16), keyed as in our module (``model.*``)."""
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        encoder = GemmaTextEncoder(gemma_text_config(TEXT_CONFIG))
        for param in encoder.parameters():
            torch.nn.init.normal_(param, 0.0, 0.1)
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in encoder.state_dict().items()}


@pytest.fixture
def gemma_folder(tmp_path, gemma_state):
    """A Hugging Face Gemma3ForConditionalGeneration-style folder (text weights + a vision key, two shards)."""
    folder = tmp_path / "gemma-3-12b-it"
    folder.mkdir()
    renamed = {"language_model." + k: v for k, v in gemma_state.items()}
    keys = sorted(renamed)
    half = len(keys) // 2
    save_file({k: renamed[k] for k in keys[:half]}, str(folder / "model-00001-of-00002.safetensors"))
    second = {k: renamed[k] for k in keys[half:]}
    second["vision_tower.vision_model.post_layernorm.weight"] = torch.ones(8, dtype=torch.bfloat16)
    save_file(second, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": TEXT_CONFIG}))
    write_word_tokenizer(folder)
    return folder


@pytest.fixture
def gemma_single_file(tmp_path, gemma_state):
    """One text-only safetensors file (``model.*`` keys) in text_encoders/ with the tokenizer beside it."""
    folder = tmp_path / "text_encoders"
    folder.mkdir()
    path = folder / "gemma_3_12B_it.safetensors"
    save_file(dict(gemma_state), str(path))
    write_word_tokenizer(folder)
    return path


def _assert_loaded(loaded, gemma_state, dtype):
    state = loaded.encoder.state_dict()
    assert sorted(state) == sorted(gemma_state)
    for key, value in gemma_state.items():
        assert state[key].dtype == dtype and torch.equal(state[key], value.to(dtype)), key
    ids, mask = loaded.tokenizer(["a red cat runs", "the dog"])
    hidden = loaded.encoder(ids, mask)
    assert len(hidden) == tc.TINY_GEMMA_NUM_LAYERS + 1
    assert all(torch.isfinite(h).all() for h in hidden)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_hugging_face_folder(gemma_folder, gemma_state, dtype):
    loaded = load_gemma(gemma_folder, dtype=dtype, max_length=16)
    assert loaded.layout == "GEMMA_CONDITIONAL_GENERATION_MAP"
    assert len(loaded.files.weights) == 2
    _assert_loaded(loaded, gemma_state, dtype)


def test_single_file_with_tokenizer_beside_it(gemma_single_file, gemma_state):
    files = find_gemma_files(gemma_single_file)
    assert files.config_source == "inferred from the shapes in gemma_3_12B_it.safetensors"
    inferred = {k: files.config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim",
                                             "num_attention_heads", "num_key_value_heads", "intermediate_size")}
    assert inferred == {k: TEXT_CONFIG[k] for k in inferred}
    loaded = load_gemma(gemma_single_file, dtype=torch.float32, max_length=16)
    assert loaded.layout == "GEMMA_TEXT_ONLY_MAP"
    _assert_loaded(loaded, gemma_state, torch.float32)
    # a config.json beside the file wins over the inferred one
    (gemma_single_file.parent / "config.json").write_text(json.dumps(TEXT_CONFIG))
    assert find_gemma_files(gemma_single_file).config == TEXT_CONFIG


def test_tokenizer_that_is_a_git_lfs_pointer(gemma_folder):
    pointer = gemma_folder / "tokenizer.json"
    pointer.write_text(LFS_POINTER)
    with pytest.raises(TokenizerFileError) as info:
        load_gemma(gemma_folder)
    assert str(info.value).startswith(f"{pointer}: is a git-LFS pointer ({len(LFS_POINTER)} bytes), not the "
                                      "tokenizer itself.")
    assert f"run `git lfs pull` in {gemma_folder}" in str(info.value)


def test_folder_missing_its_tokenizer(gemma_folder):
    (gemma_folder / "tokenizer.json").unlink()
    with pytest.raises(TokenizerFileError, match=r"has no Gemma tokenizer \(tokenizer\.json or tokenizer\.model\) "
                                                  r"in .*Download the complete google/gemma-3-12b-it folder"):
        find_gemma_files(gemma_folder)


def test_single_file_missing_its_tokenizer(tmp_path, gemma_state):
    path = tmp_path / "gemma.safetensors"
    save_file(dict(gemma_state), str(path))
    message = (r"gemma\.safetensors: has no Gemma tokenizer .* put tokenizer\.json / tokenizer\.model \(and "
               r"tokenizer_config\.json\) in the same folder")
    with pytest.raises(TokenizerFileError, match=message):
        load_gemma(path)


def test_html_page_saved_as_tokenizer_model(gemma_folder):
    (gemma_folder / "tokenizer.model").write_text("<!DOCTYPE html><html>login required</html>")
    with pytest.raises(TokenizerFileError, match=r"tokenizer\.model: is not a SentencePiece model"):
        find_gemma_files(gemma_folder)


def test_wrong_config_and_missing_config(gemma_folder):
    (gemma_folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointFormatError, match=r"config\.json: describes model_type='llama', expected 'gemma3'"):
        load_gemma(gemma_folder)
    (gemma_folder / "config.json").unlink()
    with pytest.raises(CheckpointFormatError, match=r"gemma-3-12b-it: has no config\.json"):
        load_gemma(gemma_folder)


def test_weights_that_are_lfs_pointers_or_pickles(gemma_folder, tmp_path):
    shard = gemma_folder / "model-00001-of-00002.safetensors"
    shard.write_text(LFS_POINTER)
    with pytest.raises(CheckpointFormatError, match=r"model-00001-of-00002\.safetensors: is not a valid safetensors "
                                                    r"file .*git-LFS pointer"):
        load_gemma(gemma_folder)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointFormatError, match=r"has no \.safetensors weights \(only pickle files: "
                                                    r"pytorch_model\.bin\)"):
        find_gemma_files(pickled)


def test_missing_layer_is_listed(gemma_single_file, gemma_state):
    broken = {k: v for k, v in gemma_state.items() if k != "model.layers.1.mlp.down_proj.weight"}
    (gemma_single_file.parent / "config.json").write_text(json.dumps(TEXT_CONFIG))
    save_file(broken, str(gemma_single_file))
    with pytest.raises(CheckpointFormatError, match=r"does not fit the Gemma-3 text encoder .*1 missing key\(s\), "
                                                    r"first: model\.layers\.1\.mlp\.down_proj\.weight") as info:
        load_gemma(gemma_single_file)
    assert "text encoder loader" not in str(info.value)  # never sends the user to the loader they are in
