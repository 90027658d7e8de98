"""What each loadable component is: its config section, its file layouts (key maps) and how to build it.

The builders construct our `aiprod_core` modules from the checkpoint's ``config`` metadata; the loader calls
them with ``device="meta"`` and fills the parameters from the file afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import key_maps as km
from .safetensors_header import TensorInfo

__all__ = ["COMPONENTS", "FOLDER_HINTS", "ComponentSpec"]

Builder = Callable[[dict[str, Any], Mapping[str, TensorInfo], torch.dtype | None, str], nn.Module]

# Where a file holding each kind of content belongs (keys: `detect` component names and kinds).
FOLDER_HINTS: dict[str, str] = {
    "transformer": "the checkpoint loader (models/checkpoints) or the diffusion model loader "
    "(models/diffusion_models)",
    "video_vae": "the VAE loader (models/vae)",
    "vae_split": "the VAE loader (models/vae)",
    "audio_vae": "the audio VAE loader (models/checkpoints or models/vae)",
    "vocoder": "the audio VAE loader (models/checkpoints or models/vae)",
    "text_projection": "the text encoder loader, as its `checkpoint` (the text projection) input",
    "lora": "a LoRA loader (models/loras)",
    "latent_upsampler": "the latent upscale model loader (models/latent_upscale_models)",
    "gemma_language_model": "the text encoder loader (models/text_encoders)",
    "gemma_vision_tower": "the text encoder loader (models/text_encoders)",
    "duration_head": "the duration head loader (models/model_patches)",
}
GEMMA_3_12B_NUM_LAYERS = 48  # used only when the file has no text projection to infer the width from


@dataclass(frozen=True)
class ComponentSpec:
    """One loadable component: name, ``config`` section it needs (None: flat config) and accepted layouts."""

    name: str
    label: str
    config_section: str | None
    key_maps: tuple[km.KeyMap, ...]
    build: Builder
    folder_hint: str


def _transformer(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                 device: str) -> nn.Module:
    from ..aiprod_core.transformer import AVTransformer, TransformerConfig

    return AVTransformer(TransformerConfig.from_metadata(config, with_audio=True), dtype=dtype, device=device)


def _audio_transformer(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                       device: str) -> nn.Module:
    from ..aiprod_core.transformer import AVTransformer, TransformerConfig

    return AVTransformer(TransformerConfig.from_metadata(config, with_video=False), dtype=dtype, device=device)


def _video_encoder(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                   device: str) -> nn.Module:
    from ..aiprod_core.video_vae import VideoEncoder, video_encoder_config

    # Flat LTX-2 / 2.3 / 2.5-conv sections and the nested LTX-2.5 diffusion-VAE section alike.
    return VideoEncoder(video_encoder_config(config), dtype=dtype, device=device)


def _video_decoder(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                   device: str) -> nn.Module:
    from ..aiprod_core.video_vae import VideoDecoder, VideoVAEConfig, is_diffusion_vae

    if is_diffusion_vae(config):
        raise ValueError("vae._class_name='CausalDiffusionVAE', expected 'CausalVideoAutoencoder': this file holds "
                         "the LTX-2.5 diffusion decoder (component 'diffusion_video_decoder')")
    return VideoDecoder(VideoVAEConfig.from_metadata(config), dtype=dtype, device=device)


def _diffusion_video_decoder(config: dict[str, Any], tensors: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                             device: str) -> nn.Module:
    from ..aiprod_core.video_vae import DiffusionDecoderConfig, DiffusionVideoDecoder
    from ..aiprod_core.video_vae.diffusion_decoder import GATE_NAMES

    # Standalone distilled files carry static per-block gates; build the blocks with the ones present.
    gates = tuple(name for name in GATE_NAMES
                  if any("decoder.diff_blocks." in key and key.endswith(f".{name}") for key in tensors))
    return DiffusionVideoDecoder(DiffusionDecoderConfig.from_metadata(config), gates=gates, dtype=dtype,
                                 device=device)


def _audio_encoder(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                   device: str) -> nn.Module:
    from ..aiprod_core.audio_vae import AudioEncoder, AudioVAEConfig

    return AudioEncoder(AudioVAEConfig.from_metadata(config), dtype=dtype, device=device)


def _audio_decoder(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                   device: str) -> nn.Module:
    from ..aiprod_core.audio_vae import AudioDecoder, AudioVAEConfig

    return AudioDecoder(AudioVAEConfig.from_metadata(config), dtype=dtype, device=device)


def _vocoder(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
             device: str) -> nn.Module:
    from ..aiprod_core.audio_vae import VocoderConfig, build_vocoder

    return build_vocoder(VocoderConfig.from_metadata(config), dtype=dtype, device=device)


def gemma_dims(config: dict[str, Any], projection_width: int | None) -> tuple[int, int]:
    """(Gemma hidden size, Gemma layer count) the text projection was trained on.

    The hidden size is the transformer's ``caption_channels``; the projection's input width is
    hidden x (layers + 1) (every hidden state plus the embeddings), which gives the layer count.
    """
    hidden = int(config.get("transformer", {}).get("caption_channels", 3840))
    return projection_gemma_dims(hidden, projection_width)


def projection_gemma_dims(hidden: int, projection_width: int | None) -> tuple[int, int]:
    """(hidden, layers) of the Gemma whose ``hidden``-wide states the projection of input ``projection_width``
    stacks (layers + 1 of them); Gemma-3 12B's layer count when the width is unknown."""
    if projection_width is None:
        return hidden, GEMMA_3_12B_NUM_LAYERS
    if projection_width % hidden or projection_width // hidden < 2:
        raise ValueError(f"text projection input width={projection_width!r}, expected a multiple (>= 2) of "
                         f"caption_channels {hidden!r}")
    return hidden, projection_width // hidden - 1


