"""Gemma-3 text encoder files: a Hugging Face folder in text_encoders/, or one safetensors file with the
tokenizer beside it. Finds the weights, config and tokenizer, names any bad file (git-LFS pointers, missing
tokenizer or config, pickle weights), and loads the text backbone strictly with the component streamer.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .component_loader import WeightTransform, check_keys, stream_tensors
from .errors import CheckpointFormatError, WrongComponentError
from .key_maps import KeyMap
from .safetensors_header import REFUSED_SUFFIXES, TensorInfo, read_header

__all__ = ["GEMMA_TEXT_MAPS", "GemmaFiles", "LoadedGemma", "TokenizerFileError", "find_gemma_files", "load_gemma"]

logger = logging.getLogger(__name__)

GIT_LFS_SIGNATURE = b"version https://git-lfs.github.com/spec/"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
GEMMA_HINT = "Download the complete google/gemma-3-12b-it folder (or its tokenizer files) into models/text_encoders."
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
    """Where a Gemma text encoder's parts are: weight shards, config (read or inferred), tokenizer folder."""

    weights: tuple[str, ...]
    config: dict[str, Any]
    config_source: str
    tokenizer_dir: str
    tokenizer_files: tuple[str, ...]


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
        "tokenizer_config.json) in the same folder.",
    )


def _read_config(path: Path) -> dict[str, Any]:
    if _is_lfs_pointer(path):
        raise CheckpointFormatError(str(path), "is a git-LFS pointer, not the model config.", GEMMA_HINT)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(str(path), "is not valid JSON.", GEMMA_HINT) from exc
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
        raise WrongComponentError(str(path), "does not contain a Gemma-3 text model (no embed_tokens weight).")
    prefix = layout.renames[0][0]
    vocab, hidden = tensors[prefix + "embed_tokens.weight"].shape
    layer_ids = {int(m[1]) for k in tensors if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", k))}
    attention = prefix + "layers.0.self_attn."
    head_dim = tensors[attention + "q_norm.weight"].shape[0]
    return {
        **_GEMMA3_DEFAULTS, "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": len(layer_ids),
        "head_dim": head_dim, "query_pre_attn_scalar": head_dim,
        "num_attention_heads": tensors[attention + "q_proj.weight"].shape[0] // head_dim,
        "num_key_value_heads": tensors[attention + "k_proj.weight"].shape[0] // head_dim,
        "intermediate_size": tensors[prefix + "layers.0.mlp.gate_proj.weight"].shape[0],
    }


def _single_file(path: Path) -> GemmaFiles:
    header = read_header(path)
    beside = path.parent / "config.json"
    if beside.is_file():
        config, source = _read_config(beside), str(beside)
    else:
        config, source = _infer_config(path, header.tensors), f"inferred from the shapes in {path.name}"
        logger.warning("%s: no config.json beside it; Gemma-3 config %s (other values as Gemma-3-12B)", path, source)
    folders = [path.parent, path.parent / path.stem, path.parent / "tokenizer"]
    tokenizer_dir, tokenizer_files = _find_tokenizer([f for f in folders if f.is_dir()], str(path))
    return GemmaFiles((str(path),), config, source, str(tokenizer_dir), tokenizer_files)


def find_gemma_files(path: str | os.PathLike[str]) -> GemmaFiles:
    """Locate a Gemma text encoder given its folder or its single .safetensors file (no weights read)."""
    where = Path(path)
    if not where.exists():
        raise CheckpointFormatError(str(where), "does not exist.", GEMMA_HINT)
    return _folder_files(where) if where.is_dir() else _single_file(where)


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


def load_gemma(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.bfloat16,
               device: torch.device | str = "cpu", max_length: int = 1024,
               transform: WeightTransform | None = None) -> LoadedGemma:
    """Load the Gemma-3 text backbone (strict, streamed) and its tokenizer from a folder or a single file.

    ``transform`` (module key such as ``model.layers.0.mlp.up_proj.weight``, tensor, target dtype -> tensor) sees
    each tensor as it is read: text-encoder LoRAs fuse there (`loaders.lora_apply.gemma_lora_transform`).
    """
    from ..aiprod_core.text_encoder import GemmaPromptTokenizer, GemmaTextEncoder, gemma_text_config

    files = find_gemma_files(path)
    try:
        config = gemma_text_config(files.config)
    except ValueError as exc:
        raise CheckpointFormatError(files.config_source, f"is not a usable Gemma-3 config: {exc}.") from exc
    headers = [read_header(w) for w in files.weights]
    tensors = {k: info for h in headers for k, info in h.tensors.items()}
    layout = next((m for m in GEMMA_TEXT_MAPS if m.is_present(tensors)), None)
    if layout is None:
        raise WrongComponentError(files.weights[0], "does not contain a Gemma-3 text model (no embed_tokens "
                                  "weight under language_model.model., model.language_model. or model.).", GEMMA_HINT)
    encoder = GemmaTextEncoder(config, dtype=dtype, device="meta")
    expected = encoder.state_dict(keep_vars=True)
    keys = layout.select(tensors)
    check_keys(files.weights[0], "Gemma-3 text encoder", layout, keys, tensors, expected)
    targets = {k: dtype if v.is_floating_point() else v.dtype for k, v in expected.items()}
    state: dict[str, torch.Tensor] = {}
    module_keys = {f: m for m, f in keys.items()}
    by_module = None if transform is None else (lambda f, value, target: transform(module_keys[f], value, target))
    for header in headers:
        mine = {m: f for m, f in keys.items() if f in header.tensors}
        state.update(stream_tensors(header, mine, targets, torch.device(device), by_module))
    encoder.load_state_dict(state, strict=True, assign=True)
    encoder.to(device).requires_grad_(False).eval()
    try:
        tokenizer = _clipping_tokenizer_class(GemmaPromptTokenizer).from_folder(files.tokenizer_dir, max_length)
    except (OSError, ValueError) as exc:
        raise TokenizerFileError(files.tokenizer_dir, f"holds a tokenizer that cannot be loaded ({exc}).",
                                 GEMMA_HINT) from exc
    return LoadedGemma(encoder, tokenizer, files, layout.name)
