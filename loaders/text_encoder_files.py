"""Gemma-3 text encoder files: a Hugging Face folder in text_encoders/, one safetensors file with the tokenizer
beside it, or ComfyUI's single file with the tokenizer embedded (``spiece_model``). Finds the weights, config and
tokenizer, names any bad file (git-LFS pointers, missing tokenizer or config, pickle weights, keys of another
model), checks every key and shape against the module built on the meta device (`check_gemma`: header-only apart
from the small embedded tokenizer and ``comfy_quant`` markers), then loads the text backbone strictly with the
component streamer (`load_gemma`).

Quantized Gemma files (ComfyUI's ``gemma_3_12B_it_fp8_scaled`` / ``_fp4_mixed``: per-layer ``comfy_quant`` or
``_quantization_metadata``, nvfp4 for most Linears, some float8 or bf16; the legacy ``scaled_fp8`` marker) load
through the quantized-weights loader (`quant.fit.fit_quantized_layers`), as the transformer does: ``upcast``
de-quantises while streaming, ``keep`` holds the quantized bytes in `QuantLinear` s. The config is inferred from
the weights' logical shapes (`quant.layers.logical_tensors`).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .component_loader import WeightTransform, check_keys, stream_tensors
from .config_check import check_gemma_files
from .errors import CheckpointFormatError, StateDictMismatchError, WrongComponentError
from .key_maps import KeyMap
from .mapped_file import MappedFile
from .quant.fit import QuantFit, QuantMode, fit_quantized_layers
from .quant.layers import logical_tensors
from .safetensors_header import REFUSED_SUFFIXES, SafetensorsHeader, TensorInfo, parse_json, read_header

__all__ = [
    "GEMMA_TEXT_MAPS",
    "GemmaFiles",
    "GemmaPlan",
    "LoadedGemma",
    "TokenizerFileError",
    "check_gemma",
    "find_gemma_files",
    "gemma_quantization",
    "load_gemma",
]

logger = logging.getLogger(__name__)

GIT_LFS_SIGNATURE = b"version https://git-lfs.github.com/spec/"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
GEMMA_HINT = "Download the complete google/gemma-3-12b-it folder (or its tokenizer files) into models/text_encoders."
COMFY_GEMMA_HINT = ("Use ComfyUI's bf16 gemma_3_12B_it.safetensors (Comfy-Org/ltx-2, split_files/text_encoders; "
                    "its tokenizer is embedded) or the google/gemma-3-12b-it folder in models/text_encoders.")
# ComfyUI's Gemma files carry their tokenizer as this 1-D uint8 tensor (a serialized SentencePiece model).
EMBEDDED_TOKENIZER_KEY = "spiece_model"
EMBEDDED_TOKENIZER_DTYPE = "U8"
_OTHER_PARTS = ("model.vision_tower.", "model.multi_modal_projector.", "model.language_model.")
# Text-backbone layouts, most specific first: Gemma3ForConditionalGeneration (transformers < 4.52, >= 4.52),
# then text-only files (Gemma3ForCausalLM / ComfyUI's packaged Gemma) under ``model.``.
GEMMA_TEXT_MAPS = (
    KeyMap("GEMMA_CONDITIONAL_GENERATION_MAP", (("language_model.model.", "model."),),
           marker="language_model.model.embed_tokens."),
    KeyMap("GEMMA_CONDITIONAL_GENERATION_NEW_MAP", (("model.language_model.", "model."),),
           marker="model.language_model.embed_tokens."),
    KeyMap("GEMMA_TEXT_ONLY_MAP", (("model.", "model."),), excludes=_OTHER_PARTS, marker="model.embed_tokens."),
)
# Parts of Gemma files the text encoder does not use: recognised and skipped on purpose (logged), never
# 'unexpected'. (file key prefix, what it is): HF Gemma3ForConditionalGeneration before / after transformers 4.52,
# ComfyUI's Gemma3_12B (vision_model, multi_modal_projector, spiece_model), tied LM heads.
GEMMA_SKIPPED_PARTS: tuple[tuple[str, str], ...] = (
    ("vision_tower.", "vision tower"),
    ("model.vision_tower.", "vision tower"),
    ("vision_model.", "vision tower"),
    ("multi_modal_projector.", "multimodal projector"),
    ("model.multi_modal_projector.", "multimodal projector"),
    ("lm_head.", "LM head (tied to the token embeddings)"),
    ("language_model.lm_head.", "LM head (tied to the token embeddings)"),
    (EMBEDDED_TOKENIZER_KEY, "embedded tokenizer"),
)
QUANT_MODES = ("upcast", "keep")
LEGACY_FP8_MARKER = "scaled_fp8"  # ComfyUI's legacy fp8 files: this marker, then <layer>.scale_weight
# Stored dtypes that are bytes of a format, never values: a float parameter stored so needs a quantization marker.
_BYTE_DTYPES = ("U8", "I8", "F8_E8M0")
# Gemma-3 values that cannot be read from tensor shapes (those of the 12B model LTX-2 uses; ltx-core hard-codes
# the same ones); used only for a single file with no config.json beside it.
_GEMMA3_DEFAULTS: dict[str, Any] = {
    "model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6, "rope_theta": 1_000_000, "rope_local_base_freq": 10_000,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "sliding_window": 1024, "sliding_window_pattern": 6,
}


class TokenizerFileError(CheckpointFormatError):
    """The Gemma tokenizer is missing or one of its files is unusable (git-LFS pointer, empty, not JSON)."""


@dataclass(frozen=True)
class GemmaFiles:
    """Where a Gemma text encoder's parts are: weight shards, config (read or inferred), and the tokenizer: a
    folder of tokenizer files, or the weight file holding it as ``spiece_model`` (``embedded_tokenizer``)."""

    weights: tuple[str, ...]
    config: dict[str, Any]
    config_source: str
    tokenizer_dir: str
    tokenizer_files: tuple[str, ...]
    embedded_tokenizer: str | None = None

    @property
    def tokenizer_source(self) -> str:
        if self.embedded_tokenizer:
            return f"{self.embedded_tokenizer} ({EMBEDDED_TOKENIZER_KEY}, embedded SentencePiece model)"
        return self.tokenizer_dir


@dataclass(frozen=True)
class GemmaPlan:
    """A checked Gemma load (`check_gemma`): files, transformers config, headers, the layout and its keys
    (module key -> file key), and the parts skipped on purpose (label -> tensor count)."""

    files: GemmaFiles
    config: Any  # transformers.Gemma3TextConfig
    headers: tuple[SafetensorsHeader, ...]
    layout: KeyMap
    keys: dict[str, str]
    skipped: dict[str, int] = field(default_factory=dict)
    quantization: dict[str, int] = field(default_factory=dict)  # format -> layer count ({} for plain weights)
    mode: str = "upcast"

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)


@dataclass
class LoadedGemma:
    """The loaded text backbone (`GemmaTextEncoder`), its prompt tokenizer and where they came from."""

    encoder: torch.nn.Module
    tokenizer: Any
    files: GemmaFiles
    layout: str


def _is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(GIT_LFS_SIGNATURE)) == GIT_LFS_SIGNATURE


def _check_tokenizer_file(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise TokenizerFileError(str(path), "is empty.", GEMMA_HINT)
    if _is_lfs_pointer(path):
        raise TokenizerFileError(
            str(path), f"is a git-LFS pointer ({size} bytes), not the tokenizer itself.",
            f"The repository was cloned without git-lfs: run `git lfs pull` in {path.parent}, or download "
            f"{path.name} again from the model page.",
        )
    with open(path, "rb") as handle:
        start = handle.read(64).lstrip()
    if path.suffix == ".json" and not start.startswith(b"{"):
        raise TokenizerFileError(str(path), "is not a JSON tokenizer file (a web page or a damaged download?).",
                                 GEMMA_HINT)
    if path.suffix == ".model" and start.startswith((b"<", b"{")):
        raise TokenizerFileError(str(path), "is not a SentencePiece model (a web page or a damaged download?).",
                                 GEMMA_HINT)


def _find_tokenizer(folders: list[Path], what: str) -> tuple[Path, tuple[str, ...]]:
    for folder in folders:
        found = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
        if found:
            for path in found:
                _check_tokenizer_file(path)
            return folder, tuple(str(p) for p in found)
    raise TokenizerFileError(
        what, f"has no Gemma tokenizer ({' or '.join(TOKENIZER_FILES)}) in {', '.join(str(f) for f in folders)}.",
        GEMMA_HINT + " For a single .safetensors file, put tokenizer.json / tokenizer.model (and "
        "tokenizer_config.json) in the same folder, or use ComfyUI's gemma_3_12B_it.safetensors, which carries its "
        f"tokenizer inside ({EMBEDDED_TOKENIZER_KEY}).",
    )


def _read_config(path: Path) -> dict[str, Any]:
    if _is_lfs_pointer(path):
        raise CheckpointFormatError(str(path), "is a git-LFS pointer, not the model config.", GEMMA_HINT)
    config = parse_json(str(path), path.read_bytes(), "a model config")  # bounded nesting, errors name the file
    if not isinstance(config, dict) or not isinstance(config.get("text_config", {}), dict):
        raise CheckpointFormatError(str(path), "is not a model config (expected a JSON object).", GEMMA_HINT)
    if config.get("model_type") not in ("gemma3", "gemma3_text"):
        raise CheckpointFormatError(
            str(path), f"describes model_type={config.get('model_type')!r}, expected 'gemma3' or 'gemma3_text'.",
            "LTX-2 needs Gemma 3 (google/gemma-3-12b-it) as its text encoder.",
        )
    return config


def _folder_files(root: Path) -> GemmaFiles:
    weights = sorted(p for p in root.rglob("*.safetensors") if not p.name.startswith("."))
    if not weights:
        pickles = sorted(p.name for p in root.rglob("*") if p.name.lower().endswith(REFUSED_SUFFIXES))
        problem = "has no .safetensors weights" + (f" (only pickle files: {', '.join(pickles[:3])})." if pickles
                                                   else ".")
        raise CheckpointFormatError(str(root), problem, "AIPROD loads .safetensors only. " + GEMMA_HINT)
    configs = [weights[0].parent / "config.json", root / "config.json"]
    config_path = next((p for p in configs if p.is_file()), None)
    if config_path is None:
        raise CheckpointFormatError(str(root), "has no config.json.", GEMMA_HINT)
    tokenizer_dir, tokenizer_files = _find_tokenizer(
        [root, weights[0].parent, *sorted({p.parent for p in root.rglob("tokenizer.*")})], str(root))
    return GemmaFiles(tuple(str(w) for w in weights), _read_config(config_path), str(config_path),
                      str(tokenizer_dir), tokenizer_files)


def _infer_config(path: Path, tensors: dict[str, TensorInfo]) -> dict[str, Any]:
    layout = next((m for m in GEMMA_TEXT_MAPS if m.is_present(tensors)), None)
    if layout is None:
        raise WrongComponentError(str(path), "does not contain a Gemma-3 text model (no embed_tokens weight).",
                                  _not_gemma_hint(path))
    prefix = layout.renames[0][0]
    attention = prefix + "layers.0.self_attn."
    needed = [prefix + "embed_tokens.weight", attention + "q_norm.weight", attention + "q_proj.weight",
              attention + "k_proj.weight", prefix + "layers.0.mlp.gate_proj.weight"]
    absent = [k for k in needed if k not in tensors]
    if absent:
        raise StateDictMismatchError(str(path), f"has no config.json beside it and lacks {absent[0]}, so its "
                                     "Gemma-3 config cannot be inferred.", COMFY_GEMMA_HINT, missing=tuple(absent))
    vocab, hidden = tensors[prefix + "embed_tokens.weight"].shape
    layer_ids = {int(m[1]) for k in tensors if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", k))}
    head_dim = tensors[attention + "q_norm.weight"].shape[0]
    return {
        **_GEMMA3_DEFAULTS, "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": len(layer_ids),
        "head_dim": head_dim, "query_pre_attn_scalar": head_dim,
        "num_attention_heads": tensors[attention + "q_proj.weight"].shape[0] // head_dim,
        "num_key_value_heads": tensors[attention + "k_proj.weight"].shape[0] // head_dim,
        "intermediate_size": tensors[prefix + "layers.0.mlp.gate_proj.weight"].shape[0],
    }


def _not_gemma_hint(path: str | Path) -> str:
    """What a file that is not Gemma is, and where it goes instead (header only; '' when unknown)."""
    from .detect import describe_file

    try:
        desc = describe_file(path)
    except CheckpointFormatError:
        return ""
    names = set(desc.component_names)
    if names & {"text_projection", "video_embeddings_connector", "audio_embeddings_connector", "transformer"}:
        return (f"It is an LTX file ({desc.kind}), not Gemma: choose it as the text encoder loader's `checkpoint` "
                "(text projection) or `connectors` input, and a Gemma-3 folder or file as `gemma`.")
    return f"It looks like: {desc.kind}. " + GEMMA_HINT


def _embedded_tokenizer_problem(info: TensorInfo) -> str | None:
    from ..aiprod_core.text_encoder.spiece import MAX_MODEL_BYTES

    if info.dtype != EMBEDDED_TOKENIZER_DTYPE or len(info.shape) != 1:
        return f"its {EMBEDDED_TOKENIZER_KEY} tensor is {info.dtype} {list(info.shape)}, expected 1-D U8 bytes"
    if not 0 < info.nbytes <= MAX_MODEL_BYTES:
        return f"its {EMBEDDED_TOKENIZER_KEY} tensor holds {info.nbytes} bytes, expected 1 to {MAX_MODEL_BYTES}"
    return None


def _refuse_gemma4(header: SafetensorsHeader) -> None:
    """LTX-2.5's Gemma 4 (its ``gemma_config`` metadata or Gemma-4-only ``layer_scalar`` keys) named as such."""
    from .gemma4_files import GEMMA_CONFIG_KEY, LAYER_SCALAR

    if GEMMA_CONFIG_KEY in header.metadata or any(k.endswith("." + LAYER_SCALAR) for k in header.tensors):
        raise WrongComponentError(header.path, "is a Gemma 4 text encoder (LTX-2.5's), not Gemma 3.",
                                  "LTX-2 / LTX-2.3 need Gemma 3 12B: " + COMFY_GEMMA_HINT)


