"""Tiny Gemma-3 files in ComfyUI's layout, with a SentencePiece tokenizer trained here and embedded in the file.

ComfyUI's ``gemma_3_12B_it*.safetensors`` hold the text backbone under ``model.*`` (Hugging Face names), the
vision tower under ``vision_model.*``, the projector under ``multi_modal_projector.*`` and the tokenizer as
``spiece_model``: a 1-D uint8 tensor holding the serialized SentencePiece ``ModelProto`` (ComfyUI
``comfy/text_encoders/lt.py``, ``spiece_tokenizer.py``). The SentencePiece model is trained in memory with the
options Gemma's tokenizer has (BPE, byte fallback, identity normalisation, no dummy prefix, whitespace kept,
digits split, ``<pad>`` 0 / ``<eos>`` 1 / ``<bos>`` 2 / ``<unk>`` 3, control and user-defined symbols), and the
"Google" tokenizer folder (``tokenizer.model`` + ``tokenizer_config.json``, optionally ``tokenizer.json``) is
written from the same bytes, so transformers' tokenizer is the oracle for ours.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any

import torch

from support import tiny_configs as tc
from support.demo_module import load_demo_models_module

__all__ = [
    "CHAT_TEMPLATE",
    "QUANT_RECIPES",
    "VISION_KEYS",
    "comfy_gemma_tensors",
    "gemma_config",
    "gemma_text_tensors",
    "quantize_comfy_gemma",
    "spiece_model",
    "spiece_tensor",
    "write_google_tokenizer",
]

CONTROL_SYMBOLS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>")
USER_SYMBOLS = ("<mask>", "[@BOS@]", "<unused0>")
EXTRA_TOKEN = "<image_soft_token>"  # Google's tokenizer.json adds it after the model's pieces
CORPUS_LINES = (
    "A red fox trots through fresh snow in a quiet birch forest at dawn, its breath visible in the cold air.",
    "Soft crunching footsteps and distant birdsong; a cat, a dog and a car at night in the rain.",
    "Ünïcödé façade naïve café, Straße, ñandú, 東京の夜, 북극곰, Привет мир, 😀🦊🌲 emoji!",
    "Numbers 12345 and 2026-12-02, prices $9.99 / €10; code: x = f(y) + 1 # comment",
    "Spaces   and\ttabs\nnew lines\n\n  indented text, trailing space ",
    "You are a Creative Assistant. Given a user's raw input prompt describing a scene or concept, expand it "
    "into a detailed video generation prompt with specific visuals and integrated audio.",
    "Style: realistic with cinematic lighting. In a medium close-up, a woman sits at a small wooden table.",
)
# The Gemma-3 chat format as a transformers chat template: the demo tokenizer's (one definition).
CHAT_TEMPLATE = load_demo_models_module().GEMMA3_CHAT_TEMPLATE
# A few keys of each part ComfyUI's file carries besides the text backbone (Gemma3_12B: vision_model, projector).
VISION_KEYS = {
    "vision_model.embeddings.patch_embedding.weight": (32, 3, 14, 14),
    "vision_model.embeddings.position_embedding.weight": (4, 32),
    "vision_model.encoder.layers.0.self_attn.q_proj.weight": (32, 32),
    "vision_model.post_layernorm.weight": (32,),
    "multi_modal_projector.mm_input_projection_weight": (32, tc.TINY_GEMMA_HIDDEN_SIZE),
    "multi_modal_projector.mm_soft_emb_norm.weight": (32,),
}


@functools.cache
def spiece_model(split_by_whitespace: bool = True, vocab_size: int = 480) -> bytes:
    """A serialized SentencePiece BPE model trained on a small fixed corpus with Gemma's options (deterministic:
    one thread, fixed input)."""
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS_LINES * 8), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        split_by_whitespace=split_by_whitespace, character_coverage=1.0, hard_vocab_limit=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", control_symbols=list(CONTROL_SYMBOLS), user_defined_symbols=list(USER_SYMBOLS),
        num_threads=1, minloglevel=2,
    )
    return out.getvalue()


def piece_count(model: bytes) -> int:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=model).get_piece_size()


def spiece_tensor(model: bytes) -> torch.Tensor:
    """The bytes as ComfyUI stores them: a 1-D uint8 tensor named ``spiece_model``."""
    return torch.frombuffer(bytearray(model), dtype=torch.uint8).clone()


def write_google_tokenizer(model: bytes, folder: Path, with_json: bool = False) -> Path:
    """``tokenizer.model`` + ``tokenizer_config.json`` as google/gemma-3-12b-it ships them (BOS added, no EOS,
    ``<image_soft_token>`` added after the pieces, the chat template); ``with_json`` also writes transformers'
    ``tokenizer.json`` converted from the model (what AutoTokenizer then prefers)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model)
    config = {
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "mask_token": "<mask>", "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "added_tokens_decoder": {str(piece_count(model)): {"content": EXTRA_TOKEN, "special": True,
                                                           "lstrip": False, "rstrip": False, "normalized": False,
                                                           "single_word": False}},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if with_json:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(folder), local_files_only=True).save_pretrained(str(folder))
        (folder / "tokenizer.model").unlink()  # tokenizer.json alone, as transformers reads Google's folder
    return folder


