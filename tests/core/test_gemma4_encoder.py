"""Gemma-4 (LTX-2.5) text path: our `Gemma4TextEncoder` + `Gemma4PromptTokenizer` against the references.

Oracles: transformers' own ``Gemma4UnifiedForConditionalGeneration`` called the way ltx-core 1.2.0 encodes
(``model.model(input_ids, attention_mask, output_hidden_states=True)``), and diffusers 0.42.1
``LTX2Pipeline._get_gemma_prompt_embeds`` (tokenizer + full model + stacked, flattened hidden states).
Tokenization: where the tokenizer adds no ``<bos>`` (Gemma 4's), ltx-core puts one first and diffusers does not;
the Lightricks reference wins (its changelog: "Fixed Gemma 4 text encoding without a leading BOS token").
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from support import tiny_configs as tc
from support import tiny_gemma4 as tg

from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor, encode_prompts
from aiprod.aiprod_core.text_encoder.gemma4 import (
    GEMMA4_MIN_TRANSFORMERS,
    Gemma4PromptTokenizer,
    Gemma4TextEncoder,
    TransformersVersionError,
    gemma4_placeholder_ids,
    gemma4_text_config,
)

SEQ_LEN = 12
PROMPTS = ["a red cat runs over the wet street at night while rain falls", "the dog runs slowly"]


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    assert torch.isfinite(ref).all(), what
    bound = 1e-5 * max(1.0, ref.abs().max().item())
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= bound, f"{what}: max|ours - ref| = {diff:.3e} > {bound:.3e}"
    return diff


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tg.build_model(seed=3)


def _ours(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> Gemma4TextEncoder:
    config = tg.config()
    encoder = Gemma4TextEncoder(gemma4_text_config(config), dtype=dtype, device="meta",
                                placeholder_ids=gemma4_placeholder_ids(config))
    prefix = "model.language_model."
    state = {"model." + k[len(prefix):]: v.to(dtype) for k, v in model.state_dict().items() if k.startswith(prefix)}
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder.eval()


def _tokenizer(bos_post_processor: bool = False, max_length: int = SEQ_LEN) -> Gemma4PromptTokenizer:
    return Gemma4PromptTokenizer.from_tokenizer_json(tg.tokenizer_json(bos_post_processor), tg.TOKENIZER_CONFIG,
                                                     tg.CHAT_TEMPLATE, max_length)


def _left_padded_ids() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(len(tg.SPECIALS), len(tg.SPECIALS) + len(tg.WORDS), (2, SEQ_LEN), generator=gen)
    ids[:, 0] = 2  # <bos>
    ids[0, 6] = tg.PLACEHOLDERS["image_token_id"][1]  # embedded as <pad> by the multimodal model
    mask = torch.ones_like(ids)
    mask[1, :5], ids[1, :5] = 0, 0  # left padding
    ids[1, 5] = 2
    return ids, mask


@pytest.mark.oracle
@torch.no_grad()
def test_hidden_states_match_transformers_multimodal_model(model) -> None:
    """All L = layers + 1 hidden states, left padding, sliding-window and full (K = V) layers, a placeholder id."""
    ids, mask = _left_padded_ids()
    expected = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    got = _ours(model)(ids, mask)
    assert len(got) == len(expected) == tg.LAYERS + 1
    for layer, (ours, ref) in enumerate(zip(got, expected, strict=True)):
        _assert_close(ours, ref, f"hidden state {layer}")  # padded positions included
    assert max(h.abs().max().item() for h in expected) > 1.0  # the bound is relative, not absolute


@pytest.mark.oracle
@torch.no_grad()
def test_prompt_embeds_match_diffusers(model) -> None:
    """diffusers' whole prompt path on a tokenizer that adds <bos> itself (where the references agree)."""
    from diffusers import LTX2Pipeline

    ours_tokenizer = _tokenizer(bos_post_processor=True, max_length=16)
    pipe = SimpleNamespace(tokenizer=_tokenizer(bos_post_processor=True, max_length=16).tokenizer,
                           text_encoder=model)
    expected, expected_mask = LTX2Pipeline._get_gemma_prompt_embeds(
        pipe, PROMPTS, max_sequence_length=16, device=torch.device("cpu"), dtype=torch.float32)
    ids, mask = ours_tokenizer(PROMPTS)
    assert torch.equal(mask, expected_mask)
    got = torch.stack(_ours(model)(ids, mask), dim=-1).flatten(2)  # (B, T, D * L), diffusers' packing
    _assert_close(got, expected, "packed prompt embeddings")