def _projection_width(tensors: Mapping[str, TensorInfo]) -> int | None:
    for name in ("aggregate_embed.weight", "video_aggregate_embed.weight"):
        info = tensors.get("text_embedding_projection." + name)
        if info is not None and len(info.shape) == 2:
            return info.shape[1]
    return None


def _text_embeddings(config: dict[str, Any], tensors: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                     device: str) -> nn.Module:
    from ..aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor

    hidden, layers = gemma_dims(config, _projection_width(tensors))
    return TextEmbeddingsProcessor(TextEmbeddingsConfig.from_metadata(config), hidden, layers,
                                   dtype=dtype, device=device)


def _text_projection(config: dict[str, Any], tensors: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                     device: str) -> nn.Module:
    """The projection alone (LTX-2.5's text encoder file); ``config``: the transformer file's."""
    from ..aiprod_core.text_encoder import TextEmbeddingsConfig, TextFeatureExtractor

    hidden, layers = gemma_dims(config, _projection_width(tensors))
    return TextFeatureExtractor(TextEmbeddingsConfig.from_metadata(config), hidden, layers, dtype=dtype, device=device)


def _text_connectors(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                     device: str) -> nn.Module:
    from ..aiprod_core.text_encoder import TextConnectors, TextEmbeddingsConfig

    return TextConnectors(TextEmbeddingsConfig.from_metadata(config), dtype=dtype, device=device)


def _duration_head(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
                   device: str) -> nn.Module:
    from ..aiprod_core.duration_head import DurationHead, DurationHeadConfig

    return DurationHead(DurationHeadConfig.from_metadata(config), dtype=dtype, device=device)


def _upsampler(config: dict[str, Any], _: Mapping[str, TensorInfo], dtype: torch.dtype | None,
               device: str) -> nn.Module:
    from ..aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig

    return LatentUpsampler(LatentUpsamplerConfig.from_metadata(config), dtype=dtype, device=device)


UPSAMPLER_MAP = km.KeyMap("UPSAMPLER_MAP", (("", ""),), marker="initial_conv.",
                          description="latent upsampler file (initial_conv.*, res_blocks.*)")
_CHECKPOINT_HINT = FOLDER_HINTS["transformer"]
_AUDIO_HINT = FOLDER_HINTS["audio_vae"]
COMPONENTS: dict[str, ComponentSpec] = {
    spec.name: spec
    for spec in (
        ComponentSpec("transformer", "transformer", "transformer",
                      (km.AIPRODV_MODEL_COMFY_RENAMING_MAP, km.TRANSFORMER_SPLIT_MAP), _transformer, _CHECKPOINT_HINT),
        ComponentSpec("audio_transformer", "audio-only transformer", "transformer",
                      (km.AUDIO_ONLY_MODEL_MAP, km.AUDIO_ONLY_SPLIT_MAP), _audio_transformer, _CHECKPOINT_HINT),
        ComponentSpec("video_encoder", "video VAE encoder", "vae",
                      (km.VIDEO_VAE_ENCODER_MAP, km.VIDEO_VAE_ENCODER_SPLIT_MAP), _video_encoder,
                      FOLDER_HINTS["video_vae"]),
        ComponentSpec("video_decoder", "video VAE decoder", "vae",
                      (km.VIDEO_VAE_DECODER_MAP, km.VIDEO_VAE_DECODER_SPLIT_MAP), _video_decoder,
                      FOLDER_HINTS["video_vae"]),
        ComponentSpec("diffusion_video_decoder", "LTX-2.5 diffusion video decoder", "vae",
                      (km.DIFFUSION_VIDEO_DECODER_MAP, km.DIFFUSION_VIDEO_DECODER_SPLIT_MAP),
                      _diffusion_video_decoder, FOLDER_HINTS["video_vae"]),
        ComponentSpec("audio_encoder", "audio VAE encoder", "audio_vae",
                      (km.AUDIO_VAE_ENCODER_MAP, km.AUDIO_VAE_ENCODER_SPLIT_MAP), _audio_encoder, _AUDIO_HINT),
        ComponentSpec("audio_decoder", "audio VAE decoder", "audio_vae",
                      (km.AUDIO_VAE_DECODER_MAP, km.AUDIO_VAE_DECODER_SPLIT_MAP), _audio_decoder, _AUDIO_HINT),
        ComponentSpec("vocoder", "vocoder", "vocoder", (km.VOCODER_MAP,), _vocoder, _AUDIO_HINT),
        ComponentSpec("text_embeddings", "text projection and connectors", "transformer",
                      (km.TEXT_EMBEDDINGS_MAP, km.TEXT_EMBEDDINGS_SPLIT_MAP), _text_embeddings, _CHECKPOINT_HINT),
        # LTX-2.5: the projection in the text encoder file (config: the transformer file's), the connectors in the
        # transformer file; `loaders.text_embeddings.load_split_text_embeddings` assembles the two.
        ComponentSpec("text_projection", "text projection", "transformer", (km.TEXT_PROJECTION_FILE_MAP,),
                      _text_projection, FOLDER_HINTS["gemma_language_model"]),
        ComponentSpec("text_connectors", "text connectors", "transformer",
                      (km.CONNECTORS_MAP, km.CONNECTORS_SPLIT_MAP), _text_connectors, _CHECKPOINT_HINT),
        ComponentSpec("duration_head", "duration head", "transformer",
                      (km.DURATION_HEAD_MAP, km.DURATION_HEAD_PREFIXED_MAP), _duration_head,
                      FOLDER_HINTS["duration_head"]),
        ComponentSpec("latent_upsampler", "latent upsampler", None, (UPSAMPLER_MAP,), _upsampler,
                      FOLDER_HINTS["latent_upsampler"]),
    )
}
