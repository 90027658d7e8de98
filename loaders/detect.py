"""Say what a safetensors or GGUF file is, from its header alone: components, generation, precision, the
quantization format of each part, and which AIPROD loader node takes it.

Used by the inspector node and by loader error messages ("this is a VAE file; choose it in ...").
No weights are read (only the few-byte ``comfy_quant`` markers of ComfyUI-quantized files).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from .errors import CheckpointFormatError
from .foreign_files import identify_foreign
from .gguf_file import is_gguf, read_gguf_header
from .safetensors_header import SafetensorsHeader, parse_json, read_header

__all__ = ["COMPONENT_PREFIXES", "DIFFUSION_DECODER_KINDS", "CheckpointDescription", "ComponentSummary",
           "describe_file", "format_report"]

# Official single-file checkpoint layout: (component, key prefixes). The first match wins, so the
# connectors (stored under the transformer's prefix) come before the transformer itself.
COMPONENT_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("duration_head", ("duration_head.", "model.diffusion_model.duration_head.")),
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
    ("video_embeddings_connector", ("video_embeddings_connector.",)),
    ("audio_embeddings_connector", ("audio_embeddings_connector.",)),
    ("transformer", ("transformer_blocks.", "patchify_proj.", "adaln_single.", "prompt_adaln_single.", "proj_out.",
                     "scale_shift_table", "caption_projection.", "audio_patchify_proj.", "audio_adaln_single.",
                     "audio_prompt_adaln_single.", "audio_proj_out.", "audio_scale_shift_table",
                     "audio_caption_projection.", "av_ca_")),
    ("latent_upsampler", ("initial_conv.", "res_blocks.", "post_upsample_res_blocks.", "final_conv.")),
    # A VAE saved alone without its `vae.` / `audio_vae.` prefix; video or audio is told by its config section.
    ("vae_split", ("encoder.", "decoder.", "per_channel_statistics.")),
)
LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up.", ".lora.down.", ".lora.up.", ".lokr_w", ".hada_w")
# Components whose architecture can only be known from the `config` metadata.
CONFIG_DEPENDENT = {"transformer", "video_vae", "audio_vae", "vocoder", "latent_upsampler", "vae_split"}
FP8_DTYPES = {"F8_E4M3", "F8_E5M2"}
# model_version prefix -> generation. 2.4 was the pre-release stamp of the 2.5 architecture (ltx-core 1.2.0 asks a
# gemma_source_checkpoint from 2.4.0 on, "below the LTX-2.5 stamp so pre-release builds are covered too", and gives
# 2.4+ files one parameter set).
GENERATIONS = (
    ("2.5", "LTX-2.5 (22B family)"),
    ("2.4", "LTX-2.5 (22B family, pre-release model_version 2.4)"),
    ("2.3", "LTX-2.3 (22B family)"),
    ("2.", "LTX-2 (19B family)"),
)
# LTX-2.5 component files whose kind the keys or the config tell apart (checked in order).
DIFFUSION_DECODER_MARKERS = ("vae.decoder.diff_blocks.", "decoder.diff_blocks.")
TEMPORAL_UPSAMPLER_KIND = "latent upsampler (temporal x2: twice the frame rate)"
LTX25_KINDS = (
    ("video_vae only", "video VAE with the LTX-2.5 diffusion decoder"),
    ("VAE (split file)", "video VAE (split file) with the LTX-2.5 diffusion decoder"),
)
COMFY_GEMMA_KIND = "Gemma-3 text encoder (ComfyUI layout, embedded tokenizer)"
DIFFUSION_DECODER_KINDS = frozenset(kind for _, kind in LTX25_KINDS)
# Which AIPROD node takes a file of each kind (the first matching component).
LOADER_NODES = (
    ("single-file checkpoint", "AIPROD Checkpoint Loader (models/checkpoints); its text projection: AIPROD Text "
     "Encoder Loader (`checkpoint`)"),
    ("transformer only", "AIPROD Diffusion Model Loader (models/diffusion_models); its LTX-2.3 connectors: AIPROD "
     "Text Encoder Loader (`connectors`)"),
    ("text projection / connectors only", "AIPROD Text Encoder Loader (`checkpoint`, or `connectors`; models/"
     "text_encoders, models/checkpoints or models/diffusion_models)"),
    (COMFY_GEMMA_KIND, "AIPROD Text Encoder Loader (`gemma`; models/text_encoders)"),
    ("video_vae only", "AIPROD Video VAE Loader (models/vae)"),
    ("VAE (split file)", "AIPROD Video VAE Loader (models/vae)"),
    ("audio_vae only", "AIPROD Audio VAE Loader (models/checkpoints or models/vae)"),
    ("audio VAE + vocoder", "AIPROD Audio VAE Loader (models/vae)"),
    ("component bundle", "AIPROD Video VAE Loader / AIPROD Audio VAE Loader"),
    ("LoRA", "AIPROD LoRA Loader / AIPROD IC-LoRA Loader (models/loras)"),
    ("latent upsampler", "AIPROD Latent Upsampler Loader (models/latent_upscale_models)"),
    ("Gemma text encoder weights", "AIPROD Text Encoder Loader (`gemma`: its folder, or the file with its "
     "tokenizer; models/text_encoders)"),
    ("video VAE with the LTX-2.5 diffusion decoder", "AIPROD Video VAE Loader (models/vae)"),
    ("video VAE (split file) with the LTX-2.5 diffusion decoder", "AIPROD Video VAE Loader (models/vae)"),
    (TEMPORAL_UPSAMPLER_KIND, "AIPROD Latent Upsampler Loader (models/latent_upscale_models), then AIPROD Temporal "
     "Upsample"),
    ("duration head", "AIPROD Duration Head Loader (models/model_patches)"),
)


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
    container: str = "safetensors"  # or "GGUF v3 (arch ltxv)"
    quantization: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()  # component -> ((format, layers), ...)
    loader: str = ""  # the AIPROD node that loads it, or why none can

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
    config = parse_json(header.path, raw, "a `config` metadata entry")  # bounded nesting, errors name the file
    return tuple(sorted(config)) if isinstance(config, dict) else ()


def _json_metadata(header: SafetensorsHeader, key: str) -> dict[str, object]:
    try:  # bounded nesting; a malformed entry reads as absent here (the loaders name it)
        value = parse_json(header.path, header.metadata.get(key, "{}"), f"a `{key}` metadata entry")
    except CheckpointFormatError:
        return {}
    return value if isinstance(value, dict) else {}


def _generation(model_version: str, names: set[str], header: SafetensorsHeader) -> str:
    for prefix, label in GENERATIONS:
        if model_version.startswith(prefix):
            return label
    # LTX-2.5 text encoder files: Gemma 4 (its config in `gemma_config`, with the LTX `gemma_version` stamp)
    gemma = _json_metadata(header, "gemma_config")
    stamp = f"{gemma.get('gemma_version', '')} {gemma.get('model_type', '')}".lower()
    if "gemma4" in stamp:
        return "LTX-2.5 (22B family, from its Gemma 4 text encoder config)"
    keys = header.tensors.keys()
    if any(k.startswith(DIFFUSION_DECODER_MARKERS) for k in keys):
        return "LTX-2.5 (22B family, from its diffusion decoder keys)"
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
        if model_parts == {"audio_vae", "vocoder"}:  # LTX-2.5's ltx-2.5-audio-vae file
            return "audio VAE + vocoder"
        return "single-file checkpoint" if "transformer" in model_parts else "component bundle"
    if model_parts:
        return f"{next(iter(model_parts))} only"
    gemma = COMFY_GEMMA_KIND if "embedded_tokenizer" in names else "Gemma text encoder weights"
    for name, kind in (("lora", "LoRA"), ("latent_upsampler", "latent upsampler"), ("vae_split", "VAE (split file)"),
                       ("gemma_language_model", gemma), ("duration_head", "duration head")):
        if name in names:
            return kind
    if names & {"text_projection", "video_embeddings_connector", "audio_embeddings_connector"}:
        return "text projection / connectors only"
    return "unrecognised (no LTX-2 component keys)"


def _ltx25_kind(kind: str, header: SafetensorsHeader) -> str:
    """Name the LTX-2.5 variants of a kind: the diffusion-decoder video VAE, the temporal latent upsampler."""
    if any(k.startswith(DIFFUSION_DECODER_MARKERS) for k in header.tensors):
        return dict(LTX25_KINDS).get(kind, kind)
    if kind == "latent upsampler":
        try:
            config = parse_json(header.path, header.metadata.get("config", "{}"), "a `config` metadata entry")
        except CheckpointFormatError:
            return kind
        if isinstance(config, dict) and config.get("temporal_upsample") and not config.get("spatial_upsample", True):
            return TEMPORAL_UPSAMPLER_KIND
    return kind


def _quantization(header: SafetensorsHeader) -> tuple[tuple[tuple[str, tuple[tuple[str, int], ...]], ...], str]:
    """(component -> formats with layer counts, refusal text or "") of a file."""
    from .quant.layers import scan_quantized_layers

    try:
        scan = scan_quantized_layers(header)
    except CheckpointFormatError as exc:
        return (), exc.problem
    groups: dict[str, Counter] = {}
    for quant in scan.layers.values():
        groups.setdefault(_component_of(quant.weight_key), Counter())[quant.format.name] += 1
    unsupported = getattr(header, "unsupported", {})
    for name, kind in unsupported.items():
        groups.setdefault(_component_of(name), Counter())[f"{kind} (not supported)"] += 1
    problem = f"GGUF type(s) {', '.join(sorted(set(unsupported.values())))} cannot be de-quantised" if unsupported \
        else ""
    return tuple((name, tuple(c.most_common())) for name, c in groups.items()), problem


def _gguf_config(header: SafetensorsHeader) -> tuple[tuple[str, ...], str, str]:
    """(config sections, model_version, problem) of a GGUF file."""
    from .gguf_config import gguf_config

    try:
        config = gguf_config(header)
    except CheckpointFormatError as exc:
        return (), "", exc.problem
    inferred = config.get("_inferred_from")
    version = header.metadata.get("model_version", "")
    if inferred and not version:
        version = "2.3" if "2.3" in inferred else "2.0"
    return tuple(sorted(k for k in config if not k.startswith("_"))), version, ""


def _loader(kind: str, problems: list[str]) -> str:
    if problems:
        return "none: " + "; ".join(problems)
    return next((node for k, node in LOADER_NODES if k == kind), "none (no AIPROD loader takes this kind of file)")


def describe_file(path: str | os.PathLike[str]) -> CheckpointDescription:
    """Describe ``path`` from its header; raise :class:`CheckpointFormatError` if it is unusable."""
    gguf = is_gguf(path)
    header = read_gguf_header(path) if gguf else read_header(path)
    if not header.tensors:
        raise CheckpointFormatError(header.path, "contains no tensors.")
    components = _summaries(header)
    names = {c.name for c in components}
    problems: list[str] = []
    foreign = identify_foreign(header)
    if foreign is not None:  # another architecture: named as such, not as a broken LTX-2 file
        problems.append(f"it is a {foreign.name} file, not an LTX-2 file. {foreign.instead}")
    if gguf:
        sections, model_version, problem = _gguf_config(header)
        problems += [problem] if problem else []
    else:
        sections, model_version = _config_sections(header), header.metadata.get("model_version", "")
        if names & CONFIG_DEPENDENT and "config" not in header.metadata and foreign is None:
            raise CheckpointFormatError(
                header.path,
                "has no `config` metadata, so the model architecture cannot be determined "
                f"(it holds: {', '.join(sorted(names & CONFIG_DEPENDENT))}).",
                "LTX-2 checkpoints carry their config in the safetensors metadata; the file was probably "
                "re-saved by a tool that dropped it. Use the official release file.",
            )
    quantization, problem = _quantization(header)
    problems += [problem] if problem else []
    dtypes = Counter(info.dtype for info in header.tensors.values()).most_common()
    if gguf:
        dtypes = Counter(header.ggml_types.values()).most_common()
    kind = f"{foreign.name} (not an LTX-2 file)" if foreign else _ltx25_kind(_kind(names), header)
    return CheckpointDescription(
        path=header.path, file_size=header.file_size, kind=kind,
        generation=_generation(model_version, names, header), model_version=model_version,
        variant=_variant(header.metadata), components=components, tensor_count=len(header.tensors),
        dtypes=tuple(dtypes), fp8=any(d in FP8_DTYPES for d, _ in dtypes), config_sections=sections,
        metadata_keys=tuple(sorted(header.metadata)),
        container=f"GGUF v{header.version} (arch {header.architecture or 'not stated'})" if gguf else "safetensors",
        quantization=quantization, loader=_loader(kind, problems),
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
        f"Container: {desc.container}",
        f"Weights: {dtype_text}; fp8: {'yes' if desc.fp8 else 'no'}",
        "Quantization: " + ("; ".join(f"{name}: " + ", ".join(f"{fmt} x{n}" for fmt, n in formats)
                                      for name, formats in desc.quantization) or "none"),
        f"Loads with: {desc.loader}",
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
    lines.append(f"Config sections: {', '.join(desc.config_sections) or 'none'}")
    lines.append(f"Metadata keys: {', '.join(desc.metadata_keys) or 'none'}")
    return "\n".join(lines)
