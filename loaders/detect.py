"""Say what a safetensors file is, from its header alone: components, generation, precision.

Used by the inspector node and by loader error messages ("this is a VAE file; choose it in ...").
No tensor data is read.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass

from .errors import CheckpointFormatError
from .safetensors_header import SafetensorsHeader, read_header

__all__ = ["COMPONENT_PREFIXES", "CheckpointDescription", "ComponentSummary", "describe_file", "format_report"]

# Official single-file checkpoint layout: (component, key prefixes). The first match wins, so the
# connectors (stored under the transformer's prefix) come before the transformer itself.
COMPONENT_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("video_embeddings_connector", ("model.diffusion_model.video_embeddings_connector.",)),
    ("audio_embeddings_connector", ("model.diffusion_model.audio_embeddings_connector.",)),
    ("embeddings_connector", ("model.diffusion_model.embeddings_connector.",)),
    ("transformer", ("model.diffusion_model.",)),
    ("video_vae", ("vae.",)),
    ("audio_vae", ("audio_vae.",)),
    ("vocoder", ("vocoder.",)),
    ("text_projection", ("text_embedding_projection.",)),
    # Gemma-3: Hugging Face (language_model. / model.language_model.) and ComfyUI's text-only names (model.*)
    ("gemma_language_model", ("language_model.", "model.language_model.", "model.embed_tokens.", "model.layers.",
                              "model.norm.")),
    ("gemma_vision_tower", ("vision_tower.", "model.vision_tower.", "multi_modal_projector.",
                            "model.multi_modal_projector.", "vision_model.")),
    ("embedded_tokenizer", ("spiece_model",)),  # ComfyUI's Gemma files: the SentencePiece model as uint8 bytes
)
# Files that hold one component without the single-file prefix (ComfyUI split files, upsamplers).
UNPREFIXED_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("transformer", ("transformer_blocks.", "patchify_proj.", "adaln_single.")),
    ("latent_upsampler", ("initial_conv.", "res_blocks.", "post_upsample_res_blocks.", "final_conv.")),
    # A VAE saved alone without its `vae.` / `audio_vae.` prefix; video or audio is told by its config section.
    ("vae_split", ("encoder.", "decoder.", "per_channel_statistics.")),
)
LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up.", ".lora.down.", ".lora.up.")
# Components whose architecture can only be known from the `config` metadata.
CONFIG_DEPENDENT = {"transformer", "video_vae", "audio_vae", "vocoder", "latent_upsampler", "vae_split"}
FP8_DTYPES = {"F8_E4M3", "F8_E5M2"}
GENERATIONS = (("2.3", "LTX-2.3 (22B family)"), ("2.", "LTX-2 (19B family)"))
COMFY_GEMMA_KIND = "Gemma-3 text encoder (ComfyUI layout, embedded tokenizer)"
# Which node loads a file of each kind (the report's "Loads with" line).
LOADED_BY: dict[str, str] = {
    "single-file checkpoint": "AIPROD Checkpoint Loader; its text projection: AIPROD Text Encoder Loader "
    "(`checkpoint`)",
    "transformer only": "AIPROD Diffusion Model Loader; its LTX-2.3 connectors: AIPROD Text Encoder Loader "
    "(`connectors`)",
    "text projection / connectors only": "AIPROD Text Encoder Loader (`checkpoint`, or `connectors`)",
    COMFY_GEMMA_KIND: "AIPROD Text Encoder Loader (`gemma`)",
    "Gemma text encoder weights": "AIPROD Text Encoder Loader (`gemma`: its folder, or the file with its tokenizer)",
    "LoRA": "AIPROD LoRA Loader / AIPROD IC-LoRA Loader",
    "latent upsampler": "AIPROD Latent Upsampler Loader",
    "VAE (split file)": "AIPROD Video VAE Loader or AIPROD Audio VAE Loader",
    "video_vae only": "AIPROD Video VAE Loader",
}


@dataclass(frozen=True)
class ComponentSummary:
    """Tensors of one component found in a file."""

    name: str
    tensor_count: int
    parameter_count: int
    dtypes: tuple[tuple[str, int], ...]  # (dtype name, tensor count), most common first


@dataclass(frozen=True)
class CheckpointDescription:
    """What a file contains, as read from its header."""

    path: str
    file_size: int
    kind: str
    generation: str
    model_version: str
    variant: str
    components: tuple[ComponentSummary, ...]
    tensor_count: int
    dtypes: tuple[tuple[str, int], ...]
    fp8: bool
    config_sections: tuple[str, ...]
    metadata_keys: tuple[str, ...]

    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)


def _component_of(key: str) -> str:
    if any(marker in key for marker in LORA_MARKERS):
        return "lora"
    for name, prefixes in COMPONENT_PREFIXES:
        if key.startswith(prefixes):
            return name
    for name, prefixes in UNPREFIXED_SIGNATURES:
        if key.startswith(prefixes):
            return name
    return "other"


def _summaries(header: SafetensorsHeader) -> tuple[ComponentSummary, ...]:
    groups: dict[str, list[str]] = {}
    for key in header.tensors:
        groups.setdefault(_component_of(key), []).append(key)
    result = []
    for name, keys in groups.items():
        infos = [header.tensors[k] for k in keys]
        dtypes = Counter(i.dtype for i in infos).most_common()
        result.append(ComponentSummary(name, len(keys), sum(i.numel for i in infos), tuple(dtypes)))
    order = [n for n, _ in COMPONENT_PREFIXES] + [n for n, _ in UNPREFIXED_SIGNATURES] + ["lora", "other"]
    return tuple(sorted(result, key=lambda s: order.index(s.name)))


def _config_sections(header: SafetensorsHeader) -> tuple[str, ...]:
    raw = header.metadata.get("config")
    if raw is None:
        return ()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointFormatError(header.path, "has a `config` metadata entry that is not valid JSON.",
                                    "The file is damaged or was written by a broken converter.") from exc
    return tuple(sorted(config)) if isinstance(config, dict) else ()


def _generation(model_version: str, names: set[str], header: SafetensorsHeader) -> str:
    for prefix, label in GENERATIONS:
        if model_version.startswith(prefix):
            return label
    keys = header.tensors.keys()
    if any(k.startswith("text_embedding_projection.video_aggregate_embed.") for k in keys):
        return "LTX-2.3 (22B family, from its text projection keys)"
    if any(k.startswith("text_embedding_projection.aggregate_embed.") for k in keys):
        return "LTX-2 (19B family, from its text projection keys)"
    return "unknown (no model_version metadata)" if names & CONFIG_DEPENDENT else "not applicable"


def _variant(metadata: dict[str, str]) -> str:
    text = " ".join(metadata.get(k, "") for k in ("model_version", "variant", "modelspec.title")).lower()
    if "distill" in text:
        return "distilled"
    if "dev" in text.split() or "-dev" in text:
        return "dev"
    return "not stated in the metadata"


def _kind(names: set[str]) -> str:
    model_parts = names & {"transformer", "video_vae", "audio_vae", "vocoder"}
    if len(model_parts) > 1:
        return "single-file checkpoint" if "transformer" in model_parts else "component bundle"
    if model_parts:
        return f"{next(iter(model_parts))} only"
    if {"gemma_language_model", "embedded_tokenizer"} <= names:
        return COMFY_GEMMA_KIND
    for name, kind in (("lora", "LoRA"), ("latent_upsampler", "latent upsampler"), ("vae_split", "VAE (split file)"),
                       ("gemma_language_model", "Gemma text encoder weights")):
        if name in names:
            return kind
    if names & {"text_projection", "video_embeddings_connector", "audio_embeddings_connector"}:
        return "text projection / connectors only"
    return "unrecognised (no LTX-2 component keys)"


def describe_file(path: str | os.PathLike[str]) -> CheckpointDescription:
    """Describe ``path`` from its header; raise :class:`CheckpointFormatError` if it is unusable."""
    header = read_header(path)
    if not header.tensors:
        raise CheckpointFormatError(header.path, "contains no tensors.")
    components = _summaries(header)
    names = {c.name for c in components}
    sections = _config_sections(header)
    if names & CONFIG_DEPENDENT and "config" not in header.metadata:
        raise CheckpointFormatError(
            header.path,
            "has no `config` metadata, so the model architecture cannot be determined "
            f"(it holds: {', '.join(sorted(names & CONFIG_DEPENDENT))}).",
            "LTX-2 checkpoints carry their config in the safetensors metadata; the file was probably "
            "re-saved by a tool that dropped it. Use the official release file.",
        )
    model_version = header.metadata.get("model_version", "")
    dtypes = Counter(info.dtype for info in header.tensors.values()).most_common()
    return CheckpointDescription(
        path=header.path, file_size=header.file_size, kind=_kind(names),
        generation=_generation(model_version, names, header), model_version=model_version,
        variant=_variant(header.metadata), components=components, tensor_count=len(header.tensors),
        dtypes=tuple(dtypes), fp8=any(d in FP8_DTYPES for d, _ in dtypes), config_sections=sections,
        metadata_keys=tuple(sorted(header.metadata)),
    )


def _human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


def _human_count(count: int) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.2f} M"


def format_report(desc: CheckpointDescription) -> str:
    """A readable multi-line report of a :class:`CheckpointDescription`."""
    dtype_text = ", ".join(f"{d} x{n}" for d, n in desc.dtypes)
    lines = [
        f"File: {os.path.basename(desc.path)} ({_human_bytes(desc.file_size)}, {desc.tensor_count} tensors)",
        f"Kind: {desc.kind}",
        f"Generation: {desc.generation}" + (f" [model_version {desc.model_version}]" if desc.model_version else ""),
        f"Variant: {desc.variant}",
        f"Weights: {dtype_text}; fp8: {'yes' if desc.fp8 else 'no'}",
        "Components:",
    ]
    width = max(len(c.name) for c in desc.components)
    for comp in desc.components:
        comp_dtypes = ", ".join(d for d, _ in comp.dtypes)
        lines.append(f"  {comp.name:<{width}}  {comp.tensor_count:>5} tensors  "
                     f"{_human_count(comp.parameter_count):>9} params  {comp_dtypes}")
    tokenizer = next((c for c in desc.components if c.name == "embedded_tokenizer"), None)
    if tokenizer is not None:
        size = _human_bytes(tokenizer.parameter_count)  # uint8: one element per byte
        lines.append(f"Tokenizer: embedded SentencePiece model (spiece_model, {size})")
    if desc.kind in LOADED_BY:
        lines.append(f"Loads with: {LOADED_BY[desc.kind]}")
    lines.append(f"Config sections: {', '.join(desc.config_sections) or 'none'}")
    lines.append(f"Metadata keys: {', '.join(desc.metadata_keys) or 'none'}")
    return "\n".join(lines)