def _single_file(path: Path) -> GemmaFiles:
    header = read_header(path)
    _refuse_gemma4(header)
    beside = path.parent / "config.json"
    if beside.is_file():
        config, source = _read_config(beside), str(beside)
    else:
        config, source = _infer_config(path, logical_tensors(header)), f"inferred from the shapes in {path.name}"
        logger.info("%s: no config.json beside it; Gemma-3 config %s (other values as Gemma-3-12B)", path, source)
    embedded = header.tensors.get(EMBEDDED_TOKENIZER_KEY)
    if embedded is not None:
        problem = _embedded_tokenizer_problem(embedded)
        if problem:
            raise TokenizerFileError(str(path), f"{problem}.", COMFY_GEMMA_HINT)
        return GemmaFiles((str(path),), config, source, "", (), embedded_tokenizer=str(path))
    folders = [path.parent, path.parent / path.stem, path.parent / "tokenizer"]
    tokenizer_dir, tokenizer_files = _find_tokenizer([f for f in folders if f.is_dir()], str(path))
    return GemmaFiles((str(path),), config, source, str(tokenizer_dir), tokenizer_files)


def find_gemma_files(path: str | os.PathLike[str]) -> GemmaFiles:
    """Locate a Gemma text encoder given its folder or its single .safetensors file (no weights read)."""
    where = Path(path)
    if not where.exists():
        raise CheckpointFormatError(str(where), "does not exist.", GEMMA_HINT)
    files = _folder_files(where) if where.is_dir() else _single_file(where)
    check_gemma_files(files)  # config.json values against the weights' headers, before anything is built
    return files


