"""ComfyUI's Gemma-3 files: the embedded SentencePiece tokenizer gives the ids of Google's tokenizer files (via
transformers) for the same text, the file loads with nothing beside it, its vision tower / projector are skipped on
purpose, and damaged files are refused with their fault named, before any weight is read (quantized files:
test_comfy_gemma_quant)."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch
from safetensors.torch import save_file
from support import comfy_gemma as cg

from aiprod.aiprod_core.text_encoder import GemmaPromptTokenizer
from aiprod.aiprod_core.text_encoder.prompts import causal_lm_from_encoder, enhance_prompt, enhancement_messages
from aiprod.aiprod_core.text_encoder.spiece import SentencePieceGemmaTokenizer
from aiprod.loaders.errors import CheckpointFormatError, StateDictMismatchError
from aiprod.loaders.text_encoder_files import TokenizerFileError, check_gemma, load_gemma

MAX_LENGTH = 48
FIXED_PROMPTS = [
    "", " ", "   ", "a", "A red fox trots through fresh snow", "  leading and trailing  ", "two  spaces", "tab\there",
    "new\nline\n\nparagraph", "\r\n windows line", "Ünïcödé façade naïve café, Straße", "東京の夜 북극곰 Привет",
    "😀🦊🌲 emoji only", "unseen ✈ ☃ ∑ ĳ 𝄞", "digits 1234567890 3.14159", "\u00a0no-break\u2009thin\u200bzero-width",
    "e\u0301 combining accent", "<start_of_turn>user\nhi<end_of_turn>", "x<start_of_image>y<end_of_image>z",
    "<bos><eos><pad><unk><mask>", "<image_soft_token> image token", "[@BOS@] user defined <unused0>",
    "<start_of_turn", "<<start_of_turn>>", "▁ sentencepiece marker ▁▁", "a" * 300, "the red car at night " * 40,
]
ALPHABET = [*"abcdefghijklmnopqrstuvwxyz  ABC .,;!?'\"\n\t0123456789éüß東京😀▁<>_-", "<start_of_turn>", "<mask>",
            "<bos>", "<image_soft_token>", "<unk>", "[@BOS@]", "\u00a0"]


def _random_prompts(count: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 120))) for _ in range(count)]


PROMPTS = FIXED_PROMPTS + _random_prompts(300)


@pytest.fixture(scope="module", params=[True, False], ids=["split_by_whitespace", "no_whitespace_split"])
def model(request) -> bytes:
    return cg.spiece_model(split_by_whitespace=request.param)


@pytest.fixture(scope="module", params=["tokenizer.model", "tokenizer.json"])
def google(request, model, tmp_path_factory):
    """transformers' tokenizer from Google-style tokenizer files written from the same SentencePiece model."""
    from transformers import AutoTokenizer

    folder = cg.write_google_tokenizer(model, tmp_path_factory.mktemp("google"),
                                       with_json=request.param == "tokenizer.json")
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("tokenizer."))[0] == request.param
    return folder, AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def test_added_tokens_are_single_ids(model):
    """Control pieces (which SentencePiece never matches in text) and user-defined pieces come out whole, as
    transformers' added tokens do; the image token sits right after the model's pieces."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    ours = SentencePieceGemmaTokenizer(model)
    for piece in (*cg.CONTROL_SYMBOLS, *cg.USER_SYMBOLS, "<bos>", "<unk>"):
        assert ours.encode(f"x{piece}y", add_special_tokens=False) == [
            *sp.encode("x"), sp.piece_to_id(piece), *sp.encode("y")], piece
    assert len(sp.encode("<start_of_turn>")) > 1  # SentencePiece alone splits a control piece
    assert ours.convert_tokens_to_ids("<image_soft_token>") == sp.get_piece_size()


def test_ids_equal_googles_tokenizer_files(model, google):
    _, reference = google
    ours = SentencePieceGemmaTokenizer(model)
    assert len(ours) == len(reference) == cg.piece_count(model) + 1  # + <image_soft_token>
    mismatches = [p for p in PROMPTS if ours(p).input_ids != reference(p).input_ids]
    assert not mismatches, mismatches[:5]
    assert ours("a fox").input_ids[0] == reference.bos_token_id == 2
    assert ours("<image_soft_token>").input_ids == [2, cg.piece_count(model)]


def test_prompt_tokenizer_equals_the_folder_one(model, google):
    """Batches: the same ids and masks, left padding, BOS, truncation at max_length and pad id."""
    folder, _ = google
    ours = GemmaPromptTokenizer.from_sentencepiece(model, MAX_LENGTH)
    reference = GemmaPromptTokenizer.from_folder(folder, MAX_LENGTH)
    for start in range(0, len(PROMPTS), 16):
        batch = PROMPTS[start : start + 16]
        ids, mask = ours(batch)
        ref_ids, ref_mask = reference(batch)
        assert ids.dtype == ref_ids.dtype and mask.dtype == ref_mask.dtype
        assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask), batch
    ids, mask = ours(["", "the red car at night " * 40])
    assert ids.shape == (2, MAX_LENGTH) and mask[0].sum() == 1 and mask[1].sum() == MAX_LENGTH
    assert ids[0, -1] == 2 and ids[0, 0] == 0  # an empty prompt is <bos>, left-padded with <pad>


def test_decode_and_chat_format_equal_transformers(model, google):
    _, reference = google
    ours = SentencePieceGemmaTokenizer(model)
    for prompt in PROMPTS[:80]:
        ids = reference(prompt).input_ids
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
    rnd = random.Random(1)  # what a language model may generate: any ids, invalid UTF-8 byte runs included
    for _ in range(400):
        ids = [rnd.randrange(len(ours) + 8) for _ in range(rnd.randint(1, 8))]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), ids
    for with_image in (False, True):
        messages = enhancement_messages("a fox in the snow ", with_image=with_image)
        text = ours.apply_chat_template(messages, add_generation_prompt=True)
        assert text == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ours(text).input_ids == reference(text).input_ids  # the double <bos> the reference feeds


def test_damaged_models_are_refused():
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        SentencePieceGemmaTokenizer(b"\x0a\x05<html")
    with pytest.raises(ValueError, match="expected 1 to"):
        SentencePieceGemmaTokenizer(b"")


# ---- the ComfyUI file -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights():
    model = cg.spiece_model()
    vocab = cg.piece_count(model) + 16  # like ComfyUI's 262208 embeddings for 262145 tokens
    return model, cg.gemma_text_tensors(vocab)


@pytest.fixture
def comfy_file(tmp_path, weights):
    model, text = weights
    folder = tmp_path / "text_encoders"
    folder.mkdir()
    path = folder / "gemma_3_12B_it.safetensors"
    save_file(cg.comfy_gemma_tensors(model, text), str(path))
    return path


def test_comfy_file_loads_with_nothing_beside_it(comfy_file, weights, tmp_path, caplog):
    model, text = weights
    before = sorted(p.name for p in comfy_file.parent.iterdir())
    with caplog.at_level(logging.INFO, logger="aiprod.loaders.text_encoder_files"):
        loaded = load_gemma(comfy_file, dtype=torch.float32, max_length=MAX_LENGTH)
    assert sorted(p.name for p in comfy_file.parent.iterdir()) == before == ["gemma_3_12B_it.safetensors"]
    assert loaded.layout == "GEMMA_TEXT_ONLY_MAP" and loaded.files.embedded_tokenizer == str(comfy_file)
    assert loaded.files.config_source == "inferred from the shapes in gemma_3_12B_it.safetensors"
    assert "skipped on purpose (not used by the text encoder): vision tower (4 tensors), multimodal projector " \
           "(2 tensors), embedded tokenizer (1 tensors)" in caplog.text
    # the same weights and config in a Hugging Face folder with Google's tokenizer files: identical ids and states
    folder = cg.write_google_tokenizer(model, tmp_path / "gemma-3-hf", with_json=True)
    save_file({"language_model." + k: v for k, v in text.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": loaded.files.config}))
    reference = load_gemma(folder, dtype=torch.float32, max_length=MAX_LENGTH)
    prompts = ["A red fox trots through fresh snow", "", "Ünïcödé 東京 😀 <start_of_turn>"]
    ids, mask = loaded.tokenizer(prompts)
    ref_ids, ref_mask = reference.tokenizer(prompts)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    with torch.no_grad():
        for ours, ref in zip(loaded.encoder(ids, mask), reference.encoder(ref_ids, ref_mask), strict=True):
            assert torch.equal(ours, ref)


def test_prompt_enhancement_runs_on_the_embedded_tokenizer(comfy_file, weights, tmp_path):
    """Greedy enhancement gives the same text with the embedded tokenizer as with Google's files + chat template."""
    model, _ = weights
    loaded = load_gemma(comfy_file, dtype=torch.float32)
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(cg.write_google_tokenizer(model, tmp_path / "g", with_json=True)))
    lm = causal_lm_from_encoder(loaded.encoder)
    texts = [enhance_prompt(lm, tokenizer, "a fox in the snow", do_sample=False, max_new_tokens=12)
             for tokenizer in (loaded.tokenizer.tokenizer, reference)]
    assert texts[0] == texts[1] and texts[0]
    sampled = enhance_prompt(lm, loaded.tokenizer.tokenizer, "a fox in the snow", seed=4, max_new_tokens=12)
    assert sampled == enhance_prompt(lm, reference, "a fox in the snow", seed=4, max_new_tokens=12)


