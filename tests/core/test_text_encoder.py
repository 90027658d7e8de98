"""Text path: feature extractor + embeddings connectors (both generations) and the tiny-Gemma text encoder.

The reference (ltx-core) sizes its feature extractor from a hard-coded Gemma-3-12B config; the tiny one is put in
place by ``tiny_configs.tiny_gemma_feature_config`` (used by ``build_reference_module``).
"""

from __future__ import annotations

import pytest
import torch
from support import tiny_configs as tc
from support.tiny_checkpoints import build_reference_module, init_module

from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor

SEQ_LEN = 128  # the reference needs a multiple of its 128 registers
VALID_LENGTHS = (100, 37)  # left padding, as the Gemma tokenizer wrapper pads


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    bound = 1e-5 * max(1.0, ref.abs().max().item())
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= bound, f"{what}: max|ours - ref| = {diff:.3e} > {bound:.3e}"
    return diff


def _reference_processor(generation: str) -> torch.nn.Module:
    from ltx_core.text_encoders.gemma import EmbeddingsProcessorConfigurator

    config = tc.checkpoint_config(generation)
    module = build_reference_module(EmbeddingsProcessorConfigurator, config)
    return init_module(module, seed=5, to_file_key=lambda k: f"{generation}:{k}", config=config).float()


def _ours(generation: str, dtype: torch.dtype = torch.float32, state: dict | None = None) -> TextEmbeddingsProcessor:
    config = TextEmbeddingsConfig.from_metadata(tc.checkpoint_config(generation))
    ours = TextEmbeddingsProcessor(
        config, tc.TINY_GEMMA_HIDDEN_SIZE, tc.TINY_GEMMA_NUM_LAYERS, dtype=dtype, device="meta"
    )
    if state is not None:
        ours.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return ours.eval()


def _left_padded_mask(lengths: tuple[int, ...], seq_len: int = SEQ_LEN) -> torch.Tensor:
    positions = torch.arange(seq_len)[None, :]
    return (positions >= seq_len - torch.tensor(lengths)[:, None]).to(torch.int64)  # (B, T)


