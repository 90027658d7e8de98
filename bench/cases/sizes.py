"""The mid-size configurations of the benchmark (compute dominates; each measurement ~1-5 s on 2 CPU cores).

Metadata sections keep the official checkpoints' layout (support.tiny_configs) with the sizes raised.
"""

from __future__ import annotations

from typing import Any

GENERATION = "ltx23"  # LTX-2.3 layout: gated attention, cross-attention AdaLN, prompt AdaLN
LAYERS = 12
HEADS = 8
VIDEO_HEAD_DIM, AUDIO_HEAD_DIM = 64, 32  # video 512 wide, audio 256 wide
CONTEXT_TOKENS = 64
VIDEO_GRID = (4, 12, 16)  # latent (F, H, W): 768 video tokens (25 frames of 384 x 512 px)
AUDIO_TOKENS = 100  # 4 s of audio latents at 25 Hz
FPS = 24.0

VAE_BASE_CHANNELS = 16  # decoder width 16 x 8 = 128 channels at the latent end
VAE_LATENT = (4, 6, 8)  # latent (F, H, W) -> 25 frames of 192 x 256 px
VAE_TILING = {"spatial": (128, 64), "temporal": (16, 8)}  # (tile, overlap) in pixels / frames


def transformer_section() -> dict[str, Any]:
    from support import tiny_configs as tc

    section = tc.transformer_config(GENERATION)
    section.update(
        num_layers=LAYERS,
        num_attention_heads=HEADS,
        attention_head_dim=VIDEO_HEAD_DIM,
        cross_attention_dim=HEADS * VIDEO_HEAD_DIM,
        audio_num_attention_heads=HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM,
        audio_cross_attention_dim=HEADS * AUDIO_HEAD_DIM,
        connector_num_attention_heads=HEADS,
        connector_attention_head_dim=VIDEO_HEAD_DIM,
        audio_connector_num_attention_heads=HEADS,
        audio_connector_attention_head_dim=AUDIO_HEAD_DIM,
    )
    return section


def vae_section() -> dict[str, Any]:
    from support import tiny_configs as tc

    section = tc.video_vae_config(GENERATION)
    section.update(decoder_base_channels=VAE_BASE_CHANNELS)
    return section


CHECKPOINT_LAYERS = 24
CHECKPOINT_HEADS = 16  # video 16 x 64 = 1024 wide, audio 16 x 32 = 512: ~0.9 GB of bf16 weights


def checkpoint_transformer_section() -> dict[str, Any]:
    section = transformer_section()
    section.update(
        num_layers=CHECKPOINT_LAYERS,
        num_attention_heads=CHECKPOINT_HEADS,
        cross_attention_dim=CHECKPOINT_HEADS * VIDEO_HEAD_DIM,
        audio_num_attention_heads=CHECKPOINT_HEADS,
        audio_cross_attention_dim=CHECKPOINT_HEADS * AUDIO_HEAD_DIM,
        connector_num_attention_heads=CHECKPOINT_HEADS,
        audio_connector_num_attention_heads=CHECKPOINT_HEADS,
    )
    return section


# Pipelines: 384 x 256 px, 17 frames (latent 3 x 8 x 12 = 288 video tokens at full size), the transformer above.
PIPELINE_WIDTH, PIPELINE_HEIGHT, PIPELINE_FRAMES = 384, 256, 17
GUIDED_STEPS = 6
STG_BLOCK = 7  # ltx-pipelines uses block 28 / 29 of 48; the same depth fraction of our 12 blocks
