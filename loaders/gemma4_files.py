"""Gemma-4 (LTX-2.5) text encoder files: find the weights, config and tokenizer, load the language model strictly.

Layouts (facts: ltx-core 1.2.0 ``gemma_assets.py`` / ``encoder_configurator.py``, ComfyUI ``comfy/sd.py``):

- Hugging Face folder of the fine-tuned ``Gemma4UnifiedForConditionalGeneration``: ``config.json``
  (``model_type`` ``gemma4_unified``, top-level ``gemma_version`` stamp), ``model*.safetensors`` with the language
  model under ``model.language_model.*``, ``tokenizer.json`` + ``tokenizer_config.json`` (+ ``chat_template.jinja``).
- The official single file ``text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors`` (ltx-core's packer,
  ComfyUI-flat keys by default): language model under ``model.layers.* / model.embed_tokens.* / model.norm.*``,
  media embedders under ``vision_model.* / multi_modal_projector.* / audio_projector.*`` (or, in files that only
  flattened the language model, the HF ``model.vision_embedder.* / model.embed_vision.* / model.embed_audio.*``),
  the LTX text projection ``text_embedding_projection.*``, the tokenizer as a U8 tensor ``tokenizer_json`` and the
  other tokenizer files as ``hf_asset__<name>`` U8 tensors (older packs: metadata strings of the same name),
  metadata ``gemma_config`` = the HF config JSON with its ``gemma_version``. Files packed with HF keys keep
  ``model.language_model.*``.
- ComfyUI's own layout of Gemma 4 12B (Comfy-Org / ``*-comfy-int8-convrot`` repacks) is the flat one; ComfyUI tells
  it from Gemma 3 12B by ``model.layers.0.layer_scalar``. Quantized layers carry ``<layer>.weight_scale`` /
  ``<layer>.comfy_quant`` (+ ``input_scale``) beside an I8 / F8 / U8 weight: they load through the quantized-weights
  loader (`quant.fit.fit_quantized_layers`), ``upcast`` or ``keep``, as the transformer and Gemma 3 do.

Only the language model is loaded (`Gemma4TextEncoder`); media embedders are not needed to encode text and the
text projection is loaded with the LTX text-embeddings processor. No code is run from any file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .component_loader import check_keys, stream_tensors
from .config_check import check_gemma4_config
from .errors import CheckpointFormatError, WrongComponentError
from .key_maps import KeyMap
from .mapped_file import MappedFile
from .quant.fit import QuantFit, fit_quantized_layers
from .quant.layers import logical_tensors
from .safetensors_header import REFUSED_SUFFIXES, SafetensorsHeader, TensorInfo, parse_json, read_header
from .text_encoder_files import TokenizerFileError

__all__ = ["GEMMA4_TEXT_MAPS", "Gemma4Files", "Gemma4Plan", "LoadedGemma4", "check_gemma4", "find_gemma4_files",
           "load_gemma4"]

logger = logging.getLogger(__name__)

GEMMA4_HINT = ("LTX-2.5 needs its own Gemma 4 text encoder: text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16"
               ".safetensors from Lightricks/LTX-2.5 (Google's stock Gemma 4 is not a substitute).")
GEMMA_CONFIG_KEY = "gemma_config"  # metadata: the HF config JSON
TOKENIZER_TENSOR = "tokenizer_json"  # U8 (or I8) bytes of tokenizer.json
ASSET_PREFIX = "hf_asset__"  # hf_asset__<file name>: other tokenizer / processor files as U8 bytes
TOKENIZER_SIDECARS = ("tokenizer_config.json", "chat_template.jinja", "chat_template.json")
GEMMA4_MODEL_TYPES = ("gemma4_unified", "gemma4_unified_text")
LAYER_SCALAR = "layers.0.layer_scalar"  # Gemma 4 only (ComfyUI's GEMMA_4_12B marker)
# File prefixes under ``model.`` that are not the flat language model.
_NOT_FLAT_LM = ("model.language_model.", "model.vision_embedder.", "model.embed_vision.", "model.embed_audio.",
                "model.vision_tower.", "model.audio_tower.", "model.multi_modal_projector.", "model.diffusion_model.")
GEMMA4_TEXT_MAPS = (
    KeyMap("GEMMA4_HF_MAP", (("model.language_model.", "model."),), marker="model.language_model.embed_tokens."),
    KeyMap("GEMMA4_FLAT_MAP", (("model.", "model."),), excludes=_NOT_FLAT_LM, marker="model.embed_tokens."),
)
QUANT_MODES = ("upcast", "keep")
# Gemma 4 12B values that cannot be read from tensor shapes (google/gemma-4-12B config.json, the base of the LTX
# fine-tune); used only for a file with neither `gemma_config` metadata nor a config.json beside it.
GEMMA4_12B_DEFAULTS: dict[str, Any] = {
    "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 262_144, "rms_norm_eps": 1e-6,
    "sliding_window": 1024, "final_logit_softcapping": 30.0, "use_bidirectional_attention": "vision",
    "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0, "use_double_wide_mlp": False,
    "attention_bias": False, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": True,
    "rope_parameters": {
        "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0, "rope_type": "proportional"},
        "sliding_attention": {"rope_theta": 10_000.0, "rope_type": "default"},
    },
}


@dataclass(frozen=True)
class Gemma4Files:
    """Where a Gemma-4 text encoder's parts are: weight files, config (and where it came from), tokenizer source
    (``tokenizer_dir`` for files beside the weights, else ``None`` when it is embedded in ``weights[0]``)."""

    weights: tuple[str, ...]
    config: dict[str, Any]
    config_source: str
    tokenizer_dir: str | None
    layout: str

    @property
    def gemma_version(self) -> str | None:
        """The LTX fine-tune stamp (``gemma4-12b-ltx-v1``) the transformer's ``gemma_source_checkpoint`` names."""
        version = self.config.get("gemma_version")
        return str(version) if version is not None else None


