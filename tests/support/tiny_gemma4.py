"""Tiny Gemma-4 (``gemma4_unified``) text encoders built with transformers' own classes, saved in the real layouts.

- `build_model`: a seeded ``Gemma4UnifiedForConditionalGeneration`` (float32) with the 12B model's structure in
  miniature: 5:1-style sliding / full layers, wider heads and one shared K=V head on the full-attention layers
  (``attention_k_eq_v``), vision and audio embedders (so files carry their keys), random layer scalars.
- Writers for the Hugging Face folder (``config.json`` as the 12B release writes it, with ``gemma_version``), the
  Lightricks single file ``gemma4-12b-with-proj-ltx-2.5-bf16`` (ltx-core's packer: ComfyUI-flat keys, tower
  renames, ``text_embedding_projection.*``, ``tokenizer_json`` / ``hf_asset__*`` byte tensors, ``gemma_config``
  metadata), the same with HF keys, and a ComfyUI ``int8-convrot``-style repack (int8 rows + ``weight_scale`` +
  ``comfy_quant``).
- `transformer_header_file`: a header-only stand-in for a transformer file, with a generation's metadata.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from . import tiny_configs as tc

GEMMA_VERSION = "gemma4-12b-ltx-v1"  # the stamp of the LTX-2.5 fine-tune (Lightricks README)
HIDDEN = tc.TINY_GEMMA_HIDDEN_SIZE
LAYERS = 3
WORDS = "a cat dog runs over the red car at night slowly while rain falls on wet street".split()
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>")
PLACEHOLDERS = {"image_token_id": ("<|image|>", 60), "video_token_id": ("<|video|>", 61),
                "audio_token_id": ("<|audio|>", 62)}
VOCAB = 64
TEXT_CONFIG: dict[str, Any] = {  # keys as in google/gemma-4-12B's config.json (transformers 5.10 era)
    "model_type": "gemma4_unified_text", "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": 96,
    "num_hidden_layers": LAYERS, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "global_head_dim": 32, "num_global_key_value_heads": 1, "attention_k_eq_v": True, "sliding_window": 5,
    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"], "final_logit_softcapping": 30.0,
    "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0, "rope_type": "proportional"},
        "sliding_attention": {"rope_theta": 10_000.0, "rope_type": "default"},
    },
    "use_bidirectional_attention": "vision", "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0,
    "use_double_wide_mlp": False, "attention_bias": False, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
    "tie_word_embeddings": True, "enable_moe_block": False, "num_experts": None, "top_k_experts": None,
    "moe_intermediate_size": None, "vocab_size_per_layer_input": VOCAB,
}
# google/gemma-4-12B's text_config (config.json, transformers 5.10.0.dev0), the base of the LTX-2.5 fine-tune.
GEMMA4_12B_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "gemma4_unified_text", "attention_bias": False, "attention_k_eq_v": True, "bos_token_id": 2,
    "eos_token_id": 1, "final_logit_softcapping": 30.0, "global_head_dim": 512, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3840, "hidden_size_per_layer_input": 0,
    "intermediate_size": 15360, "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 8,
    "max_position_embeddings": 262_144, "num_attention_heads": 16, "num_global_key_value_heads": 1,
    "num_hidden_layers": 48, "num_key_value_heads": 8, "num_kv_shared_layers": 0, "pad_token_id": 0,
    "rms_norm_eps": 1e-6, "rope_parameters": TEXT_CONFIG["rope_parameters"], "sliding_window": 1024,
    "tie_word_embeddings": True, "use_bidirectional_attention": "vision", "use_double_wide_mlp": False,
    "vocab_size": 262_144,
}
CONFIG: dict[str, Any] = {
    "architectures": ["Gemma4UnifiedForConditionalGeneration"], "model_type": "gemma4_unified",
    "text_config": TEXT_CONFIG,
    "vision_config": {"model_type": "gemma4_unified_vision", "patch_size": 4, "pooling_kernel_size": 1,
                      "mm_embed_dim": HIDDEN, "mm_posemb_size": 8, "output_proj_dims": HIDDEN},
    "audio_config": {"model_type": "gemma4_unified_audio", "audio_embed_dim": 16},
    **{name: token_id for name, (_, token_id) in PLACEHOLDERS.items()},
    "boi_token_id": 56, "eoi_token_id": 57, "boa_token_id": 58, "eoa_token_index": 59,
    "tie_word_embeddings": True, "gemma_version": GEMMA_VERSION,
}
CHAT_TEMPLATE = ("{% for m in messages %}<|turn>{{ m['role'] }}\n{{ m['content'] }}<turn|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|turn>model\n{% endif %}")
TOKENIZER_CONFIG = {"tokenizer_class": "GemmaTokenizer", "backend": "tokenizers", "bos_token": "<bos>",
                    "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
                    "padding_side": "left", "model_max_length": 1_000_000}
# Lightricks' renames of the HF keys in its TE packer (ltx-core ``_flatten_gemma4_unified_keys_for_comfy``).
FLAT_RENAMES = (("model.language_model.", "model."), ("model.vision_embedder.", "vision_model."),
                ("model.embed_vision.", "multi_modal_projector."), ("model.embed_audio.", "audio_projector."))


def config(**changes: Any) -> dict[str, Any]:
    """A deep copy of `CONFIG`, top-level keys replaced by ``changes`` (``None`` removes the key)."""
    out = copy.deepcopy(CONFIG)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def build_model(seed: int = 0) -> torch.nn.Module:
    """A seeded float32 ``Gemma4UnifiedForConditionalGeneration`` of `CONFIG` in eval mode."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    hf_config = Gemma4UnifiedConfig.from_dict(config())
    hf_config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma4UnifiedForConditionalGeneration(hf_config).eval()
        gen = torch.Generator().manual_seed(seed)
        for name, tensor in model.state_dict().items():
            if name == "lm_head.weight":
                continue  # tied to the embeddings
            tensor.copy_(_value(name, tensor, gen))
    return model


