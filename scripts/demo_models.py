"""A tiny, complete LTX-2.3 model set in the official file formats, built from AIPROD's own modules.

``make demo`` and the end-to-end tests run the real node graph on it. Everything is built by ``aiprod_core``
(no reference import), initialised with seeded honest random weights (normal(0, 1/fan_in) for linear and conv
weights, small nonzero biases, 1 + N(0, 0.1) for norm weights, nonzero AdaLN tables, registers and Snake
parameters; computed buffers such as anti-aliasing filters and the STFT / mel bases kept as constructed),
stored in bf16 under the official prefixes, and laid out in ComfyUI's model folders under ``root``:

- ``checkpoints/aiprod-demo-ltx-2.3-tiny.safetensors``: transformer + connectors, video VAE, audio VAE,
  vocoder (BigVGAN + BWE), text projection; metadata ``config`` and ``model_version`` "2.3.0";
- ``text_encoders/aiprod-demo-gemma-3-tiny/``: a Hugging Face folder with a 2-layer, width-64 Gemma-3 text
  backbone (``language_model.model.*``, the gemma-3-12b-it layout) and a byte-level tokenizer with Gemma's
  special tokens and chat template (no vision tower: nothing in AIPROD's text path reads it);
- ``latent_upscale_models/aiprod-demo-upscaler-x2-tiny.safetensors``;
- ``loras/aiprod-demo-distilled-lora-tiny.safetensors`` and ``loras/aiprod-demo-ic-lora-tiny.safetensors``
  (ComfyUI LoRA format; the IC-LoRA carries ``reference_downscale_factor`` "2").

Per-tensor generators are derived from ``(seed, file key)``, so a seed gives byte-identical files. Files are
written atomically and only when their content changes; a manifest lets a second call skip the build.

CLI: ``python scripts/demo_models.py ROOT [--seed N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import struct
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DEMO_FILES", "DemoModels", "demo_checkpoint_config", "register_pack", "write_demo_models"]

logger = logging.getLogger("aiprod.demo_models")

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "aiprod"
FORMAT_VERSION = "1"  # bump to force a rebuild of every cached set
MANIFEST = ".aiprod-demo-manifest.json"

# ComfyUI folder / file names: the example workflows name these files.
DEMO_FILES = {
    "checkpoint": "checkpoints/aiprod-demo-ltx-2.3-tiny.safetensors",
    "text_encoder_dir": "text_encoders/aiprod-demo-gemma-3-tiny",
    "upsampler": "latent_upscale_models/aiprod-demo-upscaler-x2-tiny.safetensors",
    "distilled_lora": "loras/aiprod-demo-distilled-lora-tiny.safetensors",
    "ic_lora": "loras/aiprod-demo-ic-lora-tiny.safetensors",
}
GEMMA_WEIGHTS = "model.safetensors"
MODEL_VERSION = "2.3.0"
IC_LORA_REFERENCE_DOWNSCALE_FACTOR = "2"

# ---- tiny sizes (the published key sets, shrunk; see tests/support/tiny_configs.py for the why of each) ----
GEMMA_HIDDEN, GEMMA_LAYERS = 64, 2  # the text projection input is 64 x (2 + 1)
VIDEO_HEADS, VIDEO_HEAD_DIM = 4, 16  # video inner width 64
AUDIO_HEADS, AUDIO_HEAD_DIM = 4, 8  # audio inner width 32 (equal head counts: cross-modal rope)
NUM_LAYERS = 2
LORA_RANK = 4
LORA_UP_STD = {"distilled": 0.05, "ic": 0.05}  # delta ~ 10 % of a weight: stage 2 visibly differs, stays sane
LORA_TARGETS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
LORA_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_FEED_FORWARDS = ("ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2")
# Vocoder gains: residual branches scaled down as in trained nets, output convs small so the waveform stays
# well inside [-1, 1] (no clipping); the BWE residual is added to the upsampled 16 kHz signal.
VOCODER_RESIDUAL_GAIN = 0.3
FINAL_CONV_GAINS = {"vocoder": 0.1, "bwe_generator": 0.02}

_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                   "<start_of_image>", "<end_of_image>", "<image_soft_token>")  # ids 0..9 (Gemma: pad 0 eos 1 bos 2)
GEMMA_VOCAB_SIZE = 272  # 10 specials + 256 byte symbols, rounded up to a multiple of 16
# Gemma-3's chat format (system prompt folded into the first user turn, "assistant" spoken as "model").
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first = messages[0]['content'] -%}"
    "{%- set sys = first if first is string else first[0]['text'] -%}"
    "{%- set prefix = sys + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') }}"
    "{%- if m['content'] is string -%}{{ m['content'] | trim }}{%- else -%}{%- for item in m['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class DemoModels:
    """Paths of one demo model set (ComfyUI model-folder layout under ``root``)."""

    root: Path
    checkpoint: Path
    text_encoder_dir: Path
    upsampler: Path
    distilled_lora: Path
    ic_lora: Path

    @property
    def text_encoder_weights(self) -> Path:
        return self.text_encoder_dir / GEMMA_WEIGHTS

    def combos(self) -> dict[str, str]:
        """The ComfyUI combo value (``folder/name``) of each file. ``text_encoder`` is the Gemma folder as the text
        encoder loader lists it; ``text_encoder_weights`` is its weight file as ComfyUI lists files."""
        values = dict(DEMO_FILES)
        values["text_encoder"] = DEMO_FILES["text_encoder_dir"]
        values["text_encoder_weights"] = f"{DEMO_FILES['text_encoder_dir']}/{GEMMA_WEIGHTS}"
        return values

    def combo(self, name: str) -> str:
        return self.combos()[name]

    def install_map(self) -> dict[str, Path]:
        """``{"folder/name": path}`` for `support.comfy_host.install_model_files` (the Gemma folder as a whole)."""
        return {rel: self.root / rel for rel in DEMO_FILES.values()}


def register_pack(name: str = PACK_NAME) -> None:
    """Make the repository importable as package ``name`` without running its ComfyUI ``__init__``."""
    if name in sys.modules:
        return
    package = types.ModuleType(name)
    package.__path__ = [str(REPO_ROOT)]
    package.__file__ = str(REPO_ROOT / "__init__.py")
    sys.modules[name] = package


# --------------------------------------------------------------------------------------------------------
# Configs (the checkpoint's ``config`` metadata sections and the upsampler's flat config)
# --------------------------------------------------------------------------------------------------------

_TRANSFORMER: dict[str, Any] = {
    "_class_name": "AVTransformer3DModel", "activation_fn": "gelu-approximate", "attention_bias": True,
    "attention_type": "default", "av_cross_ada_norm": True, "causal_temporal_positioning": True,
    "connector_norm_output": True, "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096], "cross_attention_norm": True, "double_self_attention": False,
    "dropout": 0.0, "frequencies_precision": "float64", "in_channels": 128, "norm_elementwise_affine": False,
    "norm_eps": 1e-06, "norm_num_groups": 32, "num_embeds_ada_norm": 1000, "num_vector_embeds": None,
    "only_cross_attention": False, "out_channels": 128, "audio_out_channels": 128,
    "positional_embedding_max_pos": [20, 2048, 2048], "audio_positional_embedding_max_pos": [20],
    "positional_embedding_theta": 10000.0, "positional_embedding_type": "rope", "qk_norm": "rms_norm",
    "rope_type": "split", "share_ff": False, "standardization_norm": "rms_norm", "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000.0, "upcast_attention": False, "use_audio_video_cross_attention": True,
    "use_embeddings_connector": True, "use_linear_projection": False, "use_middle_indices_grid": True,
    # LTX-2.3: projection before the connectors, gated attention, cross-attention AdaLN
    "apply_gated_attention": True, "connector_apply_gated_attention": True, "cross_attention_adaln": True,
    "caption_proj_before_connector": True, "caption_proj_input_norm": False,
    "caption_projection_first_linear": False, "caption_projection_second_linear": False,
    "connector_learnable_registers_std": 1, "text_encoder_norm_type": "per_token_rms",
    # sizes
    "num_layers": NUM_LAYERS, "num_attention_heads": VIDEO_HEADS, "attention_head_dim": VIDEO_HEAD_DIM,
    "cross_attention_dim": VIDEO_HEADS * VIDEO_HEAD_DIM, "audio_num_attention_heads": AUDIO_HEADS,
    "audio_attention_head_dim": AUDIO_HEAD_DIM, "audio_cross_attention_dim": AUDIO_HEADS * AUDIO_HEAD_DIM,
    "caption_channels": GEMMA_HIDDEN, "connector_num_layers": 2,
    "connector_num_attention_heads": VIDEO_HEADS, "connector_attention_head_dim": VIDEO_HEAD_DIM,
    "audio_connector_num_attention_heads": AUDIO_HEADS, "audio_connector_attention_head_dim": AUDIO_HEAD_DIM,
}


def _res_x(num_layers: int) -> list[Any]:
    return ["res_x", {"num_layers": num_layers}]


_VAE: dict[str, Any] = {
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "encoder_blocks": [_res_x(1), ["compress_space_res", {"multiplier": 1}], ["compress_time_res", {"multiplier": 1}],
                       ["compress_all_res", {"multiplier": 1}], ["compress_all_res", {"multiplier": 1}]],
    "decoder_blocks": [_res_x(1), ["compress_space", {"multiplier": 2}], _res_x(1),
                       ["compress_time", {"multiplier": 2}], _res_x(1), ["compress_all", {"multiplier": 1}],
                       _res_x(1), ["compress_all", {"multiplier": 2}], _res_x(1)],
    "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
    "use_quant_conv": False, "causal_decoder": False, "normalize_latent_channels": False,
    "encoder_base_channels": 128, "decoder_base_channels": 8, "timestep_conditioning": False,
    "spatial_padding_mode": "zeros",
}

_AUDIO_VAE: dict[str, Any] = {
    "model": {"params": {"ddconfig": {
        "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
        "in_channels": 2, "out_ch": 2, "ch": 128, "ch_mult": [1, 2, 1], "num_res_blocks": 1, "attn_resolutions": [],
        "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height",
    }, "sampling_rate": 16000}},
    "preprocessing": {
        "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
        "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000},
    },
}

_AMP = {"resblock": "AMP1", "stereo": True, "activation": "snakebeta", "use_tanh_at_final": False}
_DILATIONS = [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
_VOCODER: dict[str, Any] = {
    "vocoder": {**_AMP, "upsample_initial_channel": 128, "upsample_rates": [5, 2, 2, 2, 2, 2],
                "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
                "resblock_dilation_sizes": _DILATIONS, "use_bias_at_final": False},
    "bwe": {**_AMP, "upsample_initial_channel": 64, "upsample_rates": [6, 5, 2, 2, 2],
            "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
            "resblock_dilation_sizes": _DILATIONS, "use_bias_at_final": False, "apply_final_activation": False,
            "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512,
            "win_size": 512, "num_mels": 64},
}

_UPSAMPLER: dict[str, Any] = {
    "_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3,
    "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 2.0, "rational_resampler": False,
}


def demo_checkpoint_config() -> dict[str, Any]:
    """The ``config`` metadata of the demo checkpoint (sections transformer, vae, audio_vae, vocoder)."""
    return copy.deepcopy({"transformer": _TRANSFORMER, "vae": _VAE, "audio_vae": _AUDIO_VAE, "vocoder": _VOCODER})


def demo_upsampler_config() -> dict[str, Any]:
    return copy.deepcopy(_UPSAMPLER)


def gemma_config_json() -> dict[str, Any]:
    """``config.json`` of the tiny Gemma-3 (Gemma3ForConditionalGeneration layout, as gemma-3-12b-it)."""
    text = {
        "model_type": "gemma3_text", "vocab_size": GEMMA_VOCAB_SIZE, "hidden_size": GEMMA_HIDDEN,
        "intermediate_size": 128, "num_hidden_layers": GEMMA_LAYERS, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 512,
        "sliding_window_pattern": 2, "rope_theta": 1_000_000, "rope_local_base_freq": 10_000,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "max_position_embeddings": 131072,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16",
    }
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
              "vision_use_head": False}
    return {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text,
        "vision_config": vision, "mm_tokens_per_image": 4, "boi_token_index": 7, "eoi_token_index": 8,
        "image_token_index": 9, "torch_dtype": "bfloat16",
    }


# --------------------------------------------------------------------------------------------------------
# Seeded initialisation
# --------------------------------------------------------------------------------------------------------


def _generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _normal(shape: torch.Size, std: float, gen: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d)
_NORMS = (nn.RMSNorm, nn.GroupNorm, nn.LayerNorm)


def _fan_in(module: nn.Module, weight: torch.Tensor) -> float:
    if isinstance(module, nn.ConvTranspose1d):  # (in, out, k): each output sample sees in * k / stride taps
        return weight.shape[0] * weight.shape[2] / module.stride[0]
    return float(weight[0].numel())


def _parameter_value(module: nn.Module, name: str, param: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if isinstance(module, _WEIGHTED):
        if name == "weight":
            return _normal(param.shape, 1.0 / math.sqrt(_fan_in(module, param)), gen)
        return _normal(param.shape, 0.02, gen)
    if isinstance(module, _NORMS):
        return _normal(param.shape, 0.1, gen, mean=1.0) if name == "weight" else _normal(param.shape, 0.02, gen)
    if name == "learnable_registers":  # uniform in [-1, 1) like a fresh connector
        return torch.rand(param.shape, generator=gen) * 2.0 - 1.0
    if "scale_shift_table" in name or name in ("alpha", "beta"):  # AdaLN tables, log-scale SnakeBeta parameters
        return _normal(param.shape, 0.1, gen)
    raise ValueError(f"no initialisation rule for parameter {type(module).__name__}.{name} {tuple(param.shape)}")


def _statistics_value(name: str, buf: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    if name == "std-of-means":
        return torch.rand(buf.shape, generator=gen) + 0.5
    if name == "mean-of-means":
        return _normal(buf.shape, 0.2, gen)
    return None  # computed at construction (anti-aliasing filters, STFT / mel bases): kept as built


@torch.no_grad()
def _init_module(module: nn.Module, seed: int, to_file_key: Callable[[str], str]) -> None:
    """Every parameter (and the VAE statistics) from a generator keyed by its file key."""
    for mod_name, sub in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, param in sub.named_parameters(recurse=False):
            param.copy_(_parameter_value(sub, name, param, _generator(seed, to_file_key(prefix + name))))
        for name, buf in sub.named_buffers(recurse=False):
            value = _statistics_value(name, buf, _generator(seed, to_file_key(prefix + name)))
            if value is not None:
                buf.copy_(value)


@torch.no_grad()
def _scale_vocoder(vocoder: nn.Module) -> None:
    from aiprod.aiprod_core.audio_vae.vocoder import AMPBlock1, ResBlock1

    for name, sub in vocoder.named_modules():
        if isinstance(sub, AMPBlock1 | ResBlock1):
            for conv in sub.convs2:
                conv.weight.mul_(VOCODER_RESIDUAL_GAIN)
        if name in FINAL_CONV_GAINS:
            sub.conv_post.weight.mul_(FINAL_CONV_GAINS[name])


@contextlib.contextmanager
def _private_rng() -> Iterator[None]:
    """Construction draws default inits from the global RNG (all overwritten); leave the caller's RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _prefixer(default: str, **sub: str) -> Callable[[str], str]:
    def to_file_key(key: str) -> str:
        for module_prefix, file_prefix in sub.items():
            if key.startswith(module_prefix + "."):
                return file_prefix + key[len(module_prefix) + 1 :]
        return default + key

    return to_file_key