def _clipping_tokenizer_class(base: type) -> type:
    """``base`` (the core's prompt tokenizer) that also warns, naming the prompt's token count, when a prompt is
    longer than ``max_length`` tokens and its tail is clipped (validation rule: a warning, not an error)."""

    class ClippingPromptTokenizer(base):
        def __call__(self, prompts):
            if not isinstance(prompts, str):
                for prompt in prompts:
                    count = len(self.tokenizer(prompt.strip(), truncation=False, verbose=False).input_ids)
                    if count > self.max_length:
                        logger.warning("prompt: %d tokens; only the first %d reach the model (the tokenizer clips "
                                       "the rest): %.60r...", count, self.max_length, prompt)
            return super().__call__(prompts)

    return ClippingPromptTokenizer


def gemma_quantization(fits: list[QuantFit] | tuple[QuantFit, ...]) -> dict[str, int]:
    """Format -> layer count of the quantized layers the fits of a Gemma load found ({} for plain weights)."""
    found: Counter[str] = Counter()
    for fit in fits:
        found.update(quant.format.name for quant in fit.kept.values())
        found.update(quant.format.name for quant, _ in fit.upcast.values())
    return dict(found.most_common())


def _refuse_byte_weights(path: str, keys: dict[str, str], tensors: dict[str, TensorInfo],
                         expected: dict[str, torch.Tensor], quantized: set[str]) -> None:
    """A float parameter stored as bytes with no format found (an integer / packed weight, no marker): refuse,
    never cast the bytes."""
    for key, meta in expected.items():
        file_key = keys.get(key)
        if file_key is None or key in quantized or not meta.dtype.is_floating_point:
            continue
        if tensors[file_key].dtype in _BYTE_DTYPES:
            raise CheckpointFormatError(path, f"stores `{file_key}` as {tensors[file_key].dtype} with no "
                                        "quantization marker, so its format cannot be known.", COMFY_GEMMA_HINT)


