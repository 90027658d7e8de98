"""Which Gemma a text encoder file is (3 or 4) and which one a transformer needs, from headers alone; one loader.

- `text_encoder_kind`: Gemma 3 (LTX-2 / LTX-2.3) or Gemma 4 (LTX-2.5), from the config's ``model_type``
  (``gemma_config`` metadata or ``config.json``) or, without one, from the keys (ComfyUI's rule: Gemma 4 has
  ``model.layers.0.layer_scalar``, Gemma 3 does not).
- `transformer_text_needs`: LTX-2.5 transformers declare ``gemma_source_checkpoint`` (``{"gemma_version": ...}``)
  and ``model_version`` >= 2.4 (LTX-2.5 is the product name of the internal 2.4; ltx-pipelines constants), and set
  ``ff_bias`` false in their config; older ones need Gemma 3.
- `check_text_encoder_generation`: refuses a Gemma 3 encoder with an LTX-2.5 transformer and a Gemma 4 encoder
  with an LTX-2 / LTX-2.3 one, naming both generations, and a Gemma 4 whose ``gemma_version`` differs from the
  transformer's ``gemma_source_checkpoint`` or whose config declares none (Google's stock Gemma 4; ltx-core
  ``_check_gemma_version``). Where a side has no stamp to carry (a repack without config, a transformer without
  ``gemma_source_checkpoint``) it warns instead of refusing, as ltx-core does when both lack one.
- `check_text_encoder`: the loader node's header-only check of either family (`check_gemma` / `check_gemma4`),
  after the generation check against the first of the given transformer files whose header tells its generation.
- `load_text_encoder`: loads either family (`load_gemma` / `load_gemma4`); quantized files in the ``keep`` /
  ``upcast`` mode of the quantized-weights loader.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointFormatError, WrongComponentError
from .gemma4_files import GEMMA4_HINT, GEMMA_CONFIG_KEY, LAYER_SCALAR, check_gemma4, load_gemma4
from .safetensors_header import SafetensorsHeader, parse_json, read_header
from .text_encoder_files import check_gemma, load_gemma

__all__ = [
    "CheckedTextEncoder",
    "GenerationMismatchError",
    "TextEncoderKind",
    "TransformerTextNeeds",
    "check_text_encoder",
    "check_text_encoder_generation",
    "load_text_encoder",
    "text_encoder_kind",
    "transformer_text_needs",
]

logger = logging.getLogger(__name__)

MODEL_TYPES = {"gemma3": "gemma3", "gemma3_text": "gemma3", "gemma4_unified": "gemma4",
               "gemma4_unified_text": "gemma4"}
FAMILY_LABELS = {"gemma3": "Gemma 3 (the text encoder of LTX-2 / LTX-2.3)",
                 "gemma4": "Gemma 4 (the text encoder of LTX-2.5)"}
LTX25 = "LTX-2.5"
LTX25_SINCE = (2, 4)
GEMMA3_HINT = "LTX-2 / LTX-2.3 use Gemma 3 12B (gemma_3_12B_it*.safetensors or the google/gemma-3-12b-it folder)."
FF_PROBE = "transformer_blocks.0.ff.net.0.proj."  # LTX-2.5: ff_bias false, so no .bias beside the weight
_LM_MARKERS = ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight",
               "language_model.model.embed_tokens.weight")


class GenerationMismatchError(WrongComponentError):
    """A text encoder of one model generation given with a transformer of another (or another Gemma version)."""


@dataclass(frozen=True)
class TextEncoderKind:
    """A text encoder's Gemma family (``"gemma3"`` / ``"gemma4"``), its LTX fine-tune stamp and how it was told."""

    path: str
    family: str
    gemma_version: str | None
    source: str
    has_config: bool = True  # False: told by tensor keys alone (no config to carry a stamp)

    @property
    def label(self) -> str:
        return FAMILY_LABELS[self.family]