def _checkpoint_modules(config: dict[str, Any]) -> list[tuple[str, nn.Module, Callable[[str], str]]]:
    """(name, our module built on CPU in float32, module key -> checkpoint key) for each component."""
    from aiprod.aiprod_core.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig, VocoderConfig, build_vocoder
    from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor
    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig
    from aiprod.aiprod_core.video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig

    dit = "model.diffusion_model."
    f32 = {"dtype": torch.float32, "device": "cpu"}
    video_vae, audio_vae = VideoVAEConfig.from_metadata(config), AudioVAEConfig.from_metadata(config)
    stats = "per_channel_statistics"
    with _private_rng():
        return [
            ("transformer", AVTransformer(TransformerConfig.from_metadata(config, with_audio=True), **f32),
             _prefixer(dit)),
            ("text_embeddings",
             TextEmbeddingsProcessor(TextEmbeddingsConfig.from_metadata(config), GEMMA_HIDDEN, GEMMA_LAYERS, **f32),
             _prefixer("", feature_extractor="text_embedding_projection.",
                       video_connector=dit + "video_embeddings_connector.",
                       audio_connector=dit + "audio_embeddings_connector.")),
            ("video_encoder", VideoEncoder(video_vae, **f32), _prefixer("vae.encoder.", **{stats: f"vae.{stats}."})),
            ("video_decoder", VideoDecoder(video_vae, **f32), _prefixer("vae.decoder.", **{stats: f"vae.{stats}."})),
            ("audio_encoder", AudioEncoder(audio_vae, **f32),
             _prefixer("audio_vae.encoder.", **{stats: f"audio_vae.{stats}."})),
            ("audio_decoder", AudioDecoder(audio_vae, **f32),
             _prefixer("audio_vae.decoder.", **{stats: f"audio_vae.{stats}."})),
            ("vocoder", build_vocoder(VocoderConfig.from_metadata(config), **f32), _prefixer("vocoder.")),
        ]