def test_tokenizer_puts_one_bos_first_and_pads_left() -> None:
    """Lightricks LTXGemmaTokenizer: strip, truncate, <bos> first when missing (never twice), left-pad."""
    words = [tg.WORDS.index(w) + len(tg.SPECIALS) for w in "the dog runs".split()]
    for bos_post_processor in (False, True):
        ids, mask = _tokenizer(bos_post_processor, max_length=8)(["  the dog runs "])
        assert ids.tolist() == [[0, 0, 0, 0, 2, *words]]
        assert mask.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]


def test_diffusers_differs_where_the_tokenizer_adds_no_bos() -> None:
    """The one place the references disagree: diffusers feeds Gemma 4 no <bos>; we follow ltx-core."""
    tokenizer = _tokenizer(bos_post_processor=False, max_length=8)
    theirs = tokenizer.tokenizer(["the dog runs"], padding="max_length", max_length=8, truncation=True,
                                 add_special_tokens=True).input_ids[0]
    assert 2 not in theirs
    assert tokenizer(["the dog runs"])[0][0, 4].item() == 2


def test_long_prompt_is_clipped_with_bos_and_a_warning(caplog) -> None:
    tokenizer = _tokenizer(max_length=6)
    with caplog.at_level(logging.WARNING):
        ids, mask = tokenizer([" ".join(tg.WORDS)])
    first = [len(tg.SPECIALS) + i for i in range(5)]
    assert ids.tolist() == [[2, *first]] and mask.all()
    assert "only the first 6 reach the model" in caplog.text and f"{len(tg.WORDS) + 1} tokens" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tokenizer(["a cat dog runs over"])  # exactly 6 with <bos>: not clipped
    assert "reach the model" not in caplog.text


@torch.no_grad()
def test_bf16_close_to_float32(model) -> None:
    """bf16 weights and activations: relative L2 error of each valid hidden state below 3e-2."""
    ids, mask = _left_padded_ids()
    f32, bf16 = _ours(model)(ids, mask), _ours(model, torch.bfloat16)(ids, mask)
    valid = mask.bool()
    for layer, (high, low) in enumerate(zip(f32, bf16, strict=True)):
        ref, got = high[valid], low[valid].float()
        assert torch.isfinite(got).all()
        rel = ((got - ref).norm() / ref.norm()).item()
        assert rel < 3e-2, (layer, rel)


@torch.no_grad()
def test_encode_prompts_takes_the_gemma4_encoder(model) -> None:
    """The plain interface: the same `encode_prompts` as Gemma 3, hidden states L x (B, T, D) + mask."""
    section = {**tc.checkpoint_config(tc.LTX23)["transformer"]}
    processor = TextEmbeddingsProcessor(TextEmbeddingsConfig.from_metadata({"transformer": section}), tg.HIDDEN,
                                        tg.LAYERS, dtype=torch.float32)
    torch.manual_seed(0)
    for parameter in processor.parameters():  # built with torch.empty: give every weight (registers too) values
        torch.nn.init.normal_(parameter, std=0.05)
    tokenizer = _tokenizer(max_length=128)  # the connectors need a multiple of their 128 registers
    out = encode_prompts(PROMPTS, tokenizer, _ours(model), processor)
    assert out.video.shape == (2, 128, tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM)
    assert out.audio.shape == (2, 128, tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM)
    assert torch.isfinite(out.video).all() and torch.isfinite(out.audio).all()


@pytest.mark.parametrize(("config", "message"), [
    ({"model_type": "gemma4", "text_config": tg.TEXT_CONFIG}, r"model_type='gemma4', expected .*prompt enhancer"),
    ({"model_type": "gemma3", "text_config": {}},
     r"model_type='gemma3', expected \('gemma4_unified', 'gemma4_unified_text'\)"),
    ({"model_type": "gemma4_unified"}, r"text_config=None, expected"),
    ({"model_type": "gemma4_unified", "text_config": {**tg.TEXT_CONFIG, "hidden_size": "wide"}},
     r"text_config is not a valid Gemma-4 text config"),
])
def test_config_errors_name_the_key(config, message) -> None:
    with pytest.raises(ValueError, match=message):
        gemma4_text_config(config)


@pytest.mark.parametrize("installed", ["4.57.1", "5.9.0"])
def test_old_transformers_is_named_with_the_version_needed(monkeypatch, installed) -> None:
    import transformers

    monkeypatch.setattr(transformers, "__version__", installed)
    with pytest.raises(TransformersVersionError, match=rf"transformers=={installed} cannot run Gemma 4 .* needs "
                       rf"transformers>={GEMMA4_MIN_TRANSFORMERS}\. .*Gemma 3 \(LTX-2 / LTX-2\.3\) keeps working"):
        gemma4_text_config(tg.config())