@dataclass(frozen=True)
class TransformerTextNeeds:
    """The generation of a transformer file and the Gemma family (and stamp) its text path was trained with;
    ``family`` is None when the header does not tell."""

    path: str
    generation: str
    family: str | None
    gemma_version: str | None
    model_version: str


def _family_of_type(where: str, model_type: Any) -> str:
    if model_type == "gemma4":
        raise WrongComponentError(where, "is a dense Gemma 4 (model_type 'gemma4', e.g. gemma-4-E2B-it): LTX-2.5's "
                                  "optional prompt enhancer, not its text encoder.", GEMMA4_HINT)
    if model_type not in MODEL_TYPES:
        raise WrongComponentError(where, f"describes model_type={model_type!r}, expected a Gemma 3 or Gemma 4 "
                                  f"text encoder ({', '.join(MODEL_TYPES)}).", f"{GEMMA3_HINT} {GEMMA4_HINT}")
    return MODEL_TYPES[model_type]


def _json_file(path: Path) -> dict[str, Any]:
    value = parse_json(str(path), path.read_bytes(), "a model config")  # bounded nesting, errors name the file
    if not isinstance(value, dict):
        raise CheckpointFormatError(str(path), "is not a JSON object (the model config).")
    return value


def _kind_from_keys(header: SafetensorsHeader) -> str | None:
    keys = header.tensors
    for prefix in ("model.", "model.language_model."):
        if prefix + LAYER_SCALAR in keys:
            return "gemma4"
    if "spiece_model" in keys or any(k in keys for k in _LM_MARKERS):
        return "gemma3"
    return None


def text_encoder_kind(path: str | os.PathLike[str]) -> TextEncoderKind:
    """Gemma 3 or Gemma 4, for a text encoder folder or single file (headers and config files only)."""
    where = Path(path)
    if not where.exists():
        raise CheckpointFormatError(str(where), "does not exist.")
    if where.is_dir():
        config_path = where / "config.json"
        if not config_path.is_file():
            raise CheckpointFormatError(str(where), "has no config.json.", f"{GEMMA3_HINT} {GEMMA4_HINT}")
        config = _json_file(config_path)
        family = _family_of_type(str(config_path), config.get("model_type"))
        return TextEncoderKind(str(where), family, config.get("gemma_version"), f"model_type in {config_path}")
    header = read_header(where)
    raw = header.metadata.get(GEMMA_CONFIG_KEY)
    if raw is not None:
        config = parse_json(str(where), raw, f"a `{GEMMA_CONFIG_KEY}` metadata entry")
        family = _family_of_type(str(where), config.get("model_type") if isinstance(config, dict) else None)
        return TextEncoderKind(str(where), family, config.get("gemma_version"), f"{GEMMA_CONFIG_KEY} metadata")
    family = _kind_from_keys(header)
    if family is None:
        raise WrongComponentError(str(where), "is not a Gemma text encoder (no embed_tokens weight, no "
                                  f"{GEMMA_CONFIG_KEY} metadata).", f"{GEMMA3_HINT} {GEMMA4_HINT}")
    beside = where.parent / "config.json"  # the Gemma-4 loader reads its config (and stamp) from there too
    if family == "gemma4" and beside.is_file():
        config = _json_file(beside)
        if MODEL_TYPES.get(config.get("model_type")) == family:
            return TextEncoderKind(str(where), family, config.get("gemma_version"), f"tensor keys and {beside}")
    return TextEncoderKind(str(where), family, None, "tensor keys", has_config=False)


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.replace("-", ".").split("."):  # "2.4-rc2" counts as 2.4, as ltx-pipelines normalises it
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def _metadata_json(header: SafetensorsHeader, key: str) -> Any:
    raw = header.metadata.get(key)
    if raw is None:
        return None
    return parse_json(header.path, raw, f"a `{key}` metadata entry")