def test_unknown_keys_are_unexpected_but_known_parts_are_not(comfy_file, weights):
    model, text = weights
    tensors = cg.comfy_gemma_tensors(model, text)
    plan = check_gemma(comfy_file)
    assert plan.skipped == {"vision tower": 4, "multimodal projector": 2, "embedded tokenizer": 1}
    tensors["audio_tower.conv.weight"] = torch.zeros(2, dtype=torch.bfloat16)
    save_file(tensors, str(comfy_file))
    with pytest.raises(StateDictMismatchError, match=r"holds 1 key\(s\) that are not part of a Gemma-3 text "
                                                     r"encoder, first: audio_tower\.conv\.weight"):
        check_gemma(comfy_file)


def test_quantization_metadata_must_fit_the_weights_and_plain_fp8_loads(comfy_file, weights):
    model, text = weights
    tensors = cg.comfy_gemma_tensors(model, text)
    meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {
        "model.layers.0.mlp.up_proj": {"format": "float8_e4m3fn"}}})}
    save_file(tensors, str(comfy_file), metadata=meta)  # says float8, holds bf16
    with pytest.raises(CheckpointFormatError, match=r"stores layer `model\.layers\.0\.mlp\.up_proj` as "
                                                    r"float8_e4m3fn \(_quantization_metadata\) with a BF16 \[96, 64\] "
                                                    r"weight"):
        check_gemma(comfy_file)
    # fp8 weights with no scale are plain casts: they load, up-cast
    plain = {k: v.to(torch.float8_e4m3fn) if k.endswith("proj.weight") else v for k, v in tensors.items()}
    save_file(plain, str(comfy_file))
    loaded = load_gemma(comfy_file, dtype=torch.bfloat16)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(loaded.encoder.state_dict()[key], plain[key].to(torch.bfloat16))