def gemma_config(vocab_size: int) -> dict[str, Any]:
    """A tiny Gemma-3 text config sized for the tiny checkpoints' text projection (64 wide, 2 layers)."""
    return {
        "model_type": "gemma3_text", "vocab_size": vocab_size, "hidden_size": tc.TINY_GEMMA_HIDDEN_SIZE,
        "intermediate_size": 96, "num_hidden_layers": tc.TINY_GEMMA_NUM_LAYERS, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8,
        "sliding_window_pattern": 2, "rope_theta": 1_000_000, "rope_local_base_freq": 10_000,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "max_position_embeddings": 131072,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
    }


def gemma_text_tensors(vocab_size: int, seed: int = 5) -> dict[str, torch.Tensor]:
    """Seeded tiny Gemma-3 text backbone (bf16) keyed as in a text-only file (``model.*``)."""
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = GemmaTextEncoder(gemma_text_config(gemma_config(vocab_size)))
        for name, param in encoder.named_parameters():
            std = 0.02 if "embed_tokens" in name else 0.1 if "norm" in name else param.shape[-1] ** -0.5
            torch.nn.init.normal_(param, 0.0, std)
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in encoder.state_dict().items()}


def comfy_gemma_tensors(model: bytes, text: dict[str, torch.Tensor], seed: int = 9) -> dict[str, torch.Tensor]:
    """ComfyUI's layout: the text backbone (``model.*``), vision tower and projector keys, ``spiece_model``."""
    gen = torch.Generator().manual_seed(seed)
    tensors = dict(text)
    for key, shape in VISION_KEYS.items():
        tensors[key] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
    tensors["spiece_model"] = spiece_tensor(model)
    return tensors


# ComfyUI's quantized Gemma files, per Linear of the text backbone (the last word of the layer name) -> format;
# a name not listed stays bf16. `_fp4_mixed`: nvfp4 for most Linears, some float8, some bf16 (302 nvfp4, 34
# float8 and the rest dense in the 12B file); `_fp8_scaled`: every Linear float8 with a per-tensor scale.
QUANT_RECIPES: dict[str, dict[str, str]] = {
    "fp4_mixed": {"q_proj": "nvfp4", "k_proj": "nvfp4", "v_proj": "nvfp4", "gate_proj": "nvfp4", "up_proj": "nvfp4",
                  "o_proj": "float8_e4m3fn"},  # down_proj kept bf16
    "fp8_scaled": dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                                "float8_e4m3fn"),
    "fp8_scaled_legacy": dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                        "down_proj"), "scaled_fp8"),
}


def quantize_comfy_gemma(tensors: dict[str, torch.Tensor], recipe: str, carrier: str = "comfy_quant"
                         ) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """``tensors`` (ComfyUI layout) with the text backbone's Linears quantized by `QUANT_RECIPES` [recipe], with
    the quant test converters (`support.quant_files`). ``carrier``: per-layer ``comfy_quant`` tensors or the
    ``_quantization_metadata`` header. Returns (tensors, header metadata, layer -> format)."""
    from support import quant_files as qf

    out, layers, formats = dict(tensors), {}, {}
    for key, value in tensors.items():
        if not (key.startswith("model.layers.") and key.endswith("_proj.weight")):
            continue
        layer = key.removesuffix(".weight")
        kind = QUANT_RECIPES[recipe].get(layer.rpartition(".")[2])
        if kind is None:
            continue
        quantizer, config = qf.QUANTIZERS[kind]
        out.update({f"{layer}.{suffix}": t for suffix, t in quantizer(value.float()).items()})
        formats[layer] = kind
        if config is not None and carrier == "comfy_quant":
            out[f"{layer}.comfy_quant"] = qf._json_tensor(config)
        layers[layer] = config
    metadata = {}
    if recipe == "fp8_scaled_legacy":
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    elif carrier == "_quantization_metadata":
        metadata["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers})
    return out, metadata, formats
