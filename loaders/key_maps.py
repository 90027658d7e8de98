"""Checkpoint key layouts as data: one named `KeyMap` per source format and component.

A key map says which tensors of a file belong to a component and what they are called inside our module:
``renames`` are ``(file prefix, module prefix)`` pairs tried in order (first match wins, only the leading
prefix is replaced), ``excludes`` are file prefixes never taken, and ``marker`` is a file prefix at least one
key must start with for the layout to be considered present in a file at all.

Unlike the reference's maps (``str.replace`` anywhere in the key), a rename here only ever touches the leading
prefix, and the transformer map leaves the text connectors (stored under the same ``model.diffusion_model.``
prefix) to the text-embeddings map instead of taking them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "AIPRODV_LORA_COMFY_RENAMING_MAP",
    "AIPRODV_MODEL_COMFY_RENAMING_MAP",
    "AUDIO_ONLY_MODEL_MAP",
    "AUDIO_VAE_DECODER_MAP",
    "AUDIO_VAE_ENCODER_MAP",
    "CONNECTORS_MAP",
    "CONNECTOR_MAPS",
    "DIFFUSION_VIDEO_DECODER_MAP",
    "DIFFUSION_VIDEO_DECODER_SPLIT_MAP",
    "DURATION_HEAD_MAP",
    "PROJECTION_MAPS",
    "TEXT_EMBEDDINGS_MAP",
    "TEXT_PROJECTION_FILE_MAP",
    "TEXT_PROJECTION_MAP",
    "VIDEO_VAE_DECODER_MAP",
    "VIDEO_VAE_ENCODER_MAP",
    "VOCODER_MAP",
    "KeyMap",
]

DIFFUSION_MODEL_PREFIX = "model.diffusion_model."
CONNECTOR_NAMES = ("video_embeddings_connector.", "audio_embeddings_connector.", "embeddings_connector.")
DURATION_HEAD_PREFIX = "duration_head."  # LTX-2.5's duration head (its own file; ComfyUI also reads it prefixed)


@dataclass(frozen=True)
class KeyMap:
    """A named file layout of one component: file key -> module key by leading-prefix replacement."""

    name: str
    renames: tuple[tuple[str, str], ...]
    excludes: tuple[str, ...] = ()
    marker: str | None = None  # defaults to the first rename's file prefix
    only: tuple[str, ...] = ()  # when given, a file key is taken only if it contains one of these
    description: str = ""  # what the layout is, in words, for messages (``name`` is the identifier)

    @property
    def label(self) -> str:
        """The layout in words for error messages: its description, else the key prefix it takes."""
        if self.description:
            return self.description
        prefix = self.marker if self.marker is not None else self.renames[0][0]
        return f"keys {prefix}*" if prefix else "keys without a prefix"

    def to_module_key(self, file_key: str) -> str | None:
        """The module key of ``file_key``, or None when the key is not part of this layout."""
        if self.excludes and file_key.startswith(self.excludes):
            return None
        if self.only and not any(part in file_key for part in self.only):
            return None
        for file_prefix, module_prefix in self.renames:
            if file_key.startswith(file_prefix):
                return module_prefix + file_key[len(file_prefix) :]
        return None

    def to_file_key(self, module_key: str) -> str | None:
        """Inverse of `to_module_key` (first rename whose module prefix matches)."""
        for file_prefix, module_prefix in self.renames:
            if module_key.startswith(module_prefix):
                file_key = file_prefix + module_key[len(module_prefix) :]
                if self.to_module_key(file_key) == module_key:
                    return file_key
        return None

    def is_present(self, file_keys: Iterable[str]) -> bool:
        """Whether the file holds this layout (some key starts with the marker and is not excluded)."""
        marker = self.marker if self.marker is not None else self.renames[0][0]
        return any(k.startswith(marker) and self.to_module_key(k) is not None for k in file_keys)

    def select(self, file_keys: Iterable[str]) -> dict[str, str]:
        """module key -> file key for every file key this layout takes (file order kept)."""
        selected: dict[str, str] = {}
        for file_key in file_keys:
            module_key = self.to_module_key(file_key)
            if module_key is not None:
                selected[module_key] = file_key
        return selected


def _split_of(keymap: KeyMap, strip: str, name: str, description: str, marker: str | None = None) -> KeyMap:
    """The same component saved alone without the single-file prefix ``strip`` (ComfyUI split files)."""
    renames = tuple((fp.removeprefix(strip), mp) for fp, mp in keymap.renames)
    excludes = tuple(e.removeprefix(strip) for e in keymap.excludes)
    return KeyMap(name, renames, excludes, marker, description)


# ---- transformer ---------------------------------------------------------------------------------------
AIPRODV_MODEL_COMFY_RENAMING_MAP = KeyMap(
    "AIPRODV_MODEL_COMFY_RENAMING_MAP",
    renames=((DIFFUSION_MODEL_PREFIX, ""),),
    excludes=tuple(DIFFUSION_MODEL_PREFIX + c for c in (*CONNECTOR_NAMES, DURATION_HEAD_PREFIX)),
    description="single-file checkpoint transformer (model.diffusion_model.*)",
)
# diffusion_models/ file without the prefix: everything except the connectors and other components' keys.
TRANSFORMER_SPLIT_MAP = KeyMap(
    "TRANSFORMER_SPLIT_MAP",
    renames=(("", ""),),
    excludes=(*CONNECTOR_NAMES, DURATION_HEAD_PREFIX, "vae.", "audio_vae.", "vocoder.", "text_embedding_projection.",
              "model."),
    marker="transformer_blocks.",
    description="transformer saved alone (diffusion_models file, transformer_blocks.* without a prefix)",
)

# The audio stream's modules (top level and in every block): the audio-only transformer takes these alone, so
# the video weights of the file are never read. LTX-2 also projects the audio caption inside the transformer.
AUDIO_STREAM_PARTS = (
    ".audio_attn1.", ".audio_attn2.", ".audio_ff.", ".audio_scale_shift_table", ".audio_prompt_scale_shift_table",
    "audio_patchify_proj.", "audio_proj_out.", "audio_adaln_single.", "audio_prompt_adaln_single.",
    "audio_scale_shift_table", "audio_caption_projection.",
)
AUDIO_ONLY_MODEL_MAP = KeyMap(
    "AUDIO_ONLY_MODEL_MAP", AIPRODV_MODEL_COMFY_RENAMING_MAP.renames, AIPRODV_MODEL_COMFY_RENAMING_MAP.excludes,
    only=AUDIO_STREAM_PARTS,
)
AUDIO_ONLY_SPLIT_MAP = KeyMap(
    "AUDIO_ONLY_SPLIT_MAP", TRANSFORMER_SPLIT_MAP.renames, TRANSFORMER_SPLIT_MAP.excludes, marker="transformer_blocks.",
    only=AUDIO_STREAM_PARTS,
)

# ---- video VAE (statistics shared by encoder and decoder) ----------------------------------------------
VIDEO_VAE_ENCODER_MAP = KeyMap(
    "VIDEO_VAE_ENCODER_MAP",
    renames=(("vae.encoder.", ""), ("vae.per_channel_statistics.", "per_channel_statistics.")),
    description="single-file checkpoint video VAE encoder (vae.encoder.*)",
)
VIDEO_VAE_DECODER_MAP = KeyMap(
    "VIDEO_VAE_DECODER_MAP",
    renames=(("vae.decoder.", ""), ("vae.per_channel_statistics.", "per_channel_statistics.")),
    description="single-file checkpoint video VAE decoder (vae.decoder.*)",
)
VIDEO_VAE_ENCODER_SPLIT_MAP = _split_of(VIDEO_VAE_ENCODER_MAP, "vae.", "VIDEO_VAE_ENCODER_SPLIT_MAP",
                                        "video VAE encoder saved alone (encoder.* without the vae. prefix)")
VIDEO_VAE_DECODER_SPLIT_MAP = _split_of(VIDEO_VAE_DECODER_MAP, "vae.", "VIDEO_VAE_DECODER_SPLIT_MAP",
                                        "video VAE decoder saved alone (decoder.* without the vae. prefix)")

# ---- LTX-2.5 diffusion video decoder (same file family, ``vae._class_name`` "CausalDiffusionVAE") -----------
# Module keys equal the file's except the timestep MLP (``t_embedder.mlp.0/2`` in the file, our shared
# `TimestepEmbedder` names) and the shared statistics. The reference drops the bundled preview head
# (``vae.decoder.coarse_*``) at load: excluded here. ComfyUI's and Kijai's split ``vae/`` files carry the same keys
# without the ``vae.`` prefix.
DIFFUSION_VIDEO_DECODER_MAP = KeyMap(
    "DIFFUSION_VIDEO_DECODER_MAP",
    renames=(
        ("vae.decoder.t_embedder.mlp.0.", "t_embedder.timestep_embedder.linear_1."),
        ("vae.decoder.t_embedder.mlp.2.", "t_embedder.timestep_embedder.linear_2."),
        ("vae.decoder.", ""),
        ("vae.per_channel_statistics.", "per_channel_statistics."),
    ),
    excludes=("vae.decoder.coarse_",),
    marker="vae.decoder.diff_blocks.",
    description="single-file LTX-2.5 diffusion video decoder (vae.decoder.diff_blocks.*)",
)
DIFFUSION_VIDEO_DECODER_SPLIT_MAP = _split_of(
    DIFFUSION_VIDEO_DECODER_MAP, "vae.", "DIFFUSION_VIDEO_DECODER_SPLIT_MAP",
    "LTX-2.5 diffusion video decoder saved alone (decoder.diff_blocks.* without the vae. prefix)",
    marker="decoder.diff_blocks.",
)

# ---- audio VAE ------------------------------------------------------------------------------------------
AUDIO_VAE_ENCODER_MAP = KeyMap(
    "AUDIO_VAE_ENCODER_MAP",
    renames=(("audio_vae.encoder.", ""), ("audio_vae.per_channel_statistics.", "per_channel_statistics.")),
    description="single-file checkpoint audio VAE encoder (audio_vae.encoder.*)",
)
AUDIO_VAE_DECODER_MAP = KeyMap(
    "AUDIO_VAE_DECODER_MAP",
    renames=(("audio_vae.decoder.", ""), ("audio_vae.per_channel_statistics.", "per_channel_statistics.")),
    description="single-file checkpoint audio VAE decoder (audio_vae.decoder.*)",
)
AUDIO_VAE_ENCODER_SPLIT_MAP = _split_of(AUDIO_VAE_ENCODER_MAP, "audio_vae.", "AUDIO_VAE_ENCODER_SPLIT_MAP",
                                        "audio VAE encoder saved alone (encoder.* without the audio_vae. prefix)")
AUDIO_VAE_DECODER_SPLIT_MAP = _split_of(AUDIO_VAE_DECODER_MAP, "audio_vae.", "AUDIO_VAE_DECODER_SPLIT_MAP",
                                        "audio VAE decoder saved alone (decoder.* without the audio_vae. prefix)")

# ---- vocoder: the prefix is stripped once (LTX-2.3 keeps vocoder.* / bwe_generator.* / mel_stft.* beneath) --
VOCODER_MAP = KeyMap("VOCODER_MAP", renames=(("vocoder.", ""),), description="vocoder (vocoder.*)")

# ---- text projection and connectors (one module: TextEmbeddingsProcessor) --------------------------------
TEXT_PROJECTION_MAP = KeyMap("TEXT_PROJECTION_MAP", renames=(("text_embedding_projection.", "feature_extractor."),),
                             description="text projection (text_embedding_projection.*)")
CONNECTORS_MAP = KeyMap(
    "CONNECTORS_MAP",
    renames=(
        (DIFFUSION_MODEL_PREFIX + "video_embeddings_connector.", "video_connector."),
        (DIFFUSION_MODEL_PREFIX + "audio_embeddings_connector.", "audio_connector."),
    ),
    description="text connectors (model.diffusion_model.*_embeddings_connector.*)",
)
TEXT_EMBEDDINGS_MAP = KeyMap(
    "TEXT_EMBEDDINGS_MAP",
    renames=TEXT_PROJECTION_MAP.renames + CONNECTORS_MAP.renames,
    marker=DIFFUSION_MODEL_PREFIX + "video_embeddings_connector.",
    description="single-file checkpoint text projection and connectors (text_embedding_projection.*, "
    "model.diffusion_model.*_embeddings_connector.*)",
)
# Connectors inside an unprefixed diffusion_models/ file (the text projection then travels separately).
TEXT_EMBEDDINGS_SPLIT_MAP = _split_of(
    TEXT_EMBEDDINGS_MAP, DIFFUSION_MODEL_PREFIX, "TEXT_EMBEDDINGS_SPLIT_MAP",
    "text connectors in a diffusion_models file (*_embeddings_connector.* without a prefix)",
    marker="video_embeddings_connector.",
)
# Split text-encoder setups (projection and connectors in one file or two; see loaders.text_embeddings):
# connectors saved without the single-file prefix (transformer-only files, Kijai's embeddings_connector files),
# and ComfyUI's own LTX-2 text-encoder naming (lt.py LTXAVTEModel: `text_embedding_projection` is one Linear).
CONNECTORS_SPLIT_MAP = _split_of(CONNECTORS_MAP, DIFFUSION_MODEL_PREFIX, "CONNECTORS_SPLIT_MAP",
                                 "text connectors saved without a prefix (transformer-only or connector files)")
COMFY_TEXT_PROJECTION_MAP = KeyMap(
    "COMFY_TEXT_PROJECTION_MAP",
    renames=(("text_embedding_projection.weight", "feature_extractor.aggregate_embed.weight"),),
    description="ComfyUI's LTX-2 text projection (text_embedding_projection.weight)",
)
# Tried in this order: the first layout present in a file is the one used.
PROJECTION_MAPS = (COMFY_TEXT_PROJECTION_MAP, TEXT_PROJECTION_MAP)
CONNECTOR_MAPS = (CONNECTORS_MAP, CONNECTORS_SPLIT_MAP)

# ---- LTX-2.5: the projection lives in the text encoder file, the connectors in the transformer file -------
# (two modules: `TextFeatureExtractor` and `TextConnectors`, assembled by `loaders.text_embeddings`)
TEXT_PROJECTION_FILE_MAP = KeyMap("TEXT_PROJECTION_FILE_MAP", renames=(("text_embedding_projection.", ""),),
                                  description="text projection in the text encoder file (text_embedding_projection.*)")

# ---- LTX-2.5 duration head (model_patches/): Lightricks' own file, or under the transformer prefix ----------
DURATION_HEAD_MAP = KeyMap("DURATION_HEAD_MAP", renames=((DURATION_HEAD_PREFIX, ""),),
                           description="duration head file (model_patches/)")
DURATION_HEAD_PREFIXED_MAP = KeyMap(
    "DURATION_HEAD_PREFIXED_MAP", renames=((DIFFUSION_MODEL_PREFIX + DURATION_HEAD_PREFIX, ""),),
    description="duration head inside a checkpoint (model.diffusion_model.duration_head.*)",
)

# ---- LoRA source formats: LoRA key prefix -> path relative to the diffusion model -------------------------
AIPRODV_LORA_COMFY_RENAMING_MAP = KeyMap("AIPRODV_LORA_COMFY_RENAMING_MAP", renames=(("diffusion_model.", ""),),
                                         description="ComfyUI LoRA (diffusion_model.*)")
LORA_DIFFUSERS_MAP = KeyMap("LORA_DIFFUSERS_MAP", renames=(("transformer.", ""),),
                            description="diffusers / PEFT LoRA (transformer.*)")
LORA_SINGLE_FILE_MAP = KeyMap("LORA_SINGLE_FILE_MAP", renames=((DIFFUSION_MODEL_PREFIX, ""),),
                              description="LoRA with checkpoint key names (model.diffusion_model.*)")
LORA_KOHYA_MAP = KeyMap("LORA_KOHYA_MAP", renames=(("lora_unet_", ""),), description="kohya LoRA (lora_unet_*)")
# Tried in this order; a key no map takes is used as it stands (LoRAs saved without a prefix).
LORA_SOURCE_MAPS = (LORA_SINGLE_FILE_MAP, AIPRODV_LORA_COMFY_RENAMING_MAP, LORA_DIFFUSERS_MAP, LORA_KOHYA_MAP)