def test_damaged_embedded_tokenizer_and_oversized_config(comfy_file, weights):
    model, text = weights
    tensors = cg.comfy_gemma_tensors(model, text)
    save_file({**tensors, "spiece_model": torch.frombuffer(bytearray(b"<html>login</html>"), dtype=torch.uint8)},
              str(comfy_file))
    with pytest.raises(TokenizerFileError, match=r"gemma_3_12B_it\.safetensors: has an embedded tokenizer "
                                                 r"\(spiece_model\) that cannot be used: not a SentencePiece model"):
        check_gemma(comfy_file)
    save_file({**tensors, "spiece_model": torch.zeros(4, 4, dtype=torch.uint8)}, str(comfy_file))
    with pytest.raises(TokenizerFileError, match=r"its spiece_model tensor is U8 \[4, 4\], expected 1-D U8 bytes"):
        check_gemma(comfy_file)
    small = {k: (v[:100] if "embed_tokens" in k else v) for k, v in tensors.items()}
    save_file(small, str(comfy_file))
    with pytest.raises(TokenizerFileError, match=r"embedded tokenizer of 481 tokens for 100 token embeddings"):
        check_gemma(comfy_file)
    save_file(tensors, str(comfy_file))
    (comfy_file.parent / "config.json").write_text(json.dumps({**cg.gemma_config(497), "num_hidden_layers": 10**8}))
    # refused by the config's sanity bound, before the layer count is compared with the weights
    with pytest.raises(CheckpointFormatError, match=r"config\.json: has a `config` the Gemma-3 text encoder cannot "
                                                    r"be built from: num_hidden_layers=100000000, expected"):
        check_gemma(comfy_file)


def test_a_gemma4_file_is_named_as_such(tmp_path):
    from support import tiny_gemma4 as tg

    path = tg.write_ltx_bundle(tmp_path / "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors", tg.build_model(seed=4))
    with pytest.raises(CheckpointFormatError, match=r"is a Gemma 4 text encoder \(LTX-2\.5's\), not Gemma 3\. "
                                                    r"LTX-2 / LTX-2\.3 need Gemma 3 12B"):
        check_gemma(path)
