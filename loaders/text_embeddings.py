"""The text projection and the embeddings connectors (one `TextEmbeddingsProcessor`) from one file or two.

Where users have them:
- the official single-file checkpoint (checkpoints/): projection + connectors under ``model.diffusion_model.``;
- Kijai's LTX-2 ``ltx-2-19b-embeddings_connector_*`` (text_encoders/): projection + connectors, the connectors
  with or without the ``model.diffusion_model.`` prefix (or ComfyUI's own naming: ``text_embedding_projection``
  as one Linear, bare connectors);
- Kijai's LTX-2.3 ``ltx-2.3_text_projection_bf16`` (text_encoders/): the projection alone; the connectors then
  live in the transformer-only file (diffusion_models/), which ComfyUI runs them inside.

`plan_text_embeddings` does every check that needs no weight: which file holds which part, the config (the
``config`` metadata of the connectors' file or of the projection's file, else inferred from the shapes with the
published LTX-2 / LTX-2.3 settings), the Gemma it must match, and every key and shape against the module built on
the meta device. `load_text_embeddings` then streams each part from its own file.

LTX-2.5 ships the text projection inside the Gemma 4 text encoder file (``text_embedding_projection.*``) and the
connectors inside the transformer file, whose ``config`` describes both: `check_split_text_embeddings` (headers
only) and `load_split_text_embeddings` load each part strictly and assemble the same `TextEmbeddingsProcessor`,
after `check_text_encoder_generation`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import key_maps as km
from .component_loader import WeightTransform, check_keys, stream_tensors
from .components import FOLDER_HINTS, projection_gemma_dims
from .detect import LORA_MARKERS, describe_file
from .errors import CheckpointFormatError, StateDictMismatchError, WrongComponentError
from .fp8 import SCALE_SUFFIXES
from .mapped_file import MappedFile
from .safetensors_header import SafetensorsHeader, parse_json, read_header

__all__ = ["PUBLISHED_CONNECTOR_SETTINGS", "PartSource", "TextEmbeddingsPlan", "check_split_text_embeddings",
           "load_split_text_embeddings", "load_text_embeddings", "plan_text_embeddings"]

logger = logging.getLogger(__name__)

# Connector settings the config metadata of the official LTX-2 (19B) and LTX-2.3 (22B) checkpoints carry and the
# shapes cannot tell; used only when neither file has a `config`. LTX-2's connectors have no per-head gates, so
# their head count is width / connector_attention_head_dim.
PUBLISHED_CONNECTOR_SETTINGS: dict[str, Any] = {
    "rope_type": "split", "frequencies_precision": "float64", "connector_positional_embedding_max_pos": [4096],
    "connector_attention_head_dim": 128, "connector_num_learnable_registers": 128,
}
PROJECTION_PREFIX = "feature_extractor."
CONNECTOR_PREFIXES = ("video_connector.", "audio_connector.")
# The inputs of the text encoder loader, as messages name them.
GEMMA_INPUT, PROJECTION_INPUT, CONNECTORS_INPUT = "`gemma`", "`checkpoint`", "`connectors`"


@dataclass(frozen=True)
class PartSource:
    """One part (projection or connectors): its file, the layout found there and module key -> file key."""

    path: str
    header: SafetensorsHeader
    layout: km.KeyMap
    keys: dict[str, str]


@dataclass(frozen=True)
class TextEmbeddingsPlan:
    """A checked projection + connectors load: the two parts, the text config, where it came from, and the
    Gemma width and layer count the projection expects."""

    projection: PartSource
    connectors: PartSource
    config: Any  # aiprod_core.text_encoder.TextEmbeddingsConfig
    config_source: str
    gemma_hidden: int
    gemma_layers: int


def _what_it_is(path: str) -> str:
    """Where a file that holds no text projection / connectors belongs instead (never this loader's own role)."""
    try:
        desc = describe_file(path)
    except CheckpointFormatError:
        return ""
    names = set(desc.component_names)
    if "gemma_language_model" in names or desc.kind.startswith("Gemma"):
        return f"It is a Gemma text encoder: choose it as {GEMMA_INPUT}."
    for name in ("lora", "video_vae", "vae_split", "audio_vae", "vocoder", "latent_upsampler"):
        if name in names:
            return f"It is a {desc.kind} file; it belongs in {FOLDER_HINTS.get(name, 'another loader')}."
    return f"It looks like: {desc.kind}."


def _select(header: SafetensorsHeader, maps: tuple[km.KeyMap, ...]) -> tuple[km.KeyMap, dict[str, str]] | None:
    for layout in maps:
        if layout.is_present(header.tensors):
            return layout, layout.select(header.tensors)
    return None


def _refuse_lora(header: SafetensorsHeader) -> None:
    if any(marker in key for key in header.tensors for marker in LORA_MARKERS):
        raise WrongComponentError(header.path, "is a LoRA, not a text projection or connectors file.",
                                  f"It belongs in {FOLDER_HINTS['lora']}.")


def _projection_source(path: str) -> tuple[PartSource, PartSource | None]:
    header = read_header(path)
    _refuse_lora(header)
    found = _select(header, km.PROJECTION_MAPS)
    connectors = _select(header, km.CONNECTOR_MAPS)
    here = None if connectors is None else PartSource(header.path, header, *connectors)
    if found is None:
        if here is not None:
            raise WrongComponentError(header.path, "holds the text connectors but no text projection "
                                      "(text_embedding_projection.*).", f"Choose it as {CONNECTORS_INPUT}, and as "
                                      f"{PROJECTION_INPUT} the file with the text projection (the LTX checkpoint, "
                                      "or Kijai's embeddings_connector / text_projection file).")
        raise WrongComponentError(header.path, "does not contain a text projection (no "
                                  "text_embedding_projection.* key).",
                                  _what_it_is(header.path) or f"Choose the LTX checkpoint as {PROJECTION_INPUT}.")
    return PartSource(header.path, header, *found), here


def _connector_source(path: str) -> PartSource:
    header = read_header(path)
    _refuse_lora(header)
    found = _select(header, km.CONNECTOR_MAPS)
    if found is None:
        raise WrongComponentError(header.path, "holds no text connectors (model.diffusion_model."
                                  "video_embeddings_connector.* or video_embeddings_connector.*).",
                                  _what_it_is(header.path) + " The LTX-2.3 connectors are in the transformer file "
                                  "(models/diffusion_models) or the checkpoint; LTX-2's in the checkpoint or Kijai's "
                                  "embeddings_connector file.")
    return PartSource(header.path, header, *found)


def _file_config(header: SafetensorsHeader) -> dict[str, Any] | None:
    raw = header.metadata.get("config")
    if raw is None:
        return None
    config = parse_json(header.path, raw, "a `config` metadata entry")
    if not isinstance(config, dict) or not isinstance(config.get("transformer"), dict):
        return None
    return config


def _shapes(part: PartSource) -> dict[str, tuple[int, ...]]:
    return {m: part.header.tensors[f].shape for m, f in part.keys.items()}


def _inferred_connector(shapes: dict[str, tuple[int, ...]], prefix: str, path: str) -> Any:
    from ..aiprod_core.text_encoder.config import ConnectorConfig

    settings = PUBLISHED_CONNECTOR_SETTINGS
    query = shapes.get(prefix + "transformer_1d_blocks.0.attn1.to_q.weight")
    if query is None:
        raise StateDictMismatchError(path, f"has no {prefix}transformer_1d_blocks.0.attn1.to_q.weight (in module "
                                     "naming), so its connector cannot be sized.", missing=(prefix,))
    inner = query[0]
    blocks = {int(m[1]) for k in shapes if (m := re.match(re.escape(prefix) + r"transformer_1d_blocks\.(\d+)\.", k))}
    gate = shapes.get(prefix + "transformer_1d_blocks.0.attn1.to_gate_logits.weight")
    head_dim = settings["connector_attention_head_dim"]
    if gate is None and inner % head_dim:
        raise CheckpointFormatError(path, f"has no `config` metadata, and its {prefix[:-1]} ({inner} wide, no "
                                    "per-head gates) does not tell its head count.", "Use a file that carries the "
                                    f"config: the LTX checkpoint as {PROJECTION_INPUT}, or the transformer file "
                                    f"(models/diffusion_models) as {CONNECTORS_INPUT}.")
    heads = gate[0] if gate is not None else inner // head_dim
    return ConnectorConfig(num_heads=heads, head_dim=inner // heads, num_layers=len(blocks),
                           num_registers=settings["connector_num_learnable_registers"],
                           rope_type=settings["rope_type"],
                           double_precision_rope=settings["frequencies_precision"] == "float64",
                           rope_max_pos=settings["connector_positional_embedding_max_pos"][0],
                           gated_attention=gate is not None)


def _inferred_config(projection: PartSource, connectors: PartSource, gemma_hidden: int | None) -> Any:
    """The text config from the shapes (no `config` metadata in either file) plus the published settings."""
    from ..aiprod_core.text_encoder.config import FeatureExtractorKind, TextEmbeddingsConfig

    proj, conn = _shapes(projection), _shapes(connectors)
    video = _inferred_connector(conn, "video_connector.", connectors.path)
    audio = _inferred_connector(conn, "audio_connector.", connectors.path)
    aggregate = proj.get(PROJECTION_PREFIX + "aggregate_embed.weight")
    if aggregate is not None:  # LTX-2: the projection maps back to the Gemma width
        kind, hidden = FeatureExtractorKind.AGGREGATE, aggregate[0]
        video_dim, audio_dim = video.inner_dim, audio.inner_dim
    else:  # LTX-2.3: projections to the video / audio widths; the Gemma width comes from the Gemma
        kind = FeatureExtractorKind.DUAL
        if gemma_hidden is None:
            raise CheckpointFormatError(projection.path, "has no `config` metadata and its LTX-2.3 projection "
                                        "does not tell the Gemma width; it is read from the Gemma file, which "
                                        "could not be checked.", f"Fix the {GEMMA_INPUT} input first.")
        hidden = gemma_hidden
        video_dim = proj.get(PROJECTION_PREFIX + "video_aggregate_embed.weight", (video.inner_dim,))[0]
        audio_dim = proj.get(PROJECTION_PREFIX + "audio_aggregate_embed.weight", (audio.inner_dim,))[0]
    config = TextEmbeddingsConfig(kind=kind, caption_channels=int(hidden), video_dim=int(video_dim),
                                  audio_dim=int(audio_dim), video_connector=video, audio_connector=audio)
    config.validate()
    return config


def _text_config(projection: PartSource, connectors: PartSource, gemma_hidden: int | None) -> tuple[Any, str]:
    from ..aiprod_core.text_encoder import TextEmbeddingsConfig

    for part in dict.fromkeys((connectors.path, projection.path)):
        header = connectors.header if part == connectors.path else projection.header
        config = _file_config(header)
        if config is not None:
            try:
                return TextEmbeddingsConfig.from_metadata(config), f"the `config` metadata of {part}"
            except ValueError as exc:
                raise CheckpointFormatError(part, f"has a transformer config the text connectors cannot use: "
                                            f"{exc}.") from exc
    return (_inferred_config(projection, connectors, gemma_hidden),
            "inferred from the shapes (no `config` metadata) with the published LTX-2 / LTX-2.3 settings")


def _projection_width(projection: PartSource) -> int | None:
    shapes = _shapes(projection)
    for name in ("aggregate_embed.weight", "video_aggregate_embed.weight"):
        shape = shapes.get(PROJECTION_PREFIX + name)
        if shape is not None and len(shape) == 2:
            return shape[1]
    return None


def _check_generations(projection: PartSource, config: Any, source: str) -> None:
    from ..aiprod_core.text_encoder.config import FeatureExtractorKind

    dual = PROJECTION_PREFIX + "video_aggregate_embed.weight" in projection.keys
    if dual != (config.kind is FeatureExtractorKind.DUAL):
        found, described = ("LTX-2.3", "LTX-2") if dual else ("LTX-2", "LTX-2.3")
        raise CheckpointFormatError(projection.path, f"holds an {found} text projection, but {source} describes "
                                    f"{described} connectors.", f"Choose the {PROJECTION_INPUT} and "
                                    f"{CONNECTORS_INPUT} files of one model generation.")


def plan_text_embeddings(projection: str | os.PathLike[str], connectors: str | os.PathLike[str] | None = None, *,
                         gemma_hidden: int | None = None, gemma_layers: int | None = None) -> TextEmbeddingsPlan:
    """Check a text projection (+ connectors) setup without reading a weight; ``connectors`` is the second file
    when the projection's file lacks them (or to take them from elsewhere). ``gemma_hidden`` / ``gemma_layers``:
    the Gemma to be used with it, checked against the projection's input width when given."""
    projection_part, own_connectors = _projection_source(str(projection))
    if connectors is not None and os.fspath(connectors) != projection_part.path:
        connector_part = _connector_source(str(connectors))
        if own_connectors is not None:
            logger.info("%s holds connectors too; using those of %s", projection_part.path, connector_part.path)
    elif own_connectors is not None:
        connector_part = own_connectors
    else:
        raise WrongComponentError(projection_part.path, "holds the text projection only, not the text connectors.",
                                  f"Choose as {CONNECTORS_INPUT} the file that holds them: for LTX-2.3 the "
                                  "transformer file (models/diffusion_models) or the checkpoint.")
    config, source = _text_config(projection_part, connector_part, gemma_hidden)
    _check_generations(projection_part, config, source)
    try:
        hidden, layers = projection_gemma_dims(config.caption_channels, _projection_width(projection_part))
    except ValueError as exc:
        raise CheckpointFormatError(projection_part.path, f"does not fit its config ({source}): {exc}.") from exc
    if gemma_hidden is not None and (gemma_hidden, gemma_layers) != (hidden, layers):
        raise CheckpointFormatError(projection_part.path, f"takes the hidden states of a Gemma {hidden} wide with "
                                    f"{layers} layers; the {GEMMA_INPUT} model is {gemma_hidden} wide with "
                                    f"{gemma_layers} layers.", "LTX-2 and LTX-2.3 use Gemma-3 12B "
                                    "(3840 wide, 48 layers): choose that as the Gemma, or the projection that "
                                    "belongs to yours.")
    plan = TextEmbeddingsPlan(projection_part, connector_part, config, source, hidden, layers)
    _check_plan_keys(plan)
    return plan


def _build(plan: TextEmbeddingsPlan, dtype: torch.dtype | None) -> nn.Module:
    from ..aiprod_core.text_encoder import TextEmbeddingsProcessor

    return TextEmbeddingsProcessor(plan.config, plan.gemma_hidden, plan.gemma_layers, dtype=dtype, device="meta")


def _parts(plan: TextEmbeddingsPlan) -> tuple[tuple[str, PartSource, tuple[str, ...]], ...]:
    return (("text projection", plan.projection, (PROJECTION_PREFIX,)),
            ("text connectors", plan.connectors, CONNECTOR_PREFIXES))


def _part_keys(part: PartSource, prefixes: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """(module key -> file key of the tensors to load, module weight key -> file key of its fp8 scale)."""
    keys = {m: f for m, f in part.keys.items() if m.startswith(prefixes)}
    scales = {}
    for module_key in [k for k in keys if k.endswith(SCALE_SUFFIXES)]:
        file_key = keys.pop(module_key)
        if module_key.endswith(".weight_scale"):
            scales[module_key.removesuffix("_scale")] = file_key
    return keys, scales


def _check_plan_keys(plan: TextEmbeddingsPlan) -> None:
    expected = _build(plan, None).state_dict(keep_vars=True)
    for label, part, prefixes in _parts(plan):
        mine = {k: v for k, v in expected.items() if k.startswith(prefixes)}
        keys, _ = _part_keys(part, prefixes)
        try:
            check_keys(part.path, label, part.layout, keys, part.header.tensors, mine)
        except StateDictMismatchError as exc:
            raise StateDictMismatchError(
                exc.path, exc.problem, f"Its config is {plan.config_source}. Choose the {PROJECTION_INPUT} and "
                f"{CONNECTORS_INPUT} files of one model (LTX-2 or LTX-2.3, from one release).",
                missing=exc.missing, unexpected=exc.unexpected, mismatched=exc.mismatched) from exc


def load_text_embeddings(plan: TextEmbeddingsPlan, *, dtype: torch.dtype = torch.bfloat16,
                         device: torch.device | str = "cpu", transform: WeightTransform | None = None) -> nn.Module:
    """The `TextEmbeddingsProcessor` of ``plan``: each part streamed from its own file (strict)."""
    module = _build(plan, dtype)
    expected = module.state_dict(keep_vars=True)
    state: dict[str, torch.Tensor] = {}
    for _, part, prefixes in _parts(plan):
        keys, scale_keys = _part_keys(part, prefixes)
        targets = {k: dtype if v.is_floating_point() else v.dtype for k, v in expected.items() if k in keys}
        with MappedFile(part.header) as mapped:
            scales = {k: mapped.tensor(f).to(dtype=torch.float32, copy=True) for k, f in scale_keys.items()}
        state.update(stream_tensors(part.header, keys, targets, torch.device(device), transform, scales))
    module.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"text projection / connectors have tensors left on the meta device: {leftovers[:8]}")
    logger.info("loaded text projection from %s and connectors from %s (config %s)", plan.projection.path,
                plan.connectors.path, plan.config_source)
    return module.requires_grad_(False).eval()


def check_split_text_embeddings(text_encoder_path: str | os.PathLike[str],
                                transformer_path: str | os.PathLike[str]) -> None:
    """Every header-only check of `load_split_text_embeddings` (generations, both parts' keys and shapes)."""
    from .component_loader import check_component
    from .text_encoder_generation import check_text_encoder_generation

    check_text_encoder_generation(text_encoder_path, transformer_path)
    connectors = check_component(transformer_path, "text_connectors")
    check_component(text_encoder_path, "text_projection", config=connectors.config)


def load_split_text_embeddings(text_encoder_path: str | os.PathLike[str], transformer_path: str | os.PathLike[str],
                               *, dtype: torch.dtype | None = torch.bfloat16, device: torch.device | str = "cpu"):
    """The text projection of ``text_encoder_path`` and the connectors of ``transformer_path`` (whose ``config``
    describes both) as one `TextEmbeddingsProcessor` (a `LoadedComponent`); both loads are strict, the
    generations are checked first."""
    from ..aiprod_core.text_encoder import TextEmbeddingsProcessor
    from .component_loader import LoadedComponent, load_component
    from .text_encoder_generation import check_text_encoder_generation

    check_text_encoder_generation(text_encoder_path, transformer_path)
    connectors = load_component(transformer_path, "text_connectors", dtype=dtype, device=device)
    projection = load_component(text_encoder_path, "text_projection", dtype=dtype, device=device,
                                config=connectors.config)
    processor = TextEmbeddingsProcessor.from_parts(projection.module, connectors.module)
    return LoadedComponent(module=processor.eval(), layout=f"{projection.layout} + {connectors.layout}",
                           config=connectors.config)