def _older_generation(version: tuple[int, ...], header: SafetensorsHeader) -> str:
    if version[:2] == (2, 3) or any(k.startswith("text_embedding_projection.video_aggregate_embed.")
                                    for k in header.tensors):
        return "LTX-2.3"
    if version[:1] == (2,) or any(k.startswith("text_embedding_projection.aggregate_embed.") for k in header.tensors):
        return "LTX-2"
    return "LTX-2 / LTX-2.3"


def _ff_bias(header: SafetensorsHeader) -> bool | None:
    """Whether the first transformer block's feed-forward has a bias (LTX-2.5 has none); None: no such block."""
    for prefix in ("model.diffusion_model.", ""):
        weight = f"{prefix}{FF_PROBE}weight"
        if weight in header.tensors:
            return f"{prefix}{FF_PROBE}bias" in header.tensors
    return None


def transformer_text_needs(transformer: str | os.PathLike[str] | SafetensorsHeader) -> TransformerTextNeeds:
    """The generation of a transformer (or single-file checkpoint) and the text encoder it needs (header only)."""
    header = transformer if isinstance(transformer, SafetensorsHeader) else read_header(transformer)
    model_version = header.metadata.get("model_version", "")
    version = _parse_version(model_version)
    source = _metadata_json(header, "gemma_source_checkpoint")
    config = _metadata_json(header, "config")
    section = config.get("transformer", {}) if isinstance(config, dict) else {}
    stamp = source.get("gemma_version") if isinstance(source, dict) else None
    ff_bias = _ff_bias(header)
    no_ff_bias = isinstance(section, dict) and False in (section.get("ff_bias"), section.get("audio_ff_bias"))
    if source is not None or version >= LTX25_SINCE or no_ff_bias or ff_bias is False:
        return TransformerTextNeeds(header.path, LTX25, "gemma4", stamp, model_version)
    if version or section or ff_bias:
        return TransformerTextNeeds(header.path, _older_generation(version, header), "gemma3", None, model_version)
    return TransformerTextNeeds(header.path, "unknown (no model_version / config metadata)", None, None, "")


def _mismatch(kind: TextEncoderKind, needs: TransformerTextNeeds) -> GenerationMismatchError:
    wanted = "gemma4" if kind.family == "gemma3" else "gemma3"
    hint = GEMMA4_HINT if wanted == "gemma4" else GEMMA3_HINT
    return GenerationMismatchError(
        kind.path, f"is {kind.label}, but the transformer {os.path.basename(needs.path)} is {needs.generation}, "
        f"which needs {FAMILY_LABELS[wanted]}.", hint,
    )


def _check_stamp(kind: TextEncoderKind, needs: TransformerTextNeeds) -> None:
    if needs.gemma_version is not None and kind.gemma_version is None and kind.has_config:
        raise GenerationMismatchError(  # a config without the stamp: not the LTX fine-tune (stock Gemma 4?)
            kind.path, f"is a Gemma 4 whose config ({kind.source}) declares no gemma_version, but the transformer "
            f"{os.path.basename(needs.path)} ({needs.generation}) was trained with gemma_version "
            f"{needs.gemma_version!r}: this is not its fine-tuned text encoder (Google's stock Gemma 4?).", GEMMA4_HINT,
        )
    if needs.gemma_version is None or kind.gemma_version is None:
        if needs.gemma_version != kind.gemma_version:
            logger.warning("cannot check the Gemma-4 version: the transformer %s declares gemma_version %r, the text "
                           "encoder %s %r; make sure they belong together", needs.path, needs.gemma_version,
                           kind.path, kind.gemma_version)
        return
    if needs.gemma_version != kind.gemma_version:
        raise GenerationMismatchError(
            kind.path, f"is Gemma 4 gemma_version {kind.gemma_version!r}, but the transformer "
            f"{os.path.basename(needs.path)} ({needs.generation}) was trained with gemma_version "
            f"{needs.gemma_version!r} (its gemma_source_checkpoint).", GEMMA4_HINT,
        )


