"""Apply LoRAs while loading a component: fused into the weights, or unfused on fp8 layers.

Fused: each targeted weight gets ``W + sum_i delta_i`` while it is read (the reference's fusion: the deltas are
summed in the target dtype, then the stored weight is added; see `loaders.lora.lora_delta`). Unfused (layers
kept in fp8, or ``mode="unfused"``): a `LoraAdapter` beside the layer adds ``x @ A^T @ B^T * scale`` at run
time, so the fp8 weight stays untouched. Every LoRA key is accounted for in the `LoraReport`: applied here,
meant for another component of the same file, or unmatched (by name, with the reason).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .component_loader import LoadedComponent, load_component, plan_load
from .errors import LoraMismatchError
from .fp8 import FP8_DTYPES
from .lora import LoraFile, LoraPair, lora_delta, match_loras, read_lora
from .quant.layers import logical_tensors

__all__ = ["LoraAdapter", "LoraReport", "fuse_weight", "load_component_with_loras"]

logger = logging.getLogger(__name__)

LoraMode = Literal["auto", "fused", "unfused"]


@dataclass
class LoraReport:
    """What happened to each LoRA's keys in one component load."""

    applied: dict[str, list[str]] = field(default_factory=dict)  # LoRA path -> checkpoint weight keys
    unfused: dict[str, list[str]] = field(default_factory=dict)  # subset applied as run-time adapters
    other_components: dict[str, list[str]] = field(default_factory=dict)  # matched, but not in this component
    unmatched: dict[str, dict[str, str]] = field(default_factory=dict)  # LoRA path -> {LoRA key: reason}
    reference_downscale_factors: dict[str, int | float | None] = field(default_factory=dict)


class LoraAdapter(nn.Module):
    """Run-time low-rank update of one Linear: x (..., in) -> (x @ A^T @ B^T) * scale, (..., out), in x's dtype."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.down: torch.Tensor
        self.up: torch.Tensor
        self.register_buffer("down", down, persistent=False)  # A (rank, in)
        self.register_buffer("up", up, persistent=False)  # B (out, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype)) * self.scale


def _add_adapters(layer: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    x = _args[0]
    for adapter in layer.lora_adapters:  # type: ignore[union-attr]
        output = output + adapter(x)
    return output


def attach_adapter(layer: nn.Module, adapter: LoraAdapter) -> None:
    """Add ``adapter`` to ``layer``'s output (a forward hook; the layer's state-dict keys do not change)."""
    if not hasattr(layer, "lora_adapters"):
        layer.lora_adapters = nn.ModuleList()
        layer.register_forward_hook(_add_adapters)
    layer.lora_adapters.append(adapter)


def fuse_weight(weight: torch.Tensor, entries: Sequence[tuple[LoraPair, float]], dtype: torch.dtype) -> torch.Tensor:
    """``weight`` (out, in) plus the deltas of ``entries`` (pair, strength), as ``dtype``."""
    delta_dtype = torch.bfloat16 if dtype in FP8_DTYPES else dtype
    deltas = [lora_delta(pair, strength, delta_dtype) for pair, strength in entries]
    total = deltas[0] if len(deltas) == 1 else torch.sum(torch.stack(deltas, dim=0), dim=0)
    total.add_(weight.to(delta_dtype) if weight.dtype in FP8_DTYPES else weight)
    return total.to(dtype)


def _as_files(loras: Sequence[tuple[str | os.PathLike[str] | LoraFile, float]]) -> list[tuple[LoraFile, float]]:
    files = []
    for source, strength in loras:
        lora = source if isinstance(source, LoraFile) else read_lora(source)
        files.append((lora, float(strength)))
    return files


def _fill_report(report: LoraReport, match_targets: dict[str, list[tuple[LoraPair, float]]], component_keys: set[str],
                 unfused_keys: set[str], by_pair: dict[int, str]) -> None:
    for key, entries in match_targets.items():
        for pair, _ in entries:
            path = by_pair[id(pair)]
            if key not in component_keys:
                report.other_components.setdefault(path, []).append(key)
                continue
            report.applied.setdefault(path, []).append(key)
            if key in unfused_keys:
                report.unfused.setdefault(path, []).append(key)


def load_component_with_loras(
    path: str | os.PathLike[str],
    component: str,
    loras: Sequence[tuple[str | os.PathLike[str] | LoraFile, float]],
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
    config: dict[str, Any] | None = None,
    fp8: Literal["upcast", "keep"] = "upcast",
    mode: LoraMode = "auto",
    strict: bool = False,
) -> LoadedComponent:
    """`load_component` with LoRAs ``[(path or LoraFile, strength), ...]`` applied; see `LoraReport`.

    ``mode="auto"`` fuses into full-precision weights and adds run-time adapters on fp8-kept layers;
    ``"fused"`` / ``"unfused"`` force one way. ``strict=True`` raises `LoraMismatchError` if any LoRA key is
    unmatched (else they are logged and listed in the report). A LoRA matching nothing always raises.
    """
    files = [(lora, s) for lora, s in _as_files(loras) if s != 0.0]
    plan = plan_load(path, component, config=config, fp8=fp8)
    match = match_loras(files, path, logical_tensors(plan.header)) if files else None
    report = LoraReport(reference_downscale_factors={lora.path: lora.reference_downscale_factor for lora, _ in files})
    if match is None:
        loaded = load_component(path, component, dtype=dtype, device=device, config=config, fp8=fp8)
        loaded.lora_report = report
        return loaded
    _check_unmatched(match.unmatched, strict, report)
    weight_keys = {k for k in plan.keys.values() if k in match.targets}
    fp8_kept = {plan.layout.to_file_key(p + ".weight") for p in plan.fp8_layers}
    unfused = {k for k in weight_keys if mode == "unfused" or (mode == "auto" and k in fp8_kept)}
    if mode == "fused" and weight_keys & fp8_kept:
        raise ValueError("mode='fused' with fp8='keep': fp8 layers cannot take fused LoRAs; use mode='auto'")

    def transform(file_key: str, value: torch.Tensor, target: torch.dtype) -> torch.Tensor:
        if file_key not in weight_keys or file_key in unfused:
            return value
        return fuse_weight(value, match.targets[file_key], target)

    loaded = load_component(path, component, dtype=dtype, device=device, config=config, fp8=fp8, transform=transform)
    for file_key in sorted(unfused):
        layer = loaded.module.get_submodule(plan.layout.to_module_key(file_key).removesuffix(".weight"))
        for pair, strength in match.targets[file_key]:
            attach_adapter(layer, LoraAdapter(pair.down.to(device), pair.up.to(device), strength * pair.scale))
    by_pair = {id(pair): lora.path for lora, _ in files for pair in lora.pairs}
    _fill_report(report, match.targets, set(plan.keys.values()), unfused, by_pair)
    loaded.lora_report = report
    return loaded


def _check_unmatched(unmatched: dict[str, dict[str, str]], strict: bool, report: LoraReport) -> None:
    report.unmatched = {p: dict(u) for p, u in unmatched.items() if u}
    for lora_path, keys in report.unmatched.items():
        listing = "; ".join(f"{k} ({why})" for k, why in list(keys.items())[:8])
        if strict:
            raise LoraMismatchError(lora_path, f"has {len(keys)} key(s) that match no weight: {listing}.",
                                    "Use a LoRA made for this model version, or load with strict=False to skip them.",
                                    unmatched=tuple(keys))
        logger.warning("LoRA %s: %d key(s) not applied: %s", lora_path, len(keys), listing)