def _hidden_states(batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """L = layers + 1 hidden states (B, T, D) with per-layer scales and offsets, like a real LM's."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, SEQ_LEN, tc.TINY_GEMMA_HIDDEN_SIZE)
    return tuple(
        torch.randn(shape, generator=gen) * (1.0 + 3.0 * layer) + 0.5 * layer
        for layer in range(tc.TINY_GEMMA_NUM_LAYERS + 1)
    )


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_feature_extractor_matches_reference(generation: str) -> None:
    reference = _reference_processor(generation)
    ours = _ours(generation, state=reference.state_dict())
    hidden, mask = _hidden_states(2), _left_padded_mask(VALID_LENGTHS)
    ref_video, ref_audio = reference.feature_extractor(hidden, mask, "left")
    video, audio = ours.feature_extractor(hidden, mask)
    _assert_close(video, ref_video, "video features")
    _assert_close(audio, ref_audio, "audio features")


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_embeddings_processor_matches_reference(generation: str) -> None:
    reference = _reference_processor(generation)
    ours = _ours(generation, state=reference.state_dict())
    hidden, mask = _hidden_states(1), _left_padded_mask(VALID_LENGTHS[:1])
    expected = reference.process_hidden_states(hidden, mask)
    got = ours(hidden, mask)
    _assert_close(got.video, expected.video_encoding, "video")
    _assert_close(got.audio, expected.audio_encoding, "audio")
    assert torch.equal(got.mask, expected.attention_mask)


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_batch_of_two_matches_two_reference_runs(generation: str) -> None:
    """The reference's register packing assumes batch 1; ours packs per sample."""
    reference = _reference_processor(generation)
    ours = _ours(generation, state=reference.state_dict())
    hidden, mask = _hidden_states(2, seed=1), _left_padded_mask(VALID_LENGTHS)
    got = ours(hidden, mask)
    for i in range(2):
        expected = reference.process_hidden_states(tuple(h[i : i + 1] for h in hidden), mask[i : i + 1])
        _assert_close(got.video[i : i + 1], expected.video_encoding, f"video[{i}]")
        _assert_close(got.audio[i : i + 1], expected.audio_encoding, f"audio[{i}]")
        assert torch.equal(got.mask[i : i + 1], expected.attention_mask)


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_embeddings_processor_bf16_close_to_float32(generation: str) -> None:
    state = _reference_processor(generation).state_dict()
    hidden, mask = _hidden_states(2, seed=2), _left_padded_mask(VALID_LENGTHS)
    f32 = _ours(generation, state=state)(hidden, mask)
    bf16 = _ours(generation, torch.bfloat16, state)(tuple(h.bfloat16() for h in hidden), mask)
    for name in ("video", "audio"):
        ref, low = getattr(f32, name), getattr(bf16, name).float()
        assert torch.isfinite(low).all()
        rel = ((low - ref).norm() / ref.norm()).item()
        assert rel < 3e-2, (name, rel)


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_meta_build_has_reference_keys_and_loads_strictly(generation: str) -> None:
    state = _reference_processor(generation).state_dict()
    ours = _ours(generation)
    assert all(t.is_meta for t in ours.state_dict().values())
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    ours.load_state_dict(state, strict=True, assign=True)
    assert not any(t.is_meta for t in ours.state_dict().values())


def test_config_reads_both_generations_and_rejects_drift() -> None:
    ltx2 = TextEmbeddingsConfig.from_metadata(tc.checkpoint_config(tc.LTX2))
    ltx23 = TextEmbeddingsConfig.from_metadata(tc.checkpoint_config(tc.LTX23))
    assert ltx2.kind.value == "aggregate" and ltx23.kind.value == "dual"
    assert ltx2.video_connector.inner_dim == ltx2.audio_connector.inner_dim == tc.CAPTION_CHANNELS
    assert (ltx23.video_connector.inner_dim, ltx23.audio_connector.inner_dim) == (64, 32)
    assert ltx23.video_connector.gated_attention and ltx23.video_connector.double_precision_rope

    def rejected(**changes: object) -> str:
        config = tc.checkpoint_config(tc.LTX23)
        config["transformer"].update(changes)
        with pytest.raises(ValueError) as info:
            TextEmbeddingsConfig.from_metadata(config)
        return str(info.value)

    assert rejected(caption_proj_input_norm=True) == "transformer.caption_proj_input_norm=True, expected False"
    assert rejected(text_encoder_norm_type="per_segment").startswith(
        "transformer.text_encoder_norm_type='per_segment'")
    assert rejected(rope_type="spiral").startswith("transformer.rope_type='spiral'")
    assert rejected(connector_num_learnable_registers=64) == (
        "transformer.connector_num_learnable_registers=64, expected 128")
    assert rejected(connector_attention_head_dim=8).startswith(
        "transformer.connector_num_attention_heads * connector_att")
    assert rejected(connector_num_layers=10**9) == (
        "transformer.connector_num_layers=1000000000, expected 'an int in [1, 256]'")
    assert rejected(connector_positional_embedding_max_pos=[4096, 1]).startswith(
        "transformer.connector_positional_embedding_max_pos=[4096, 1], expected 'a list of 1 ints")


# ------------------------------------------------------------------------------------------------------------
# The whole text path on a tiny random Gemma-3 with a locally built tokenizer
# ------------------------------------------------------------------------------------------------------------

_WORDS = (
    "a cat dog runs jumps over the lazy red blue car street at night with neon lights camera pans slowly "
    "left right close up of woman man smiling rain falls on window sunset beach waves crash"
).split()
PROMPTS = (
    "  A red car runs over the street at night with neon lights, camera pans slowly left  ",
    "close up of a smiling woman zebra",  # "zebra" is out of vocabulary -> <unk>
)
_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")  # Gemma's ids 0..3


def _tiny_gemma_config_json() -> dict:
    """config.json of a Gemma3ForConditionalGeneration folder, shrunk (2 layers, hidden 64; layer 0 sliding)."""
    text = {
        "model_type": "gemma3_text",
        "vocab_size": 96,
        "hidden_size": tc.TINY_GEMMA_HIDDEN_SIZE,
        "intermediate_size": 128,
        "num_hidden_layers": tc.TINY_GEMMA_NUM_LAYERS,
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
    return {"model_type": "gemma3", "text_config": text, "vision_config": vision, "mm_tokens_per_image": 4}


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*_SPECIALS, *_WORDS, ",", "."))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    folder = tmp_path_factory.mktemp("tiny_gemma_tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


@torch.no_grad()
def _reference_gemma() -> torch.nn.Module:
    """ltx-core's Gemma3ForConditionalGeneration, tiny, honestly initialised (norms are 1 + w in Gemma)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(_tiny_gemma_config_json()))
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.1)
            elif param.ndim == 2 and "embed" not in name:
                param.normal_(0.0, param.shape[1] ** -0.5)
            elif param.ndim >= 2:
                param.normal_(0.0, 1.0)
            else:
                param.normal_(0.0, 0.02)
    return model.eval()


def _ours_gemma(reference: torch.nn.Module, dtype: torch.dtype = torch.float32):
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config, gemma_text_state_dict

    # the Gemma folder layout (transformers < 4.52 names): language_model.model.*, vision_tower.*, ...
    folder_state = {
        k.replace("model.language_model.", "language_model.model.").replace("model.vision_tower.", "vision_tower."): v
        for k, v in reference.state_dict().items()
    }
    encoder = GemmaTextEncoder(gemma_text_config(_tiny_gemma_config_json()), dtype=dtype, device="meta")
    state = {k: v.to(dtype) for k, v in gemma_text_state_dict(folder_state).items()}
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder


def test_gemma_meta_build_loads_both_weight_layouts() -> None:
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config, gemma_text_state_dict

    reference = _reference_gemma()
    encoder = GemmaTextEncoder(gemma_text_config(_tiny_gemma_config_json()), device="meta")
    assert all(p.is_meta for p in encoder.parameters())
    assert not any(b.is_meta for b in encoder.buffers())  # rope tables / embed scale stay computed
    state = gemma_text_state_dict(reference.state_dict())  # transformers >= 4.52 layout: model.language_model.*
    assert not any("vision" in k or "lm_head" in k for k in state)
    encoder.load_state_dict(state, strict=True, assign=True)
    assert not any(t.is_meta for t in (*encoder.parameters(), *encoder.buffers()))
    assert (encoder.hidden_size, encoder.num_layers) == (tc.TINY_GEMMA_HIDDEN_SIZE, tc.TINY_GEMMA_NUM_LAYERS)
    with pytest.raises(KeyError, match="no Gemma text backbone"):
        gemma_text_state_dict({"vision_tower.x": torch.zeros(1)})
    with pytest.raises(ValueError, match="model_type='llama'"):
        gemma_text_config({"model_type": "llama"})


def _reference_text_path(tokenizer_dir, reference_gemma: torch.nn.Module, generation: str):
    from ltx_core.text_encoders.gemma import GemmaTextEncoder as RefEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    encoder = RefEncoder(model=reference_gemma, tokenizer=LTXVGemmaTokenizer(str(tokenizer_dir), SEQ_LEN))
    processor = _reference_processor(generation)
    return encoder, processor


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_text_path_batch_matches_reference_per_prompt(generation: str, tiny_tokenizer_dir) -> None:
    from aiprod.aiprod_core.text_encoder import GemmaPromptTokenizer, encode_prompts

    reference_gemma = _reference_gemma()
    ref_encoder, ref_processor = _reference_text_path(tiny_tokenizer_dir, reference_gemma, generation)
    tokenizer = GemmaPromptTokenizer.from_folder(tiny_tokenizer_dir, SEQ_LEN)
    encoder = _ours_gemma(reference_gemma)
    processor = _ours(generation, state=ref_processor.state_dict())

    got = encode_prompts(PROMPTS, tokenizer, encoder, processor)
    ids, mask = tokenizer(PROMPTS)
    assert mask.sum(dim=1).tolist() == [18, 8] and ids[1, -1].item() == 3  # <bos> + words; <unk>
    for i, prompt in enumerate(PROMPTS):
        ref_hidden, ref_mask = ref_encoder.encode(prompt)
        assert torch.equal(ref_mask, mask[i : i + 1])
        hidden = encoder(ids[i : i + 1], mask[i : i + 1])
        valid = ref_mask[0].bool()
        for layer, (ours_h, ref_h) in enumerate(zip(hidden, ref_hidden, strict=True)):
            _assert_close(ours_h[0, valid], ref_h[0, valid], f"hidden state {layer}")
        expected = ref_processor.process_hidden_states(ref_hidden, ref_mask)
        _assert_close(got.video[i : i + 1], expected.video_encoding, f"video[{i}]")
        _assert_close(got.audio[i : i + 1], expected.audio_encoding, f"audio[{i}]")


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_text_path_bf16_close_to_float32(generation: str, tiny_tokenizer_dir) -> None:
    from aiprod.aiprod_core.text_encoder import GemmaPromptTokenizer, encode_prompts

    reference_gemma = _reference_gemma()
    state = _reference_processor(generation).state_dict()
    tokenizer = GemmaPromptTokenizer.from_folder(tiny_tokenizer_dir, SEQ_LEN)
    f32 = encode_prompts(PROMPTS, tokenizer, _ours_gemma(reference_gemma), _ours(generation, state=state))
    low = encode_prompts(
        PROMPTS,
        tokenizer,
        _ours_gemma(reference_gemma, torch.bfloat16),
        _ours(generation, torch.bfloat16, state),
    )
    for name in ("video", "audio"):
        ref, got = getattr(f32, name), getattr(low, name).float()
        assert torch.isfinite(got).all()
        rel = ((got - ref).norm() / ref.norm()).item()
        assert rel < 3e-2, (name, rel)
