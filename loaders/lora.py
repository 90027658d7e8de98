"""LoRA files: key formats, matching against a checkpoint, and the per-weight delta.

Accepted key formats (``<path>`` is a module path relative to the diffusion model, e.g.
``transformer_blocks.0.attn1.to_q``, or ``text_embedding_projection.<...>`` for the text projection):

- ComfyUI: ``diffusion_model.<path>.lora_A.weight`` (rank, in) / ``.lora_B.weight`` (out, rank);
- diffusers / PEFT: the same under ``transformer.`` (``lora_A.default.weight`` accepted too);
- single-file: under ``model.diffusion_model.``; bare: no prefix at all;
- kohya: ``lora_unet_<path with dots as underscores>.lora_down.weight`` / ``.lora_up.weight`` + ``.alpha``
  (``lora_down`` / ``lora_up`` under any of the prefixes above work the same).

Scale: ``lora_down``/``lora_up`` pairs are scaled by alpha / rank (kohya convention). ``lora_A``/``lora_B`` pairs
ignore a stored ``alpha``, as the reference does (ltx_core/loader/fuse_loras.py:_prepare_deltas never reads it),
so ComfyUI-format LoRAs give the reference's numbers. The delta of one pair is ``((strength * scale) * B) @ A``
computed in the LoRA's dtype, then cast to the target dtype (the reference's order of operations).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .errors import CheckpointFormatError, LoraMismatchError
from .key_maps import DIFFUSION_MODEL_PREFIX, LORA_KOHYA_MAP, LORA_SOURCE_MAPS
from .mapped_file import TORCH_DTYPES, MappedFile
from .safetensors_header import TensorInfo, read_header

__all__ = ["LoraFile", "LoraMatch", "LoraPair", "check_lora_fits", "lora_delta", "match_loras", "read_lora"]

logger = logging.getLogger(__name__)

_PAIR_KEY = re.compile(r"^(?P<target>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up|lora\.down|lora\.up)"
                       r"(?:\.default)?\.weight$")
_ALPHA_KEY = re.compile(r"^(?P<target>.+)\.alpha$")
_DOWN_KINDS = {"lora_A", "lora_down", "lora.down"}
_KOHYA_KINDS = {"lora_down", "lora_up", "lora.down", "lora.up"}
TEXT_PROJECTION_PREFIX = "text_embedding_projection."
SHOWN_KEYS = 8


@dataclass(frozen=True)
class LoraPair:
    """One low-rank update: ``down`` A (rank, in), ``up`` B (out, rank); delta (out, in) = scale * B @ A."""

    target: str  # path in the single-file checkpoint, without ``.weight`` (kohya: underscored, resolved later)
    down: torch.Tensor = field(repr=False)
    up: torch.Tensor = field(repr=False)
    alpha: float | None
    kohya_style: bool
    source_key: str  # the LoRA file's key of the down weight (for reports)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.kohya_style and self.alpha is not None else 1.0


@dataclass(frozen=True)
class LoraFile:
    """A parsed LoRA file: its pairs, the keys that form no pair, its formats and metadata."""

    path: str
    pairs: tuple[LoraPair, ...]
    orphans: dict[str, str]  # LoRA key -> why it is unusable
    formats: tuple[str, ...]
    metadata: dict[str, str]

    @property
    def reference_downscale_factor(self) -> int | float | None:
        """IC-LoRA: how much smaller than the output the reference video is (metadata, e.g. "2")."""
        raw = self.metadata.get("reference_downscale_factor")
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError as exc:
            raise CheckpointFormatError(self.path, f"has reference_downscale_factor={raw!r}, expected a number.") \
                from exc
        if value <= 0:
            raise CheckpointFormatError(self.path, f"has reference_downscale_factor={raw!r}, expected > 0.")
        return int(value) if value.is_integer() else value


def _target_path(raw: str) -> tuple[str, str]:
    """(checkpoint path of the target, source format name) for the LoRA's module name ``raw``."""
    for keymap in LORA_SOURCE_MAPS:
        path = keymap.to_module_key(raw)
        if path is not None:
            name = keymap.name
            break
    else:
        path, name = raw, "bare"
    if name == LORA_KOHYA_MAP.name or path.startswith(TEXT_PROJECTION_PREFIX):
        return path, name
    return DIFFUSION_MODEL_PREFIX + path, name