@dataclass
class LoadedGemma4:
    """The loaded Gemma-4 language model (`Gemma4TextEncoder`), its prompt tokenizer and where they came from."""

    encoder: torch.nn.Module
    tokenizer: Any
    files: Gemma4Files
    layout: str
    family: str = "gemma4"


def _is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(40).startswith(b"version https://git-lfs.github.com/spec/")


def _read_json_file(path: Path, what: str) -> dict[str, Any]:
    if _is_lfs_pointer(path):
        raise CheckpointFormatError(str(path), f"is a git-LFS pointer, not the {what}.",
                                    f"Run `git lfs pull` in {path.parent}, or download {path.name} again.")
    value = parse_json(str(path), path.read_bytes(), f"the {what}")  # bounded nesting, errors name the file
    if not isinstance(value, dict):
        raise CheckpointFormatError(str(path), f"is not a JSON object (the {what}).", GEMMA4_HINT)
    return value


def _metadata_config(header: SafetensorsHeader) -> dict[str, Any] | None:
    raw = header.metadata.get(GEMMA_CONFIG_KEY)
    if raw is None:
        return None
    config = parse_json(header.path, raw, f"a `{GEMMA_CONFIG_KEY}` metadata entry")
    if not isinstance(config, dict):
        raise CheckpointFormatError(header.path, f"has a `{GEMMA_CONFIG_KEY}` metadata entry that is not a JSON "
                                    "object.")
    return config


def pick_layout(path: str, tensors: dict[str, TensorInfo]) -> KeyMap:
    """The Gemma-4 language-model layout of a file's tensors (HF or flat), or `WrongComponentError`."""
    layout = next((m for m in GEMMA4_TEXT_MAPS if m.is_present(tensors)), None)
    if layout is None:
        raise WrongComponentError(path, "does not contain a Gemma-4 language model (no embed_tokens weight under "
                                  "model.language_model. or model.).", GEMMA4_HINT)
    return layout


