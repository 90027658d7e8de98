"""Prompt texts and prompt enhancement on a tiny random Gemma-3 with a locally built tokenizer.

The reference's enhancement path (ltx_core GemmaTextEncoder.enhance_t2v / enhance_i2v) runs here on the CPU with
one change: its ``torch.random.fork_rng(devices=[model.device])`` asks for CUDA state even for a CPU device, so
the test swaps in a CPU-only fork. Everything else (chat template, Gemma3Processor, padding, generate) is its own.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config, gemma_text_state_dict
from aiprod.aiprod_core.text_encoder.prompts import (
    DEFAULT_NEGATIVE_PROMPT,
    I2V_SYSTEM_PROMPT,
    T2V_SYSTEM_PROMPT,
    causal_lm_from_encoder,
    clean_enhanced_prompt,
    enhance_prompt,
    enhancement_inputs,
    enhancement_messages,
    prompt_token_count,
)

PROMPT = "a red car drives along a beach at sunset while waves crash"
NEW_TOKENS = 12
_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
_IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
MM_TOKENS = 4  # image tokens per image of the tiny vision tower (28 px / 14 px patches, pooled to 2x2)

# The Gemma-3 chat template's behaviour: <bos>, the system text prefixed to the first user turn, turns framed by
# <start_of_turn>role ... <end_of_turn>, an image item as <start_of_image>, the generation prompt "model".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + (prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _words() -> list[str]:
    from tokenizers import pre_tokenizers

    text = " ".join((T2V_SYSTEM_PROMPT, I2V_SYSTEM_PROMPT, PROMPT, "slowly user prompt: User Raw Input Prompt: model."))
    return sorted({piece for piece, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)})


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*_SPECIALS, *_IMAGE_TOKENS, *_words()))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    built = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    # transformers 5 no longer registers `additional_special_tokens` given to the constructor: add them so the
    # turn markers stay single tokens (their ids are already in the vocabulary, so nothing new is added)
    built.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    built.chat_template = CHAT_TEMPLATE
    return built


def _gemma_config(vocab_size: int) -> dict:
    text = {
        "model_type": "gemma3_text",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 8,
        "sliding_window_pattern": 2,
        "rope_theta": 1_000_000,
        "rope_local_base_freq": 10_000,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "max_position_embeddings": 1024,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "eos_token_id": [1, 5],  # like the reference's Gemma config: <eos> and <end_of_turn>
        "bos_token_id": 2,
        "pad_token_id": 0,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 28,
        "patch_size": 14,
        "vision_use_head": False,
    }
    return {
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": vision,
        "mm_tokens_per_image": MM_TOKENS,
        "boi_token_index": 6,
        "eoi_token_index": 7,
        "image_token_index": 8,
        "eos_token_id": [1, 5],
    }


@pytest.fixture(scope="module")
def reference_gemma(tokenizer):
    """ltx-core's model class (Gemma3ForConditionalGeneration), tiny, seeded; logits scaled up so that sampling
    at temperature 0.7 is neither uniform nor greedy."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(7)
        model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(_gemma_config(len(tokenizer))))
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.1)
            elif param.ndim == 2 and "embed" not in name:
                param.normal_(0.0, param.shape[1] ** -0.5)
            elif "embed_tokens" in name:  # x sqrt(hidden) = RMS 0.8 at the input, ~ the normed block outputs
                param.normal_(0.0, 0.1)
            elif param.ndim >= 2:
                param.normal_(0.0, 1.0)
            else:
                param.normal_(0.0, 0.02)
    return model.eval()


@pytest.fixture(scope="module")
def ours_lm(reference_gemma):
    folder_state = {
        k.replace("model.language_model.", "language_model.model."): v for k, v in reference_gemma.state_dict().items()
    }
    config = _gemma_config(reference_gemma.config.text_config.vocab_size)
    encoder = GemmaTextEncoder(gemma_text_config(config), device="meta")
    encoder.load_state_dict(gemma_text_state_dict(folder_state), strict=True, assign=True)
    return causal_lm_from_encoder(encoder)


@pytest.fixture(scope="module")
def processor(tokenizer):
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    image_processor = Gemma3ImageProcessor(size={"height": 28, "width": 28})
    return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=MM_TOKENS)