def _value(name: str, tensor: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("layer_scalar"):
        return torch.rand(tensor.shape, generator=gen) + 0.5
    if tensor.ndim == 1:  # norms (scale, not 1 + w) and biases
        return torch.randn(tensor.shape, generator=gen) * 0.1 + (1.0 if "norm" in name or "ln" in name else 0.0)
    if "embed_tokens" in name:
        return torch.randn(tensor.shape, generator=gen)
    return torch.randn(tensor.shape, generator=gen) / math.sqrt(tensor[0].numel())


def hf_state_dict(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The model's weights keyed as transformers saves them (tied LM head left out)."""
    return {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}


def flat_key(key: str) -> str:
    for old, new in FLAT_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def tokenizer_json(bos_post_processor: bool = False) -> bytes:
    """A word-level Gemma-4-like tokenizer.json; Gemma 4 adds no <bos> itself unless ``bos_post_processor``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({w: len(SPECIALS) + i for i, w in enumerate(WORDS)})
    vocab.update({token: token_id for token, token_id in PLACEHOLDERS.values()})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens([*SPECIALS, *(t for t, _ in PLACEHOLDERS.values())])
    if bos_post_processor:
        backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return backend.to_str().encode("utf-8")


def projection_state_dict(dtype: torch.dtype = torch.bfloat16, seed: int = 1) -> dict[str, torch.Tensor]:
    """The LTX-2.5 text projection bundled in the TE file (LTX-2.3-style dual aggregate embeds)."""
    gen = torch.Generator().manual_seed(seed)
    flat = HIDDEN * (LAYERS + 1)
    out = {}
    for stream, width in (("video", tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM), ("audio", tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM)):
        prefix = f"text_embedding_projection.{stream}_aggregate_embed."
        out[prefix + "weight"] = (torch.randn(width, flat, generator=gen) / math.sqrt(flat)).to(dtype)
        out[prefix + "bias"] = (torch.randn(width, generator=gen) * 0.02).to(dtype)
    return out


def _bytes_tensor(data: bytes, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).clone()


def write_tokenizer_folder(folder: Path, bos_post_processor: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(tokenizer_json(bos_post_processor))
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


def write_hf_folder(folder: Path, model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16,
                    gemma_config: dict[str, Any] | None = None) -> Path:
    """A fine-tuned HF root: config.json, two weight shards, tokenizer files."""
    state = hf_state_dict(model, dtype)
    keys = sorted(state)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: state[k] for k in keys[: len(keys) // 2]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in keys[len(keys) // 2:]}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "config.json").write_text(json.dumps(gemma_config or config()))
    write_tokenizer_folder(folder)
    return folder


def ltx_bundle_tensors(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16, flat: bool = True,
                       tokenizer_dtype: torch.dtype = torch.uint8) -> dict[str, torch.Tensor]:
    """Tensors of ``gemma4-12b-with-proj-ltx-2.5-bf16``: language model (+ towers), projection, tokenizer assets."""
    state = hf_state_dict(model, dtype)
    tensors = {flat_key(k) if flat else k: v for k, v in state.items()}
    tensors.update(projection_state_dict(dtype))
    tensors["tokenizer_json"] = _bytes_tensor(tokenizer_json(), tokenizer_dtype)
    for name, data in (("tokenizer_config.json", json.dumps(TOKENIZER_CONFIG)),
                       ("chat_template.jinja", CHAT_TEMPLATE),
                       ("processor_config.json", json.dumps({"processor_class": "Gemma4UnifiedProcessor"}))):
        tensors[f"hf_asset__{name}"] = _bytes_tensor(data.encode("utf-8"))
    return tensors


def write_ltx_bundle(path: Path, model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16, flat: bool = True,
                     gemma_config: dict[str, Any] | None = None, tokenizer_dtype: torch.dtype = torch.uint8) -> Path:
    """The Lightricks single-file text encoder (``gemma_config`` metadata, ComfyUI-flat or HF keys)."""
    metadata = {"format": "pt", "gemma_config": json.dumps(gemma_config or config())}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ltx_bundle_tensors(model, dtype, flat, tokenizer_dtype), str(path), metadata=metadata)
    return path


def write_comfy_int8(path: Path, model: torch.nn.Module) -> Path:
    """A ComfyUI ``int8-convrot``-style repack: flat keys, each language-model Linear as int8 rows + ``weight_scale``
    + ``comfy_quant``; no ``gemma_config`` metadata (the config is inferred), tokenizer embedded."""
    tensors = ltx_bundle_tensors(model)
    for key in [k for k in tensors if k.startswith("model.layers.") and k.endswith("_proj.weight")]:
        weight = tensors[key].float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127.0
        layer = key.removesuffix(".weight")
        tensors[key] = (weight / scale).round().clamp(-127, 127).to(torch.int8)
        tensors[layer + ".weight_scale"] = scale
        tensors[layer + ".comfy_quant"] = _bytes_tensor(json.dumps({"format": "int8_tensorwise"}).encode())
    save_file(tensors, str(path))
    return path


def transformer_header_file(path: Path, generation: str, gemma_version: str | None = GEMMA_VERSION) -> Path:
    """A small transformer-only file carrying a generation's header facts ("2.5", "2.3" or "2")."""
    section: dict[str, Any] = {"num_layers": 1}
    metadata = {"model_version": {"2.5": "2.4.0", "2.3": "2.3.0", "2": "2.0.0"}[generation]}
    if generation == "2.5":
        section.update(ff_bias=False, audio_ff_bias=False, use_prompt_adaln_single=False)
        if gemma_version is not None:
            metadata["gemma_source_checkpoint"] = json.dumps({"gemma_version": gemma_version})
    metadata["config"] = json.dumps({"transformer": section})
    save_file({"model.diffusion_model.patchify_proj.weight": torch.zeros(4, 4)}, str(path), metadata=metadata)
    return path