def _infer_config(path: str, tensors: dict[str, TensorInfo], layout: KeyMap) -> dict[str, Any]:
    """A ``gemma4_unified`` config from tensor shapes plus `GEMMA4_12B_DEFAULTS` (ComfyUI repacks)."""
    prefix = layout.renames[0][0]
    if prefix + LAYER_SCALAR not in tensors:
        raise WrongComponentError(path, f"has no {prefix}{LAYER_SCALAR}: it is not a Gemma-4 language model "
                                  "(Gemma 3 has no layer scalars).", GEMMA4_HINT)
    layers = sorted({int(m[1]) for k in tensors if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", k))})
    head_dims = [tensors[f"{prefix}layers.{i}.self_attn.q_norm.weight"].shape[0] for i in layers]
    local, wide = min(head_dims), max(head_dims)
    types = ["full_attention" if d == wide and wide != local else "sliding_attention" for d in head_dims]
    types[-1] = "full_attention"  # transformers forces the last layer to full attention
    full = types.index("full_attention")
    attn = f"{prefix}layers.{{}}.self_attn."
    vocab, hidden = tensors[prefix + "embed_tokens.weight"].shape
    return {
        "model_type": "gemma4_unified",
        "text_config": {
            **GEMMA4_12B_DEFAULTS, "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": len(layers),
            "head_dim": local, "global_head_dim": wide, "layer_types": types,
            "num_attention_heads": tensors[attn.format(0) + "q_proj.weight"].shape[0] // local,
            "num_key_value_heads": tensors[attn.format(0) + "k_proj.weight"].shape[0] // local,
            "num_global_key_value_heads": tensors[attn.format(full) + "k_proj.weight"].shape[0] // wide,
            "attention_k_eq_v": attn.format(full) + "v_proj.weight" not in tensors,
            "intermediate_size": tensors[f"{prefix}layers.0.mlp.gate_proj.weight"].shape[0],
        },
    }


def _folder_files(root: Path) -> Gemma4Files:
    weights = sorted(p for p in root.rglob("*.safetensors") if not p.name.startswith("."))
    if not weights:
        pickles = sorted(p.name for p in root.rglob("*") if p.name.lower().endswith(REFUSED_SUFFIXES))
        problem = "has no .safetensors weights" + (f" (only pickle files: {', '.join(pickles[:3])})." if pickles
                                                   else ".")
        raise CheckpointFormatError(str(root), problem, "AIPROD loads .safetensors only. " + GEMMA4_HINT)
    config_path = next((p for p in (root / "config.json", weights[0].parent / "config.json") if p.is_file()), None)
    if config_path is None:
        raise CheckpointFormatError(str(root), "has no config.json.", GEMMA4_HINT)
    tensors = {k: v for w in weights for k, v in read_header(w).tensors.items()}
    layout = pick_layout(str(root), tensors)
    tokenizer_dir = _tokenizer_folder([root, weights[0].parent], str(root))
    return Gemma4Files(tuple(str(w) for w in weights), _read_json_file(config_path, "model config"),
                       str(config_path), tokenizer_dir, layout.name)


def _tokenizer_folder(folders: list[Path], what: str) -> str:
    for folder in folders:
        path = folder / "tokenizer.json"
        if path.is_file():
            _check_tokenizer_json(path)
            return str(folder)
    raise TokenizerFileError(what, f"has no Gemma-4 tokenizer: no embedded `{TOKENIZER_TENSOR}` tensor and no "
                             f"tokenizer.json in {', '.join(str(f) for f in folders)}.", GEMMA4_HINT)


def _check_tokenizer_json(path: Path) -> None:
    if path.stat().st_size == 0:
        raise TokenizerFileError(str(path), "is empty.", GEMMA4_HINT)
    if _is_lfs_pointer(path):
        raise TokenizerFileError(str(path), "is a git-LFS pointer, not the tokenizer itself.",
                                 f"Run `git lfs pull` in {path.parent}, or download tokenizer.json again.")
    with open(path, "rb") as handle:
        if not handle.read(64).lstrip().startswith(b"{"):
            raise TokenizerFileError(str(path), "is not a JSON tokenizer file (a web page or a damaged download?).",
                                     GEMMA4_HINT)


def _single_file(path: Path) -> Gemma4Files:
    header = read_header(path)
    layout = pick_layout(str(path), header.tensors)
    config, source = _metadata_config(header), f"the `{GEMMA_CONFIG_KEY}` metadata of {path.name}"
    beside = path.parent / "config.json"
    if config is None and beside.is_file():
        candidate = _read_json_file(beside, "model config")
        if candidate.get("model_type") in GEMMA4_MODEL_TYPES:  # not another model's config left in the folder
            config, source = candidate, str(beside)
    if config is None:
        config, source = (_infer_config(str(path), logical_tensors(header), layout),
                          f"inferred from the shapes in {path.name}")
        logger.warning("%s: no `%s` metadata and no config.json beside it; Gemma-4 config %s (other values as "
                       "Gemma-4-12B)", path, GEMMA_CONFIG_KEY, source)
    tokenizer_dir = None
    if TOKENIZER_TENSOR not in header.tensors:
        folders = [path.parent, path.parent / path.stem, path.parent / "tokenizer"]
        tokenizer_dir = _tokenizer_folder([f for f in folders if f.is_dir()], str(path))
    return Gemma4Files((str(path),), config, source, tokenizer_dir, layout.name)


def find_gemma4_files(path: str | os.PathLike[str]) -> Gemma4Files:
    """Locate a Gemma-4 text encoder given its folder or its single .safetensors file (headers only)."""
    where = Path(path)
    if not where.exists():
        raise CheckpointFormatError(str(where), "does not exist.", GEMMA4_HINT)
    return _folder_files(where) if where.is_dir() else _single_file(where)


def _asset_bytes(header: SafetensorsHeader, names: list[str]) -> dict[str, bytes]:
    """Embedded byte tensors (``tokenizer_json``, ``hf_asset__*``) by name; U8 or I8, read as raw bytes."""
    found: dict[str, bytes] = {}
    with MappedFile(header) as mapped:
        for name in names:
            info = header.tensors[name]
            if info.dtype not in ("U8", "I8") or len(info.shape) != 1:
                raise CheckpointFormatError(header.path, f"stores `{name}` as {info.dtype} {list(info.shape)}, "
                                            "expected a 1-D U8 byte tensor.")
            found[name] = mapped.tensor(name).view(torch.uint8).numpy().tobytes()
    return found


def _tokenizer_parts(files: Gemma4Files) -> tuple[bytes, dict[str, Any], str | None, str]:
    """(tokenizer.json bytes, tokenizer_config, chat template, where) from the file or the folder beside it."""
    if files.tokenizer_dir is not None:
        folder = Path(files.tokenizer_dir)
        config_path = folder / "tokenizer_config.json"
        config = _read_json_file(config_path, "tokenizer config") if config_path.is_file() else {}
        template = folder / "chat_template.jinja"
        return ((folder / "tokenizer.json").read_bytes(), config,
                template.read_text(encoding="utf-8") if template.is_file() else None, str(folder))
    header = read_header(files.weights[0])
    names = [TOKENIZER_TENSOR] + [ASSET_PREFIX + n for n in TOKENIZER_SIDECARS if ASSET_PREFIX + n in header.tensors]
    raw = _asset_bytes(header, names)
    sidecars = {n.removeprefix(ASSET_PREFIX): v.decode("utf-8") for n, v in raw.items() if n != TOKENIZER_TENSOR}
    for name in TOKENIZER_SIDECARS:  # older / Comfy packs keep them as metadata strings
        if name not in sidecars and name in header.metadata:
            sidecars[name] = header.metadata[name]
    try:
        config = parse_json(header.path, sidecars.get("tokenizer_config.json", "{}"), "an embedded tokenizer_config")
    except CheckpointFormatError as exc:
        raise TokenizerFileError(header.path, "embeds a tokenizer_config.json that is not valid JSON.") from exc
    template = sidecars.get("chat_template.jinja")
    if template is None and "chat_template.json" in sidecars:
        loaded = parse_json(header.path, sidecars["chat_template.json"], "an embedded chat_template.json")
        template = loaded.get("chat_template") if isinstance(loaded, dict) else loaded
    return raw[TOKENIZER_TENSOR], config, template, f"the tokenizer embedded in {header.path}"


def load_gemma4_tokenizer(files: Gemma4Files, max_length: int = 1024) -> Any:
    """The `Gemma4PromptTokenizer` of a Gemma-4 text encoder (embedded or beside the weights)."""
    from ..aiprod_core.text_encoder.gemma4 import Gemma4PromptTokenizer

    tokenizer_json, config, template, where = _tokenizer_parts(files)
    try:
        return Gemma4PromptTokenizer.from_tokenizer_json(tokenizer_json, config, template, max_length)
    except Exception as exc:  # the tokenizers library raises a bare Exception on a bad tokenizer.json
        raise TokenizerFileError(where, f"holds a Gemma-4 tokenizer that cannot be loaded ({exc}).",
                                 GEMMA4_HINT) from exc


def _refuse_byte_weights(path: str, keys: dict[str, str], tensors: dict[str, TensorInfo],
                         expected: dict[str, torch.Tensor], quantized: set[str]) -> None:
    """A float parameter stored as bytes (I8 / U8) with no quantization format found: refuse, never cast bytes."""
    for key, meta in expected.items():
        file_key = keys.get(key)
        if file_key is None or key in quantized or not meta.dtype.is_floating_point:
            continue
        if tensors[file_key].dtype in ("I8", "U8", "F8_E8M0"):
            raise CheckpointFormatError(path, f"stores `{file_key}` as {tensors[file_key].dtype} with no "
                                        "quantization marker, so its format cannot be known.", GEMMA4_HINT)


def _encoder_for(files: Gemma4Files, dtype: torch.dtype) -> torch.nn.Module:
    from ..aiprod_core.text_encoder.gemma4 import Gemma4TextEncoder, gemma4_placeholder_ids, gemma4_text_config

    try:
        config = gemma4_text_config(files.config)
    except ValueError as exc:
        raise CheckpointFormatError(files.config_source, f"is not a usable Gemma-4 config: {exc}.",
                                    GEMMA4_HINT) from exc
    return Gemma4TextEncoder(config, dtype=dtype, device="meta", placeholder_ids=gemma4_placeholder_ids(files.config))


@dataclass(frozen=True)
class Gemma4Plan:
    """A Gemma-4 text encoder checked from its headers: files, layout, module key -> file key, its tokenizer, and
    the quantized layers found (format -> count) with the mode they load in."""

    files: Gemma4Files
    layout: KeyMap
    keys: dict[str, str]
    headers: tuple[SafetensorsHeader, ...]
    tokenizer: Any
    quantization: dict[str, int] = field(default_factory=dict)
    mode: str = "upcast"


def _fit(files: Gemma4Files, headers: tuple[SafetensorsHeader, ...], layout: KeyMap, keys: dict[str, str],
         encoder: torch.nn.Module, mode: str) -> list[QuantFit]:
    """Fit each file's quantized layers (`QuantLinear` s for ``keep``), then check every key and shape."""
    tensors = {k: info for h in headers for k, info in h.tensors.items()}
    fits = [fit_quantized_layers(encoder, header, keys, mode) for header in headers]  # type: ignore[arg-type]
    shown = dict(tensors)
    for fit in fits:
        shown = fit.shown_tensors(shown, keys)
    expected = encoder.state_dict(keep_vars=True)
    check_keys(files.weights[0], "Gemma-4 language model", layout, keys, shown, expected)
    _refuse_byte_weights(files.weights[0], keys, tensors, expected, {k for f in fits for k in (*f.kept, *f.upcast)})
    return fits


def _plan(path: str | os.PathLike[str], dtype: torch.dtype, max_length: int, quantized_weights: str = "upcast"
          ) -> tuple[Gemma4Plan, torch.nn.Module, list[QuantFit]]:
    from ..aiprod_core.text_encoder.gemma4 import require_gemma4_transformers

    if quantized_weights not in QUANT_MODES:
        raise ValueError(f"quantized_weights={quantized_weights!r}, expected one of {', '.join(QUANT_MODES)}")
    require_gemma4_transformers()  # before any file is read: names the transformers version needed
    files = find_gemma4_files(path)
    headers = tuple(read_header(w) for w in files.weights)
    tensors = {k: info for h in headers for k, info in h.tensors.items()}
    layout = next(m for m in GEMMA4_TEXT_MAPS if m.name == files.layout)
    keys = layout.select(tensors)
    check_gemma4_config(files.config_source, files.config, keys, tensors)  # bounds and layer count, before the build
    encoder = _encoder_for(files, dtype)
    fits = _fit(files, headers, layout, keys, encoder, quantized_weights)
    tokenizer = load_gemma4_tokenizer(files, max_length)
    counts: dict[str, int] = {}
    for fit in fits:
        for quant in [*fit.kept.values(), *(q for q, _ in fit.upcast.values())]:
            counts[quant.format.name] = counts.get(quant.format.name, 0) + 1
    return Gemma4Plan(files, layout, keys, headers, tokenizer, counts, quantized_weights), encoder, fits


def check_gemma4(path: str | os.PathLike[str], max_length: int = 1024, quantized_weights: str = "upcast"
                 ) -> Gemma4Plan:
    """Every check of a Gemma-4 text encoder that reads no weight: transformers version, files, config, layout,
    each quantized layer's format and tensors, each key and shape against the module built on the meta device
    (with `QuantLinear` s for ``keep``), the tokenizer. Raises the first problem, naming the file."""
    return _plan(path, torch.bfloat16, max_length, quantized_weights)[0]


def load_gemma4(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.bfloat16,
                device: torch.device | str = "cpu", max_length: int = 1024,
                quantized_weights: str = "upcast") -> LoadedGemma4:
    """Load the Gemma-4 language model (strict, streamed) and its tokenizer from a folder or a single file; every
    `check_gemma4` check runs first. Quantized layers are de-quantised to ``dtype`` while loading (``"upcast"``)
    or held in their stored bytes (``"keep"``)."""
    plan, encoder, fits = _plan(path, dtype, max_length, quantized_weights)
    expected = encoder.state_dict(keep_vars=True)
    held = frozenset().union(*(fit.held for fit in fits))
    targets = {k: dtype if v.is_floating_point() and k not in held else v.dtype for k, v in expected.items()}
    state: dict[str, torch.Tensor] = {}
    for header, fit in zip(plan.headers, fits, strict=True):
        mine = {m: f for m, f in plan.keys.items() if f in header.tensors}
        state.update(stream_tensors(header, mine, targets, torch.device(device), quant=fit.upcast))
    encoder.load_state_dict(state, strict=True, assign=True)
    encoder.to(device).requires_grad_(False).eval()
    files = plan.files
    logger.info("loaded Gemma-4 language model from %s (layout %s, config from %s, gemma_version %s, quantized "
                "layers: %s, %s)", files.weights[0], plan.layout.name, files.config_source, files.gemma_version,
                ", ".join(f"{k} x{v}" for k, v in plan.quantization.items()) or "none", plan.mode)
    return LoadedGemma4(encoder, plan.tokenizer, files, plan.layout.name)