def _check_config_fits(files: GemmaFiles, tensors: dict[str, TensorInfo], layout: KeyMap) -> None:
    """Config values that size the module, against the header, before transformers sees the config (a config
    asking for 10**8 layers must not even be parsed into per-layer lists)."""
    prefix = layout.renames[0][0]
    layers = {int(m[1]) for k in tensors if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", k))}
    embed = tensors.get(prefix + "embed_tokens.weight")
    found = {"num_hidden_layers": len(layers), "hidden_size": embed.shape[1] if embed else None,
             "vocab_size": embed.shape[0] if embed else None}
    config = files.config.get("text_config", files.config) if files.config.get("model_type") == "gemma3" \
        else files.config
    for key, value in found.items():
        if value is not None and config.get(key) != value:
            raise CheckpointFormatError(files.config_source, f"{key}={config.get(key)!r}, expected {value!r} "
                                        f"(what {Path(files.weights[0]).name} holds).", GEMMA_HINT)


def _unused_keys(plan_keys: dict[str, str], tensors: dict[str, TensorInfo]) -> tuple[dict[str, int], list[str]]:
    taken = set(plan_keys.values())
    skipped: Counter[str] = Counter()
    unexpected = []
    for key in tensors:
        if key in taken:
            continue
        label = next((label for prefix, label in GEMMA_SKIPPED_PARTS if key.startswith(prefix)), None)
        if label is None:
            unexpected.append(key)
        else:
            skipped[label] += 1
    order = list(dict.fromkeys(label for _, label in GEMMA_SKIPPED_PARTS))
    return dict(sorted(skipped.items(), key=lambda item: order.index(item[0]))), unexpected


def read_embedded_tokenizer(path: str | os.PathLike[str]) -> bytes:
    """The serialized SentencePiece model a ComfyUI Gemma file embeds (``spiece_model``), read into memory."""
    header = read_header(path)
    info = header.tensors.get(EMBEDDED_TOKENIZER_KEY)
    problem = "has no embedded tokenizer" if info is None else _embedded_tokenizer_problem(info)
    if problem:
        raise TokenizerFileError(header.path, f"{problem}.", COMFY_GEMMA_HINT)
    with MappedFile(header) as mapped:
        return mapped.tensor(EMBEDDED_TOKENIZER_KEY).numpy().tobytes()


def _embedded_tokenizer(path: str, build: Any) -> Any:
    """``build(model bytes)`` on the file's embedded tokenizer; its problems named as the file's."""
    try:
        return build(read_embedded_tokenizer(path))
    except TokenizerFileError:
        raise
    except ValueError as exc:
        raise TokenizerFileError(path, f"has an embedded tokenizer ({EMBEDDED_TOKENIZER_KEY}) that cannot be "
                                 f"used: {exc}.", COMFY_GEMMA_HINT) from exc


def _check_embedded_tokenizer(path: str, vocab_size: int) -> None:
    from ..aiprod_core.text_encoder.spiece import SentencePieceGemmaTokenizer

    count = _embedded_tokenizer(path, SentencePieceGemmaTokenizer.token_count)
    if count > vocab_size:
        raise TokenizerFileError(path, f"has an embedded tokenizer of {count} tokens for {vocab_size} token "
                                 "embeddings: they do not belong together.", COMFY_GEMMA_HINT)


def _check_mode(quantized_weights: str) -> QuantMode:
    if quantized_weights not in QUANT_MODES:
        raise ValueError(f"quantized_weights={quantized_weights!r}, expected one of {', '.join(QUANT_MODES)}")
    return quantized_weights  # type: ignore[return-value]


def _files_and_layout(path: str | os.PathLike[str]) -> tuple[GemmaFiles, tuple[SafetensorsHeader, ...], KeyMap]:
    files = find_gemma_files(path)
    headers = tuple(read_header(w) for w in files.weights)
    tensors = {k: info for h in headers for k, info in h.tensors.items()}
    layout = next((m for m in GEMMA_TEXT_MAPS if m.is_present(tensors)), None)
    if layout is None:
        raise WrongComponentError(files.weights[0], "does not contain a Gemma-3 text model (no embed_tokens "
                                  "weight under language_model.model., model.language_model. or model.).",
                                  _not_gemma_hint(files.weights[0]) or GEMMA_HINT)
    return files, headers, layout


def _fitted_encoder(files: GemmaFiles, headers: tuple[SafetensorsHeader, ...], config: Any, keys: dict[str, str],
                    mode: QuantMode, dtype: torch.dtype | None) -> tuple[torch.nn.Module, list[QuantFit]]:
    """The meta-built encoder with each file's quantized layers fitted (`QuantLinear` s for ``keep``)."""
    from ..aiprod_core.text_encoder import GemmaTextEncoder

    encoder = GemmaTextEncoder(config, dtype=dtype, device="meta")
    return encoder, [fit_quantized_layers(encoder, header, keys, mode) for header in headers]


def _check_fitted(files: GemmaFiles, layout: KeyMap, keys: dict[str, str], tensors: dict[str, TensorInfo],
                  encoder: torch.nn.Module, fits: list[QuantFit]) -> None:
    expected = encoder.state_dict(keep_vars=True)
    shown = dict(tensors)
    for fit in fits:
        shown = fit.shown_tensors(shown, keys)
    try:
        check_keys(files.weights[0], "Gemma-3 text encoder", layout, keys, shown, expected)
    except StateDictMismatchError as exc:  # the shared hint would send the user to this very loader
        raise StateDictMismatchError(exc.path, exc.problem, "The file may be damaged or converted from another "
                                     f"Gemma version. {COMFY_GEMMA_HINT}", missing=exc.missing,
                                     unexpected=exc.unexpected, mismatched=exc.mismatched) from exc
    quantized = {k for fit in fits for k in (*fit.kept, *fit.upcast)}
    _refuse_byte_weights(files.weights[0], keys, tensors, expected, quantized)


def _plan(path: str | os.PathLike[str], quantized_weights: str, dtype: torch.dtype | None
          ) -> tuple[GemmaPlan, torch.nn.Module, list[QuantFit]]:
    from ..aiprod_core.text_encoder import gemma_text_config

    mode = _check_mode(quantized_weights)
    files, headers, layout = _files_and_layout(path)
    tensors = {k: info for h in headers for k, info in h.tensors.items()}
    logical = {k: info for h in headers for k, info in logical_tensors(h).items()}
    _check_config_fits(files, logical, layout)
    try:
        config = gemma_text_config(files.config)
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(files.config_source, f"is not a usable Gemma-3 config: {exc}.") from exc
    keys = layout.select(tensors)
    if LEGACY_FP8_MARKER in tensors:  # ComfyUI's top-level legacy marker: the quant scan reads it among the keys
        keys[LEGACY_FP8_MARKER] = LEGACY_FP8_MARKER
    skipped, unexpected = _unused_keys(keys, tensors)
    if unexpected:
        raise StateDictMismatchError(files.weights[0], f"holds {len(unexpected)} key(s) that are not part of a "
                                     f"Gemma-3 text encoder, first: {', '.join(unexpected[:8])}.", COMFY_GEMMA_HINT,
                                     unexpected=tuple(unexpected))
    encoder, fits = _fitted_encoder(files, headers, config, keys, mode, dtype)
    _check_fitted(files, layout, keys, tensors, encoder, fits)
    if files.embedded_tokenizer:
        _check_embedded_tokenizer(files.embedded_tokenizer, config.vocab_size)
    plan = GemmaPlan(files, config, headers, layout, keys, skipped, gemma_quantization(fits), mode)
    return plan, encoder, fits


def check_gemma(path: str | os.PathLike[str], quantized_weights: str = "upcast") -> GemmaPlan:
    """Every check of a Gemma text encoder that needs no weight: files, config (against the header's logical
    shapes), layout, leftover keys (only the parts in `GEMMA_SKIPPED_PARTS` may remain), each quantized layer's
    format and tensors, each key and shape against the module built on the meta device (with `QuantLinear` s for
    ``quantized_weights="keep"``) and the embedded tokenizer. Raises the first problem, naming the file."""
    return _plan(path, quantized_weights, None)[0]


def _tokenizer(files: GemmaFiles, max_length: int) -> Any:
    from ..aiprod_core.text_encoder import GemmaPromptTokenizer

    if files.embedded_tokenizer:
        return _embedded_tokenizer(files.embedded_tokenizer, lambda model: _clipping_tokenizer_class(
            GemmaPromptTokenizer).from_sentencepiece(model, max_length))
    try:
        return _clipping_tokenizer_class(GemmaPromptTokenizer).from_folder(files.tokenizer_dir, max_length)
    except (OSError, ValueError) as exc:
        raise TokenizerFileError(files.tokenizer_dir, f"holds a tokenizer that cannot be loaded ({exc}).",
                                 GEMMA_HINT) from exc


def load_gemma(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.bfloat16,
               device: torch.device | str = "cpu", max_length: int = 1024,
               transform: WeightTransform | None = None, quantized_weights: str = "upcast") -> LoadedGemma:
    """Load the Gemma-3 text backbone (strict, streamed) and its tokenizer from a folder or a single file.

    Quantized layers are de-quantised to ``dtype`` while loading (``quantized_weights="upcast"``) or kept in
    their stored bytes (``"keep"``: `QuantLinear`, de-quantised per call). ``transform`` (module key such as
    ``model.layers.0.mlp.up_proj.weight``, tensor, target dtype -> tensor) sees each tensor as it is read,
    de-quantised: text-encoder LoRAs fuse there (`loaders.lora_apply.gemma_lora_transform`; with a LoRA, quantized
    layers load up-cast)."""
    if transform is not None and quantized_weights == "keep":  # a LoRA fuses into dense weights only
        logger.info("%s: a text-encoder LoRA is fused, so quantized layers are de-quantised at load (upcast)", path)
        quantized_weights = "upcast"
    plan, encoder, fits = _plan(path, quantized_weights, dtype)
    files = plan.files
    if plan.skipped:
        logger.info("%s: skipped on purpose (not used by the text encoder): %s", files.weights[0],
                    ", ".join(f"{label} ({count} tensors)" for label, count in plan.skipped.items()))
    expected = encoder.state_dict(keep_vars=True)
    held = frozenset().union(*(fit.held for fit in fits))
    targets = {k: v.dtype if k in held or not v.is_floating_point() else dtype for k, v in expected.items()}
    state: dict[str, torch.Tensor] = {}
    module_keys = {f: m for m, f in plan.keys.items()}
    by_module = None if transform is None else (lambda f, value, target: transform(module_keys[f], value, target))
    for header, fit in zip(plan.headers, fits, strict=True):
        mine = {m: f for m, f in plan.keys.items() if f in header.tensors}
        state.update(stream_tensors(header, mine, targets, torch.device(device), by_module, quant=fit.upcast))
    encoder.load_state_dict(state, strict=True, assign=True)
    encoder.to(device).requires_grad_(False).eval()
    tokenizer = _tokenizer(files, max_length)
    quantized = ", ".join(f"{name} x{count}" for name, count in plan.quantization.items()) or "none"
    logger.info("loaded Gemma-3 text encoder from %s (layout %s, tokenizer: %s, quantized layers: %s, %s)",
                files.weights[0], plan.layout.name, files.tokenizer_source, quantized, plan.mode)
    return LoadedGemma(encoder, tokenizer, files, plan.layout.name)