@contextlib.contextmanager
def _reference_on_cpu(monkeypatch: pytest.MonkeyPatch, reference_gemma, calls: list):
    """The reference's fork_rng made CPU-only; its generate calls recorded."""
    original_fork, original_generate = torch.random.fork_rng, reference_gemma.generate

    def cpu_fork(devices=None, **kwargs):
        return original_fork(devices=[], **kwargs)

    def spy(**kwargs):
        calls.append(kwargs)
        return original_generate(**kwargs)

    monkeypatch.setattr(torch.random, "fork_rng", cpu_fork)
    monkeypatch.setattr(reference_gemma, "generate", spy)
    try:
        yield
    finally:
        monkeypatch.undo()


def _reference_encoder(reference_gemma, tokenizer, processor):
    from ltx_core.text_encoders.gemma import GemmaTextEncoder as RefEncoder

    return RefEncoder(model=reference_gemma, processor=processor, dtype=torch.float32)


def test_texts_are_the_references() -> None:
    from ltx_core.text_encoders.gemma.encoders.base_encoder import _load_system_prompt
    from ltx_pipelines.utils.constants import DEFAULT_NEGATIVE_PROMPT as REF_NEGATIVE

    assert DEFAULT_NEGATIVE_PROMPT == REF_NEGATIVE
    assert T2V_SYSTEM_PROMPT == _load_system_prompt("gemma_t2v_system_prompt.txt")
    assert I2V_SYSTEM_PROMPT == _load_system_prompt("gemma_i2v_system_prompt.txt")


def test_clean_matches_reference() -> None:
    from ltx_pipelines.utils.helpers import clean_response

    for text in ("\u201cHello\u201d \u2014 world", "  **1. Style: cinematic", "", "123", "\u00a0\u2018it\u2019s\u2019"):
        assert clean_enhanced_prompt(text) == clean_response(text)


def _prompt_of_length_modulo_8(tokenizer, remainder: int, processor=None, image=None) -> str:
    """PROMPT plus repeated words until the templated input length is = remainder (mod 8)."""
    for extra in range(8):
        prompt = PROMPT + " slowly" * extra
        messages = enhancement_messages(prompt, with_image=image is not None)
        if enhancement_inputs(tokenizer, messages, processor, image)["input_ids"].shape[1] % 8 == remainder:
            return prompt
    raise AssertionError("unreachable: eight consecutive lengths cover every remainder")


@pytest.mark.oracle
@torch.no_grad()
def test_t2v_inputs_and_output_match_reference(monkeypatch, reference_gemma, ours_lm, tokenizer, processor) -> None:
    """Where the reference's input needs no alignment padding, ids and the sampled text are identical."""
    prompt = _prompt_of_length_modulo_8(tokenizer, 0)
    calls: list = []
    with _reference_on_cpu(monkeypatch, reference_gemma, calls):
        ref_text = _reference_encoder(reference_gemma, tokenizer, processor).enhance_t2v(
            prompt, max_new_tokens=NEW_TOKENS, seed=3
        )
    ours_inputs = enhancement_inputs(tokenizer, enhancement_messages(prompt))
    assert torch.equal(ours_inputs["input_ids"], calls[0]["input_ids"])
    assert torch.equal(ours_inputs["attention_mask"], calls[0]["attention_mask"])
    ids = ours_inputs["input_ids"][0].tolist()
    assert ids[:3] == [2, 2, tokenizer.convert_tokens_to_ids("<start_of_turn>")]  # the reference's double <bos>
    assert tokenizer.unk_token_id not in ids  # the whole system prompt is in the tiny vocabulary
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert T2V_SYSTEM_PROMPT.split()[5] in text and "user prompt : " + prompt in text
    assert text.count("<start_of_turn>") == 2 and text.endswith("<start_of_turn> model")

    ours = enhance_prompt(ours_lm, tokenizer, prompt, seed=3, max_new_tokens=NEW_TOKENS)
    assert ours == clean_enhanced_prompt(ref_text)
    assert len(ours.split()) >= 3  # real words were sampled, not an immediate stop
    assert ours != enhance_prompt(ours_lm, tokenizer, prompt, do_sample=False, max_new_tokens=NEW_TOKENS)