def _collect(out: dict[str, torch.Tensor], module: nn.Module, to_file_key: Callable[[str], str]) -> None:
    for key, tensor in module.state_dict().items():
        file_key = to_file_key(key)
        value = tensor.detach().to(torch.bfloat16).contiguous()
        if file_key in out and not torch.equal(out[file_key], value):
            raise RuntimeError(f"{file_key} is written twice with different values")
        out[file_key] = value


def checkpoint_tensors(seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the demo single-file checkpoint, keyed as in the file (bf16)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module, to_file_key in _checkpoint_modules(demo_checkpoint_config()):
        _init_module(module, seed, to_file_key)
        if name == "vocoder":
            _scale_vocoder(module)
        _collect(tensors, module, to_file_key)
    return tensors


def upsampler_tensors(seed: int) -> dict[str, torch.Tensor]:
    from aiprod.aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig

    with _private_rng():
        module = LatentUpsampler(LatentUpsamplerConfig.from_metadata(demo_upsampler_config()), dtype=torch.float32)
    tensors: dict[str, torch.Tensor] = {}
    _init_module(module, seed, lambda key: "upsampler_x2:" + key)
    _collect(tensors, module, lambda key: key)
    return tensors


@torch.no_grad()
def gemma_tensors(seed: int) -> dict[str, torch.Tensor]:
    """The tiny Gemma-3 text backbone under ``language_model.model.*`` (bf16); Gemma norms are 1 + w."""
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config

    with _private_rng():
        encoder = GemmaTextEncoder(gemma_text_config(gemma_config_json()), dtype=torch.float32, device="cpu")
    tensors = {}
    for key, param in encoder.named_parameters():
        file_key = "language_model." + key
        gen = _generator(seed, "gemma:" + file_key)
        if "norm" in key:
            value = _normal(param.shape, 0.1, gen)
        elif "embed_tokens" in key:  # Gemma's initializer_range; tied LM head: flat logits, varied sampled text
            value = _normal(param.shape, 0.02, gen)
        elif param.ndim == 2:
            value = _normal(param.shape, param.shape[1] ** -0.5, gen)
        else:
            value = _normal(param.shape, 0.02, gen)
        tensors[file_key] = value.to(torch.bfloat16).contiguous()
    return tensors


def lora_tensors(seed: int, kind: str) -> dict[str, torch.Tensor]:
    """ComfyUI-format LoRA: ``diffusion_model.<module>.lora_A.weight`` (rank, in) and ``lora_B`` (out, rank)."""
    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    model = AVTransformer(TransformerConfig.from_metadata(demo_checkpoint_config(), with_audio=True), device="meta")
    paths = [f"transformer_blocks.{block}.{attention}.{projection}" for block in range(NUM_LAYERS)
             for attention in LORA_TARGETS for projection in LORA_PROJECTIONS]
    paths += [f"transformer_blocks.{block}.{ff}" for block in range(NUM_LAYERS) for ff in LORA_FEED_FORWARDS]
    tensors = {}
    for path in paths:
        out_features, in_features = model.get_submodule(path).weight.shape
        key = f"diffusion_model.{path}"
        down = _normal((LORA_RANK, in_features), in_features**-0.5, _generator(seed, f"{kind}:{key}.A"))
        up = _normal((out_features, LORA_RANK), LORA_UP_STD[kind], _generator(seed, f"{kind}:{key}.B"))
        tensors[f"{key}.lora_A.weight"] = down.to(torch.bfloat16)
        tensors[f"{key}.lora_B.weight"] = up.to(torch.bfloat16)
    return tensors


# --------------------------------------------------------------------------------------------------------
# Tokenizer (built locally with `tokenizers`: byte-level, so every prompt round-trips)
# --------------------------------------------------------------------------------------------------------


def tokenizer_files() -> dict[str, bytes]:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json (+ chat template) of the tiny Gemma."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate((*_GEMMA_SPECIALS, *symbols))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bos = _GEMMA_SPECIALS.index("<bos>")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", additional_special_tokens=list(_GEMMA_SPECIALS[5:]), padding_side="left",
        model_max_length=131072, chat_template=_CHAT_TEMPLATE,
    )
    # transformers 5 ignores `additional_special_tokens` in the constructor: register the turn markers as special
    # tokens explicitly (already in the vocabulary, so no new ids), the same on 4.5x and 5.x
    tokenizer.add_tokens(list(_GEMMA_SPECIALS[5:]), special_tokens=True)
    with tempfile.TemporaryDirectory(prefix="aiprod-demo-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
    config = json.loads(files["tokenizer_config.json"])
    config.update(add_bos_token=True, add_eos_token=False, padding_side="left")
    files["tokenizer_config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return files


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------

_DTYPES = {torch.bfloat16: ("BF16", torch.int16), torch.float32: ("F32", torch.float32)}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise deterministically: metadata and tensors in sorted order, header padded to 8 bytes."""
    header: dict[str, Any] = {"__metadata__": dict(sorted((metadata or {}).items()))}
    chunks, offset = [], 0
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        tag, view_dtype = _DTYPES[tensor.dtype]
        data = tensor.view(view_dtype).numpy().tobytes()  # little-endian hosts only (as safetensors itself)
        header[key] = {"dtype": tag, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _artifacts(seed: int) -> dict[str, Callable[[], dict[str, bytes]]]:
    """Relative path (file or folder) -> builder of its files' bytes (relative to that path's parent)."""
    ckpt, te, ups, dlora, ic = (DEMO_FILES[k] for k in
                                ("checkpoint", "text_encoder_dir", "upsampler", "distilled_lora", "ic_lora"))
    checkpoint_meta = {"config": json.dumps(demo_checkpoint_config(), sort_keys=True), "model_version": MODEL_VERSION}

    def gemma_folder() -> dict[str, bytes]:
        files = {f"{te}/{name}": data for name, data in tokenizer_files().items()}
        files[f"{te}/config.json"] = _json_bytes(gemma_config_json())
        files[f"{te}/{GEMMA_WEIGHTS}"] = safetensors_bytes(gemma_tensors(seed), {"format": "pt"})
        return files

    return {
        ckpt: lambda: {ckpt: safetensors_bytes(checkpoint_tensors(seed), checkpoint_meta)},
        te: gemma_folder,
        ups: lambda: {ups: safetensors_bytes(upsampler_tensors(seed),
                                             {"config": json.dumps(demo_upsampler_config(), sort_keys=True)})},
        dlora: lambda: {dlora: safetensors_bytes(lora_tensors(seed, "distilled"))},
        ic: lambda: {ic: safetensors_bytes(lora_tensors(seed, "ic"),
                                           {"reference_downscale_factor": IC_LORA_REFERENCE_DOWNSCALE_FACTOR})},
    }


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_fingerprint(seed: int) -> str:
    """Changes whenever anything that shapes the bytes changes: seed, this file, aiprod_core, library versions."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}:{seed}".encode())
    sources = [Path(__file__), *sorted((REPO_ROOT / "aiprod_core").rglob("*.py"))]
    for source in sources:
        digest.update(source.relative_to(REPO_ROOT).as_posix().encode() if source.is_relative_to(REPO_ROOT) else b"")
        digest.update(source.read_bytes())
    for dist in ("torch", "transformers", "tokenizers"):
        digest.update(importlib.metadata.version(dist).encode())
    return digest.hexdigest()[:16]


