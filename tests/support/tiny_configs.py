"""Tiny LTX-2 ("2.0", 19B family) and LTX-2.3 (22B family) configurations for test fixtures.

Every dict here is laid out exactly as the official single-file checkpoints carry it in their safetensors
metadata (``config`` JSON with ``transformer`` / ``vae`` / ``audio_vae`` / ``vocoder`` sections, and the
upsampler's flat ``config``), with the published key sets kept and only the sizes shrunk. Sizes the reference
hard-codes stay as they are: 128 latent channels, VAE scale factors 8 (time) x 32 x 32 (space), audio latent
8 channels x 16 mel bins (so the audio VAE ``ch`` is 8 x 16 = 128), 64 mel bins (vocoder input 2 x 64 = 128),
and the audio sample rates / upsample products (16 kHz mel at hop 160 -> 24 kHz or 16 kHz -> 48 kHz).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

LTX2 = "ltx2"  # LTX-2, 19B family ("2.0")
LTX23 = "ltx23"  # LTX-2.3, 22B family
GENERATIONS = (LTX2, LTX23)

# ltx_pipelines.utils.constants.detect_params tests model_version.startswith("2.3").
MODEL_VERSIONS = {LTX2: "2.0.0", LTX23: "2.3.0"}

# The tiny Gemma the text projection is sized for. ltx-core sizes the feature extractor from its hard-coded
# Gemma-3-12B config (input = hidden_size x (num_hidden_layers + 1)); see `tiny_gemma_feature_config`.
TINY_GEMMA_HIDDEN_SIZE = 64
TINY_GEMMA_NUM_LAYERS = 2

VIDEO_HEADS, VIDEO_HEAD_DIM = 4, 16  # video inner dim 64
AUDIO_HEADS, AUDIO_HEAD_DIM = 4, 8  # audio inner dim 32; equal head counts (cross-modal rope uses video's)
NUM_LAYERS = 2
CAPTION_CHANNELS = TINY_GEMMA_HIDDEN_SIZE

LORA_RANK = 4
LORA_ATTENTIONS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
LORA_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
IC_LORA_REFERENCE_DOWNSCALE_FACTOR = "2"

UPSAMPLER_SCALES = (2.0, 1.5)

# Keys the published checkpoints carry and ltx-core pins with check_config_value (model_configurator.py).
_TRANSFORMER_FIXED: dict[str, Any] = {
    "_class_name": "AVTransformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_type": "default",
    "av_cross_ada_norm": True,
    "causal_temporal_positioning": True,
    "connector_norm_output": True,
    "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096],
    "cross_attention_norm": True,
    "double_self_attention": False,
    "dropout": 0.0,
    "frequencies_precision": "float64",
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_embeds_ada_norm": 1000,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 128,
    "audio_out_channels": 128,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20],
    "positional_embedding_theta": 10000.0,
    "positional_embedding_type": "rope",
    "qk_norm": "rms_norm",
    "rope_type": "split",
    "share_ff": False,
    "standardization_norm": "rms_norm",
    "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000.0,
    "upcast_attention": False,
    "use_audio_video_cross_attention": True,
    "use_embeddings_connector": True,
    "use_linear_projection": False,
    "use_middle_indices_grid": True,
}


def transformer_config(generation: str) -> dict[str, Any]:
    """The ``transformer`` section: 2 layers, video 4 heads x 16, audio 4 heads x 8, caption channels 64."""
    config = copy.deepcopy(_TRANSFORMER_FIXED)
    config.update(
        num_layers=NUM_LAYERS,
        num_attention_heads=VIDEO_HEADS,
        attention_head_dim=VIDEO_HEAD_DIM,
        cross_attention_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
        audio_num_attention_heads=AUDIO_HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM,
        audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        caption_channels=CAPTION_CHANNELS,
        connector_num_layers=2,
    )
    if generation == LTX2:
        # 19B: the connectors run at the Gemma width (caption projection lives in the transformer).
        config.update(connector_num_attention_heads=4, connector_attention_head_dim=CAPTION_CHANNELS // 4)
        return config
    _check_generation(generation)
    # 22B: projection moved before the connectors (text_embedding_projection.{video,audio}_aggregate_embed),
    # gated attention, cross-attention AdaLN, and connectors at the video / audio inner widths.
    config.update(
        apply_gated_attention=True,
        connector_apply_gated_attention=True,
        cross_attention_adaln=True,
        caption_proj_before_connector=True,
        caption_proj_input_norm=False,
        caption_projection_first_linear=False,
        caption_projection_second_linear=False,
        connector_learnable_registers_std=1,
        connector_num_attention_heads=VIDEO_HEADS,
        connector_attention_head_dim=VIDEO_HEAD_DIM,
        audio_connector_num_attention_heads=AUDIO_HEADS,
        audio_connector_attention_head_dim=AUDIO_HEAD_DIM,
        text_encoder_norm_type="per_token_rms",
    )
    return config


def _res_x(num_layers: int, **extra: Any) -> list[Any]:
    return ["res_x", {"num_layers": num_layers, **extra}]


def video_vae_config(generation: str) -> dict[str, Any]:
    """The ``vae`` section. The encoder starts at the 128 latent channels (hard-coded); the decoder is narrow.

    LTX-2: residual ``compress_all`` upsamplers, timestep-conditioned decoder (time embedders, scale-shift
    tables, a learned timestep multiplier), reflect padding in the decoder. LTX-2.3: ``compress_space`` /
    ``compress_time`` / ``compress_all`` (multiplier 1 and 2), no timestep conditioning, zeros padding.
    """
    encoder_blocks = [
        _res_x(1),
        ["compress_space_res", {"multiplier": 1}],
        ["compress_time_res", {"multiplier": 1}],
        ["compress_all_res", {"multiplier": 1}],
        ["compress_all_res", {"multiplier": 1}],
    ]
    config: dict[str, Any] = {
        "_class_name": "CausalVideoAutoencoder",
        "dims": 3,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 128,
        "encoder_blocks": encoder_blocks,
        "scaling_factor": 1.0,
        "norm_layer": "pixel_norm",
        "patch_size": 4,
        "latent_log_var": "uniform",
        "use_quant_conv": False,
        "causal_decoder": False,
        "normalize_latent_channels": False,
        "encoder_base_channels": 128,
        "decoder_base_channels": 8,
    }
    if generation == LTX2:
        upsample = ["compress_all", {"residual": True, "multiplier": 2}]
        noise = {"inject_noise": False}
        config["decoder_blocks"] = [_res_x(1, **noise), upsample, _res_x(1, **noise), upsample]
        config["decoder_blocks"] += [_res_x(1, **noise), upsample, _res_x(1, **noise)]
        # ltx-core reads only "spatial_padding_mode"; absent, the encoder pads with zeros, the decoder reflects.
        config.update(
            timestep_conditioning=True,
            encoder_spatial_padding_mode="zeros",
            decoder_spatial_padding_mode="reflect",
        )
        return config
    _check_generation(generation)
    config["decoder_blocks"] = [
        _res_x(1),
        ["compress_space", {"multiplier": 2}],
        _res_x(1),
        ["compress_time", {"multiplier": 2}],
        _res_x(1),
        ["compress_all", {"multiplier": 1}],
        _res_x(1),
        ["compress_all", {"multiplier": 2}],
        _res_x(1),
    ]
    config.update(timestep_conditioning=False, spatial_padding_mode="zeros")
    return config


def audio_vae_config(generation: str) -> dict[str, Any]:
    """The ``audio_vae`` section. ``ch`` must stay 128 (= 8 latent channels x 16 latent mel bins).

    LTX-2.3 uses ch_mult (1, 2, 1) so that channel-changing ResnetBlocks (``nin_shortcut``) are present;
    LTX-2 keeps every level at 128 channels to stay small.
    """
    _check_generation(generation)
    ch_mult = [1, 1, 1] if generation == LTX2 else [1, 2, 1]
    ddconfig = {
        "double_z": True,
        "mel_bins": 64,
        "z_channels": 8,
        "resolution": 256,
        "downsample_time": False,
        "in_channels": 2,
        "out_ch": 2,
        "ch": 128,
        "ch_mult": ch_mult,
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
        "mid_block_add_attention": False,
        "norm_type": "pixel",
        "causality_axis": "height",
    }
    return {
        "model": {"params": {"ddconfig": ddconfig, "sampling_rate": 16000}},
        "preprocessing": {
            "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
            "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000},
        },
    }


_DILATIONS = [[1, 3, 5], [1, 3, 5], [1, 3, 5]]


def vocoder_config(generation: str) -> dict[str, Any]:
    """The ``vocoder`` section: flat HiFi-GAN for LTX-2, nested BigVGAN-v2 + bandwidth extension for 2.3."""
    if generation == LTX2:
        return {
            "resblock_kernel_sizes": [3, 7, 11],
            "upsample_rates": [6, 5, 2, 2, 2],
            "upsample_kernel_sizes": [16, 15, 8, 4, 4],
            "resblock_dilation_sizes": _DILATIONS,
            "upsample_initial_channel": 64,
            "stereo": True,
            "resblock": "1",
            "output_sampling_rate": 24000,
        }
    _check_generation(generation)
    amp = {"resblock": "AMP1", "stereo": True, "activation": "snakebeta", "use_tanh_at_final": False}
    return {
        "vocoder": {
            **amp,
            "upsample_initial_channel": 128,
            "upsample_rates": [5, 2, 2, 2, 2, 2],
            "resblock_kernel_sizes": [3, 7, 11],
            "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
            "resblock_dilation_sizes": _DILATIONS,
            "use_bias_at_final": False,
        },
        "bwe": {
            **amp,
            "upsample_initial_channel": 64,
            "upsample_rates": [6, 5, 2, 2, 2],
            "resblock_kernel_sizes": [3, 7, 11],
            "upsample_kernel_sizes": [12, 11, 4, 4, 4],
            "resblock_dilation_sizes": _DILATIONS,
            "use_bias_at_final": False,
            "apply_final_activation": False,
            "input_sampling_rate": 16000,
            "output_sampling_rate": 48000,
            "hop_length": 80,
            "n_fft": 512,
            "win_size": 512,
            "num_mels": 64,
        },
    }


def checkpoint_config(generation: str) -> dict[str, Any]:
    """The full metadata ``config`` of a tiny single-file checkpoint."""
    return {
        "transformer": transformer_config(generation),
        "vae": video_vae_config(generation),
        "audio_vae": audio_vae_config(generation),
        "vocoder": vocoder_config(generation),
    }


def upsampler_config(scale: float) -> dict[str, Any]:
    """Flat ``config`` of a spatial latent upsampler: x2 (pixel shuffle) or x1.5 (rational resampler)."""
    if scale not in UPSAMPLER_SCALES:
        raise ValueError(f"no tiny upsampler for scale {scale}")
    return {
        "_class_name": "LatentUpsampler",
        "in_channels": 128,
        "mid_channels": 32,  # GroupNorm(32, mid_channels) needs a multiple of 32
        "num_blocks_per_stage": 1,
        "dims": 3,
        "spatial_upsample": True,
        "temporal_upsample": False,
        "spatial_scale": scale,
        "rational_resampler": scale != 2.0,
    }


def _check_generation(generation: str) -> None:
    if generation not in GENERATIONS:
        raise ValueError(f"unknown generation {generation!r}; expected one of {GENERATIONS}")


@contextlib.contextmanager
def tiny_gemma_feature_config() -> Iterator[None]:
    """Temporarily size ltx-core's hard-coded Gemma config for the tiny text projection.

    ``ltx_core.text_encoders.gemma.encoders.encoder_configurator._create_feature_extractor`` reads
    ``GEMMA3_CONFIG_FOR_LTX.text_config.{hidden_size,num_hidden_layers}``; a 12B-sized projection would be
    hundreds of MB. Use this around ``EmbeddingsProcessorConfigurator`` (build or load) for tiny checkpoints.
    """
    from ltx_core.text_encoders.gemma.config import GEMMA3_CONFIG_FOR_LTX

    text_config = GEMMA3_CONFIG_FOR_LTX.text_config
    saved = (text_config.hidden_size, text_config.num_hidden_layers)
    text_config.hidden_size, text_config.num_hidden_layers = TINY_GEMMA_HIDDEN_SIZE, TINY_GEMMA_NUM_LAYERS
    try:
        yield
    finally:
        text_config.hidden_size, text_config.num_hidden_layers = saved