def check_text_encoder_generation(
    text_encoder: str | os.PathLike[str], transformer: str | os.PathLike[str] | SafetensorsHeader
) -> TextEncoderKind:
    """Refuse a text encoder that does not belong to the transformer (`GenerationMismatchError`); headers only.

    Returns the text encoder's kind. A transformer whose header does not tell its generation is not refused.
    """
    kind = text_encoder_kind(text_encoder)
    needs = transformer_text_needs(transformer)
    if needs.family is None:
        logger.warning("%s: %s; the text encoder's generation is not checked", needs.path, needs.generation)
        return kind
    if needs.family != kind.family:
        raise _mismatch(kind, needs)
    if kind.family == "gemma4":
        _check_stamp(kind, needs)
    return kind


@dataclass(frozen=True)
class CheckedTextEncoder:
    """A text encoder that passed every header-only check: its kind, its plan (`GemmaPlan` / `Gemma4Plan`) and
    the language model's width and depth (what the text projection must fit)."""

    kind: TextEncoderKind
    plan: Any
    hidden_size: int
    num_layers: int


def _generation_source(transformers: tuple[str | os.PathLike[str], ...]) -> str | os.PathLike[str] | None:
    """The first file whose header tells the transformer's generation (unreadable files are someone else's
    problem: their own input's check names them)."""
    for path in transformers:
        try:
            if transformer_text_needs(path).family is not None:
                return path
        except (OSError, ValueError):
            continue
    return None


def check_text_encoder(path: str | os.PathLike[str], quantized_weights: str = "upcast",
                       transformers: tuple[str | os.PathLike[str], ...] | list = ()) -> CheckedTextEncoder:
    """Every check of a text encoder load that reads no weight (`check_gemma` / `check_gemma4`), after
    `check_text_encoder_generation` against the first of ``transformers`` whose header tells its generation
    (none tells: not checked here, the model's own checks meet the contexts later)."""
    try:
        kind = text_encoder_kind(path)
    except WrongComponentError:
        if Path(path).is_file():  # not Gemma: the Gemma-3 check names what the file is and which input takes it
            check_gemma(path, quantized_weights)
        raise
    source = _generation_source(tuple(transformers))
    if source is not None:
        check_text_encoder_generation(path, source)
    if kind.family == "gemma4":
        plan = check_gemma4(path, quantized_weights=quantized_weights)
        text = plan.files.config.get("text_config") or plan.files.config
        return CheckedTextEncoder(kind, plan, int(text["hidden_size"]), int(text["num_hidden_layers"]))
    plan = check_gemma(path, quantized_weights=quantized_weights)
    return CheckedTextEncoder(kind, plan, plan.hidden_size, plan.num_layers)


def load_text_encoder(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.bfloat16,
                      device: torch.device | str = "cpu", max_length: int = 1024, transform: Any = None,
                      quantized_weights: str = "upcast") -> Any:
    """Load a Gemma 3 (`LoadedGemma`) or Gemma 4 (`LoadedGemma4`) text encoder; both have ``.encoder`` (token ids,
    mask -> hidden states) and ``.tokenizer`` (prompts -> ids, mask). ``transform``: see `load_gemma` (text-encoder
    LoRAs; Gemma 3 only). ``quantized_weights`` ("upcast" / "keep") is the quantized-weights mode of quantized
    files of either family."""
    kind = text_encoder_kind(path)
    if kind.family == "gemma4":
        if transform is not None:
            raise ValueError(f"{path}: text-encoder LoRAs apply to Gemma 3 (LTX-2 / LTX-2.3) text encoders only")
        return load_gemma4(path, dtype=dtype, device=device, max_length=max_length,
                           quantized_weights=quantized_weights)
    return load_gemma(path, dtype=dtype, device=device, max_length=max_length, transform=transform,
                      quantized_weights=quantized_weights)