def _manifest_is_current(root: Path, fingerprint: str) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    files = manifest.get("files", {})
    if manifest.get("fingerprint") != fingerprint or not files:
        return False
    return all(_sha256(root / rel) == sha for rel, sha in files.items())


def _demo_models(root: Path) -> DemoModels:
    return DemoModels(root=root, **{name: root / rel for name, rel in DEMO_FILES.items()})


def write_demo_models(root: Path, seed: int = 0) -> DemoModels:
    """Write (or keep) the demo model set under ``root``; deterministic for ``seed``.

    A file is rewritten only when its bytes differ from what is on disk; when the manifest says the set was built
    by the same code, seed and libraries and every file still has its recorded hash, nothing is built at all.
    """
    register_pack()
    root = Path(root).resolve()
    fingerprint = build_fingerprint(seed)
    if _manifest_is_current(root, fingerprint):
        logger.info("demo models in %s are current (fingerprint %s)", root, fingerprint)
        return _demo_models(root)
    hashes: dict[str, str] = {}
    stale = _manifest_files(root)
    for build in _artifacts(seed).values():
        for rel, payload in build().items():
            sha = hashlib.sha256(payload).hexdigest()
            hashes[rel] = sha
            if _sha256(root / rel) == sha:
                continue
            write_atomic(root / rel, payload)
            logger.info("wrote %s (%.1f MB)", root / rel, len(payload) / 1e6)
    for rel in stale - hashes.keys():  # written by an older build (another library version), not by this one
        (root / rel).unlink(missing_ok=True)
    write_atomic(root / MANIFEST, _json_bytes({"fingerprint": fingerprint, "seed": seed, "files": hashes}))
    return _demo_models(root)


def _manifest_files(root: Path) -> set[str]:
    try:
        return set(json.loads((root / MANIFEST).read_text()).get("files", {}))
    except (OSError, json.JSONDecodeError, AttributeError):
        return set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/demo_models.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="model root: checkpoints/, text_encoders/, loras/, ...")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    models = write_demo_models(args.root, args.seed)
    for name, value in models.combos().items():
        logger.info("%-17s %s", name, value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