def _group(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    groups: dict[str, dict[str, object]] = {}
    orphans: dict[str, str] = {}
    for key, value in tensors.items():
        if (match := _PAIR_KEY.match(key)) is not None:
            slot = "down" if match["kind"] in _DOWN_KINDS else "up"
            entry = groups.setdefault(match["target"], {})
            entry[slot], entry[slot + "_key"] = value, key
            entry["kohya"] = match["kind"] in _KOHYA_KINDS
        elif (match := _ALPHA_KEY.match(key)) is not None:
            groups.setdefault(match["target"], {})["alpha"] = float(value.float().item())
        else:
            orphans[key] = "not a LoRA weight (expected .lora_A/.lora_B/.lora_down/.lora_up/.alpha)"
    return groups, orphans


def read_lora(path: str | os.PathLike[str], *, shapes_only: bool = False) -> LoraFile:
    """Parse a LoRA safetensors file (validated header first; LoRAs are small, so all tensors are read).

    ``shapes_only``: read nothing but the header; the pairs hold meta tensors of the stored shapes and no alpha
    (enough to check what the LoRA fits, see `check_lora_fits`; not to compute deltas).
    """
    header = read_header(path)
    if shapes_only:
        tensors = {key: torch.empty(info.shape, dtype=TORCH_DTYPES.get(info.dtype, torch.float32), device="meta")
                   for key, info in header.tensors.items() if _ALPHA_KEY.match(key) is None}
    else:
        with MappedFile(header) as mapped:
            tensors = {key: mapped.tensor(key).clone() for key in header.tensors}
    groups, orphans = _group(tensors)
    pairs, formats = [], set()
    for raw, entry in groups.items():
        if "down" not in entry or "up" not in entry:
            present = entry.get("down_key") or entry.get("up_key") or f"{raw}.alpha"
            orphans[str(present)] = "has no matching " + ("up (lora_B)" if "down" in entry else "down (lora_A)")
            continue
        down, up = entry["down"], entry["up"]
        assert isinstance(down, torch.Tensor) and isinstance(up, torch.Tensor)
        if down.dim() != 2 or up.dim() != 2 or down.shape[0] != up.shape[1]:
            orphans[str(entry["down_key"])] = f"down {list(down.shape)} and up {list(up.shape)} do not form a pair"
            continue
        target, source = _target_path(raw)
        formats.add(source)
        alpha = entry.get("alpha")
        pairs.append(LoraPair(target, down, up, float(alpha) if isinstance(alpha, float) else None,
                              bool(entry["kohya"]), str(entry["down_key"])))
    return LoraFile(header.path, tuple(pairs), orphans, tuple(sorted(formats)), header.metadata)


def check_lora_fits(lora: str | os.PathLike[str], checkpoint: str | os.PathLike[str]) -> LoraFile:
    """From the two headers only: raise `LoraMismatchError` when no pair of ``lora`` fits a weight of
    ``checkpoint`` (a LoRA for another model or generation), before anything is loaded. Returns the shapes-only
    `LoraFile` (its metadata holds the IC-LoRA reference downscale factor)."""
    from .component_loader import read_model_header  # safetensors or GGUF
    from .quant.layers import logical_tensors  # quantized weights at their (out, in) shapes

    shallow = read_lora(lora, shapes_only=True)
    match_loras([(shallow, 1.0)], checkpoint, logical_tensors(read_model_header(checkpoint)))
    return shallow


def lora_delta(pair: LoraPair, strength: float, dtype: torch.dtype) -> torch.Tensor:
    """(out, in) delta ``((strength * scale) * B) @ A`` computed in the LoRA's dtype, returned as ``dtype``."""
    coefficient = strength * pair.scale
    return torch.matmul(pair.up * coefficient, pair.down).to(dtype)


@dataclass
class LoraMatch:
    """Where each pair of some LoRAs lands in one checkpoint file (weight key), and what fits nowhere."""

    targets: dict[str, list[tuple[LoraPair, float]]] = field(default_factory=dict)  # file weight key -> pairs
    unmatched: dict[str, dict[str, str]] = field(default_factory=dict)  # LoRA path -> {LoRA key: reason}
    matched_count: dict[str, int] = field(default_factory=dict)  # LoRA path -> pairs that found a weight


def _kohya_index(tensors: Mapping[str, TensorInfo]) -> dict[str, str]:
    index = {}
    for key, info in tensors.items():
        if key.endswith(".weight") and len(info.shape) == 2:
            index[key.removeprefix(DIFFUSION_MODEL_PREFIX).removesuffix(".weight").replace(".", "_")] = key
    return index


def _resolve(pair: LoraPair, tensors: Mapping[str, TensorInfo], kohya: dict[str, str]) -> tuple[str | None, str]:
    if "." not in pair.target:  # kohya: underscored path
        candidates = [kohya[pair.target]] if pair.target in kohya else []
    else:
        candidates = [pair.target + ".weight", pair.target.removeprefix(DIFFUSION_MODEL_PREFIX) + ".weight"]
    for key in candidates:
        info = tensors.get(key)
        if info is None:
            continue
        expected = (pair.up.shape[0], pair.down.shape[1])
        if info.shape != expected:
            return None, f"fits a {list(expected)} weight but {key} is {list(info.shape)}"
        return key, ""
    return None, f"no weight {pair.target.removeprefix(DIFFUSION_MODEL_PREFIX)} in the checkpoint"


def match_loras(loras: list[tuple[LoraFile, float]], checkpoint: str | os.PathLike[str],
                tensors: Mapping[str, TensorInfo]) -> LoraMatch:
    """Match every pair of ``loras`` (file, strength) to the weights of one checkpoint (header only).

    Raises `LoraMismatchError` for a LoRA of which no pair fits (another architecture or model version).
    """
    kohya = _kohya_index(tensors)
    result = LoraMatch()
    for lora, strength in loras:
        unmatched = dict(lora.orphans)
        count = 0
        for pair in lora.pairs:
            key, reason = _resolve(pair, tensors, kohya)
            if key is None:
                unmatched[pair.source_key] = reason
                continue
            count += 1
            result.targets.setdefault(key, []).append((pair, strength))
        if count == 0:
            shown = ", ".join(list(unmatched)[:3])
            raise LoraMismatchError(
                lora.path, f"does not fit {os.fspath(checkpoint)}: none of its {len(unmatched)} LoRA keys match a "
                f"weight of it (first: {shown}).",
                "It is probably a LoRA for another model or model version; use a LoRA trained for LTX-2 / LTX-2.3.",
                unmatched=tuple(unmatched),
            )
        result.unmatched[lora.path] = unmatched
        result.matched_count[lora.path] = count
    return result
