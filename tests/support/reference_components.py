"""The reference loader's (configurator, key map) pair per component, exactly as ltx-core's
``ModelLedger.build_model_builders`` wires them. Test-only: imports the oracle."""

from __future__ import annotations

__all__ = ["CHECKPOINT_COMPONENTS", "reference_components"]

# The components a single-file checkpoint holds (the latent upsampler is a file of its own).
CHECKPOINT_COMPONENTS = ("transformer", "text_embeddings", "video_encoder", "video_decoder", "audio_encoder",
                         "audio_decoder", "vocoder")


def reference_components() -> dict[str, tuple[type, object]]:
    """component -> (configurator, key map or None)."""
    from ltx_core.model.audio_vae import (
        AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
        VOCODER_COMFY_KEYS_FILTER,
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    from ltx_core.model.video_vae import (
        VAE_DECODER_COMFY_KEYS_FILTER,
        VAE_ENCODER_COMFY_KEYS_FILTER,
        VideoDecoderConfigurator,
        VideoEncoderConfigurator,
    )
    from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS, EmbeddingsProcessorConfigurator

    return {
        "transformer": (LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP),
        "video_encoder": (VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER),
        "video_decoder": (VideoDecoderConfigurator, VAE_DECODER_COMFY_KEYS_FILTER),
        "audio_encoder": (AudioEncoderConfigurator, AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER),
        "audio_decoder": (AudioDecoderConfigurator, AUDIO_VAE_DECODER_COMFY_KEYS_FILTER),
        "vocoder": (VocoderConfigurator, VOCODER_COMFY_KEYS_FILTER),
        "text_embeddings": (EmbeddingsProcessorConfigurator, EMBEDDINGS_PROCESSOR_KEY_OPS),
        "latent_upsampler": (LatentUpsamplerConfigurator, None),
    }