@pytest.mark.oracle
@torch.no_grad()
def test_t2v_inputs_without_the_reference_right_padding(monkeypatch, reference_gemma, tokenizer, processor) -> None:
    """The reference right-pads to a multiple of 8 (pads after the generation prompt); ours is its unpadded part."""
    prompt = _prompt_of_length_modulo_8(tokenizer, 3)
    calls: list = []
    with _reference_on_cpu(monkeypatch, reference_gemma, calls):
        _reference_encoder(reference_gemma, tokenizer, processor).enhance_t2v(prompt, max_new_tokens=1, seed=0)
    ref_ids, ref_mask = calls[0]["input_ids"], calls[0]["attention_mask"]
    assert ref_ids.shape[1] % 8 == 0 and ref_ids[0, -5:].tolist() == [0] * 5 and ref_mask[0, -5:].sum() == 0
    ours = enhancement_inputs(tokenizer, enhancement_messages(prompt))
    assert torch.equal(ours["input_ids"], ref_ids[:, :-5]) and torch.equal(ours["attention_mask"], ref_mask[:, :-5])


@torch.no_grad()
def test_seeded_sampling_is_deterministic_and_leaves_the_rng_alone(ours_lm, tokenizer) -> None:
    state = torch.get_rng_state()
    runs = {seed: enhance_prompt(ours_lm, tokenizer, PROMPT, seed=seed, max_new_tokens=NEW_TOKENS) for seed in (1, 2)}
    assert torch.equal(torch.get_rng_state(), state)
    assert enhance_prompt(ours_lm, tokenizer, PROMPT, seed=1, max_new_tokens=NEW_TOKENS) == runs[1]
    assert runs[1] != runs[2]
    greedy = {enhance_prompt(ours_lm, tokenizer, PROMPT, seed=s, do_sample=False, max_new_tokens=4) for s in (1, 2)}
    assert len(greedy) == 1
    assert len(tokenizer(runs[1], add_special_tokens=False).input_ids) <= NEW_TOKENS


@pytest.mark.oracle
@torch.no_grad()
def test_i2v_inputs_and_output_match_reference(monkeypatch, reference_gemma, tokenizer, processor) -> None:
    from ltx_pipelines.utils.media_io import resize_aspect_ratio_preserving

    image = torch.randint(0, 256, (40, 30, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ref_image = resize_aspect_ratio_preserving(image, 896).to(torch.uint8)  # the reference's generate_enhanced_prompt
    prompt = _prompt_of_length_modulo_8(tokenizer, 0, processor, ref_image)
    calls: list = []
    with _reference_on_cpu(monkeypatch, reference_gemma, calls):
        ref_text = _reference_encoder(reference_gemma, tokenizer, processor).enhance_i2v(
            prompt, ref_image, max_new_tokens=NEW_TOKENS, seed=5
        )
        ours = enhance_prompt(
            reference_gemma, tokenizer, prompt, image=image, processor=processor, seed=5, max_new_tokens=NEW_TOKENS
        )
    ref_inputs, our_inputs = calls
    for key in ("input_ids", "attention_mask", "token_type_ids", "pixel_values"):
        assert torch.equal(our_inputs[key], ref_inputs[key]), key
    assert (our_inputs["input_ids"] == tokenizer.convert_tokens_to_ids("<image_soft_token>")).sum() == MM_TOKENS
    assert ours == clean_enhanced_prompt(ref_text)


def test_errors() -> None:
    with pytest.raises(ValueError, match="max_new_tokens=0: must be >= 1"):
        enhance_prompt(None, None, PROMPT, max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature=0.0: must be > 0 when sampling"):
        enhance_prompt(None, None, PROMPT, temperature=0.0)
    with pytest.raises(ValueError, match="image given without a processor"):
        enhancement_inputs(None, [], image=torch.zeros(2, 2, 3))


def test_causal_lm_shares_the_encoder_weights(ours_lm, tokenizer) -> None:
    backbone = ours_lm.model
    assert ours_lm.lm_head.weight is backbone.embed_tokens.weight  # tied, not copied
    assert not any(t.is_meta for t in (*ours_lm.parameters(), *ours_lm.buffers()))
    assert prompt_token_count(tokenizer, "  a red car  ") == 4  # <bos> a red car
