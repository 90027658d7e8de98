"""Apply LoRAs while loading: fused into the weights as they are read, or unfused beside weights kept quantized.

Fused: each targeted tensor gets its patches while it is read. When every patch of a weight is a plain low-rank
pair (the official LTX LoRAs), the reference's fusion: deltas ``((strength * scale) * B) @ A`` in the LoRA's
dtype, summed in the target dtype, then the stored weight added (bit-identical to ltx-core). Otherwise ComfyUI's:
the weight in float32, each patch applied in stack order with its own formula (`loaders.lora_formats`), rounded
to the target dtype once at the end (ComfyUI rounds stochastically, we round to nearest).

Unfused (layers kept in fp8 / quantized, or ``mode="unfused"``): a `LoraAdapter` beside the layer adds
``x @ A^T @ B^T * scale`` at run time, so the quantized weight stays untouched. Only plain low-rank patches can
run that way; DoRA, LoHa, LoKr, .diff and .set_weight on a kept layer are refused before anything loads (load
the model with quantized_weights "upcast" for them). Bias patches (.diff_b) fuse into the bias, never quantized.

Every LoRA key is accounted for in the `LoraReport`: applied here, meant for another component of the same file,
or unmatched (by name, with the reason).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .component_loader import LoadedComponent, QuantMode, WeightTransform, load_component, plan_load
from .errors import CheckpointFormatError, LoraMismatchError
from .fp8 import FP8_DTYPES
from .lora import TEXT_ENCODER, TRANSFORMER, LoraFile, LoraMatch, LoraTargets, match_patches, read_lora
from .lora_formats import ARITHMETIC_DTYPES, LowRankPatch, Patch, upcast
from .quant.layers import logical_tensors
from .text_encoder_files import find_gemma_files
from .text_encoder_generation import text_encoder_kind

__all__ = ["LoraAdapter", "LoraReport", "check_text_encoder_lora", "check_transformer_lora", "component_targets",
           "fuse_weight", "gemma_lora_transform", "gemma_targets", "load_component_with_loras"]

logger = logging.getLogger(__name__)

LoraMode = Literal["auto", "fused", "unfused"]
LoraSources = Sequence[tuple[str | os.PathLike[str] | LoraFile, float]]
UPCAST_HINT = ("Set quantized_weights to 'upcast' on the model loader (the layer is then de-quantised once and takes "
               "any patch).")


@dataclass
class LoraReport:
    """What happened to each LoRA's keys in one component load."""

    applied: dict[str, list[str]] = field(default_factory=dict)  # LoRA path -> target tensor keys
    unfused: dict[str, list[str]] = field(default_factory=dict)  # subset applied as run-time adapters
    other_components: dict[str, list[str]] = field(default_factory=dict)  # matched, but not in this component
    unmatched: dict[str, dict[str, str]] = field(default_factory=dict)  # LoRA path -> {LoRA key: reason}
    other_model: dict[str, list[str]] = field(default_factory=dict)  # LoRA keys for the other model (TE / DiT)
    reference_downscale_factors: dict[str, int | float | None] = field(default_factory=dict)


class LoraAdapter(nn.Module):
    """Run-time low-rank update of one Linear: x (..., in) -> (x @ A^T @ B^T) * scale, (..., out), in x's dtype.

    A and B stored in fp8 (or another dtype without arithmetic) are up-cast to float32 once, here.
    """

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.down: torch.Tensor
        self.up: torch.Tensor
        self.register_buffer("down", _arithmetic(down), persistent=False)  # A (rank, in)
        self.register_buffer("up", _arithmetic(up), persistent=False)  # B (out, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype)) * self.scale


def _arithmetic(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype in ARITHMETIC_DTYPES else upcast(tensor)


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


def fuse_weight(weight: torch.Tensor, entries: Sequence[tuple[Patch, float]], dtype: torch.dtype) -> torch.Tensor:
    """``weight`` with the patches of ``entries`` (patch, strength) applied, as ``dtype`` (see the module doc)."""
    if all(patch.is_plain for patch, _ in entries):
        delta_dtype = torch.bfloat16 if dtype in FP8_DTYPES else dtype
        deltas = [patch.reference_delta(strength, delta_dtype) for patch, strength in entries]  # type: ignore[attr-defined]
        total = deltas[0] if len(deltas) == 1 else torch.sum(torch.stack(deltas, dim=0), dim=0)
        total.add_(weight.to(delta_dtype) if weight.dtype in FP8_DTYPES else weight)
        return total.to(dtype)
    value = upcast(weight)
    for patch, strength in entries:
        value = patch.apply(value, strength)
    return value.to(dtype)


def _as_files(loras: LoraSources) -> list[tuple[LoraFile, float]]:
    """The LoRAs of non-zero strength, parsed (a zero strength disables a LoRA: its file is not read)."""
    return [(source if isinstance(source, LoraFile) else read_lora(source), float(strength))
            for source, strength in loras if strength != 0.0]


def _kept_weight_keys(plan: Any) -> dict[str, str]:
    """File key -> quantized format name of the weights a plan keeps quantized (run-time adapters only there)."""
    layers = getattr(plan, "fp8_layers", None) or {}
    return {plan.layout.to_file_key(path + ".weight"): quant.format.name for path, quant in layers.items()}


def _refuse_on_kept(match: LoraMatch, kept: Mapping[str, str], by_patch: dict[int, str]) -> None:
    for key, entries in match.targets.items():
        if key not in kept:
            continue
        bad = [(patch, by_patch[id(patch)]) for patch, _ in entries if not patch.runtime_capable]
        if bad:
            patch, path = bad[0]
            kind = "DoRA" if getattr(patch, "dora_scale", None) is not None else patch.kind
            raise LoraMismatchError(
                path, f"has a {kind} patch ({patch.source_key}) for {key}, a layer kept quantized ({kept[key]}, "
                "quantized_weights 'keep'); only plain low-rank LoRA patches can run beside a quantized weight.",
                UPCAST_HINT, unmatched=(patch.source_key,))


def component_targets(plan: Any) -> LoraTargets:
    """The tensors of a planned load's file as LoRA targets: every header tensor, with the logical shape of our
    module (built on the meta device) for the component's own keys, so a weight stored packed (quantized formats)
    is matched by the shape it has in the model."""
    shapes = {key: tuple(info.shape) for key, info in logical_tensors(plan.header).items()}
    module = plan.spec.build(plan.config, plan.header.tensors, None, "meta")
    for module_key, meta in module.state_dict(keep_vars=True).items():
        file_key = plan.keys.get(module_key)
        if file_key is not None:
            shapes[file_key] = tuple(meta.shape)
    return LoraTargets(plan.path, TRANSFORMER, shapes)


def check_transformer_lora(lora: str | os.PathLike[str], checkpoint: str | os.PathLike[str],
                           quantized_weights: QuantMode | None = None, *, fp8: QuantMode | None = None) -> LoraFile:
    """Header-only check of one LoRA for the transformer of ``checkpoint`` loaded with ``quantized_weights``
    ("upcast" or "keep"; ``fp8`` is its former name): everything `match_patches` refuses, plus patches the layers
    ``"keep"`` keeps quantized cannot take. Returns the shapes-only `LoraFile` (its metadata holds the IC-LoRA
    reference downscale factor)."""
    shallow = read_lora(lora, shapes_only=True)
    plan = plan_load(checkpoint, "transformer", quantized_weights=quantized_weights, fp8=fp8)
    match = match_patches([(shallow, 1.0)], component_targets(plan))
    _refuse_on_kept(match, _kept_weight_keys(plan), {id(p): shallow.path for p in shallow.patches})
    return shallow


def _fill_report(report: LoraReport, match: LoraMatch, component_keys: set[str], unfused_keys: set[str],
                 by_patch: dict[int, str]) -> None:
    for key, entries in match.targets.items():
        for patch, _ in entries:
            path = by_patch[id(patch)]
            if key not in component_keys:
                report.other_components.setdefault(path, []).append(key)
                continue
            report.applied.setdefault(path, []).append(key)
            if key in unfused_keys:
                report.unfused.setdefault(path, []).append(key)


def _runtime_keys(match: LoraMatch, keys: set[str], kept: Collection[str], mode: LoraMode) -> set[str]:
    """Weights whose patches run as adapters: kept-quantized ones (auto), or every plain one (unfused)."""
    chosen = set()
    for key in keys:
        entries = match.targets[key]
        runnable = key.endswith(".weight") and all(isinstance(p, LowRankPatch) and p.runtime_capable
                                                   for p, _ in entries)
        if runnable and (mode == "unfused" or (mode == "auto" and key in kept)):
            chosen.add(key)
    return chosen


def load_component_with_loras(
    path: str | os.PathLike[str],
    component: str,
    loras: LoraSources,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
    config: dict[str, Any] | None = None,
    quantized_weights: QuantMode | None = None,
    mode: LoraMode = "auto",
    strict: bool = False,
    fp8: QuantMode | None = None,
) -> LoadedComponent:
    """`load_component` with LoRAs ``[(path or LoraFile, strength), ...]`` applied; see `LoraReport`.

    ``quantized_weights`` ("upcast" or "keep"; ``fp8`` is its former name) as for `load_component`.
    ``mode="auto"`` fuses into full-precision weights and adds run-time adapters on layers kept quantized;
    ``"fused"`` / ``"unfused"`` force one way (``"unfused"`` for plain low-rank patches; others still fuse).
    ``strict=True`` raises `LoraMismatchError` if any LoRA key is unmatched (else they are logged and listed in
    the report). A LoRA matching nothing, or holding adapter kinds this pack does not apply, always raises.
    """
    files = _as_files(loras)
    plan = plan_load(path, component, config=config, quantized_weights=quantized_weights, fp8=fp8)
    quant = plan.mode
    match = match_patches(files, component_targets(plan)) if files else None
    report = LoraReport(reference_downscale_factors={lora.path: lora.reference_downscale_factor for lora, _ in files})
    if match is None:
        loaded = load_component(path, component, dtype=dtype, device=device, config=config, quantized_weights=quant)
        loaded.lora_report = report
        return loaded
    _check_unmatched(match, strict, report)
    by_patch = {id(patch): lora.path for lora, _ in files for patch in lora.patches}
    kept = _kept_weight_keys(plan)
    target_keys = {k for k in plan.keys.values() if k in match.targets}
    if mode == "fused" and target_keys & kept.keys():
        raise ValueError("mode='fused' with quantized_weights='keep': layers kept quantized cannot take fused LoRAs; "
                         "use mode='auto'")
    _refuse_on_kept(match, {k: kept[k] for k in target_keys if k in kept}, by_patch)
    unfused = _runtime_keys(match, target_keys, kept, mode)

    def transform(file_key: str, value: torch.Tensor, target: torch.dtype) -> torch.Tensor:
        if file_key not in target_keys or file_key in unfused:
            return value
        return fuse_weight(value, match.targets[file_key], target)

    loaded = load_component(path, component, dtype=dtype, device=device, config=config, quantized_weights=quant,
                            transform=transform)
    for file_key in sorted(unfused):
        layer = loaded.module.get_submodule(plan.layout.to_module_key(file_key).removesuffix(".weight"))
        for patch, strength in match.targets[file_key]:
            assert isinstance(patch, LowRankPatch)
            attach_adapter(layer, LoraAdapter(patch.down.to(device), patch.up.to(device), strength * patch.scale))
    _fill_report(report, match, set(plan.keys.values()), unfused, by_patch)
    loaded.lora_report = report
    return loaded


def _check_unmatched(match: LoraMatch, strict: bool, report: LoraReport) -> None:
    report.other_model = {p: list(keys) for p, keys in match.other_family.items() if keys}
    for lora_path, keys in match.other_family.items():
        if keys:  # e.g. a ComfyUI LoRA holding both parts: each LoRA node applies its own
            logger.warning("LoRA %s: %d key(s) for the other model not applied here: %s", lora_path, len(keys),
                           next(iter(keys.values())))
    unmatched = match.unmatched
    report.unmatched = {p: dict(u) for p, u in unmatched.items() if u}
    for lora_path, keys in report.unmatched.items():
        listing = "; ".join(f"{k} ({why})" for k, why in list(keys.items())[:8])
        if strict:
            raise LoraMismatchError(lora_path, f"has {len(keys)} key(s) that match no weight: {listing}.",
                                    "Use a LoRA made for this model version, or load with strict=False to skip them.",
                                    unmatched=tuple(keys))
        logger.warning("LoRA %s: %d key(s) not applied: %s", lora_path, len(keys), listing)


# ---- the Gemma text encoder -------------------------------------------------------------------------------


def gemma_targets(gemma: str | os.PathLike[str]) -> LoraTargets:
    """The tensors of our Gemma module (keys ``model.layers.N...``, built on the meta device from the config of
    the Gemma folder / file ``gemma``: no weights read) as LoRA targets."""
    from ..aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config

    if text_encoder_kind(gemma).family == "gemma4":
        raise LoraMismatchError(os.fspath(gemma), "is a Gemma 4 (LTX-2.5) text encoder; text-encoder LoRAs apply to "
                                "Gemma 3 (the LTX-2 / LTX-2.3 text encoder) only.")
    files = find_gemma_files(gemma)
    try:
        config = gemma_text_config(files.config)
    except ValueError as exc:
        raise CheckpointFormatError(files.config_source, f"is not a usable Gemma-3 config: {exc}.") from exc
    encoder = GemmaTextEncoder(config, device="meta")
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict(keep_vars=True).items()}
    return LoraTargets(f"the Gemma text encoder {os.fspath(gemma)}", TEXT_ENCODER, shapes, "the Gemma text encoder")


def check_text_encoder_lora(lora: str | os.PathLike[str], gemma: str | os.PathLike[str]) -> LoraFile:
    """Header-only: raise `LoraMismatchError` / `LoraFormatError` unless ``lora`` applies to the Gemma ``gemma``
    (a transformer LoRA is named as such, with the node to use)."""
    shallow = read_lora(lora, shapes_only=True)
    match_patches([(shallow, 1.0)], gemma_targets(gemma))
    return shallow


def gemma_lora_transform(gemma: str | os.PathLike[str], loras: LoraSources, *,
                         strict: bool = False) -> tuple[WeightTransform | None, LoraReport]:
    """A transform for `loaders.text_encoder_files.load_gemma` (module key, tensor, target dtype -> tensor) that
    fuses ``loras`` into the Gemma weights as they are read, and the report of where each key lands."""
    files = _as_files(loras)
    report = LoraReport()
    if not files:
        return None, report
    match = match_patches(files, gemma_targets(gemma))
    _check_unmatched(match, strict, report)
    by_patch = {id(patch): lora.path for lora, _ in files for patch in lora.patches}
    _fill_report(report, match, set(match.targets), set(), by_patch)

    def transform(module_key: str, value: torch.Tensor, target: torch.dtype) -> torch.Tensor:
        entries = match.targets.get(module_key)
        if entries is None:
            return value
        if not target.is_floating_point or target in FP8_DTYPES:
            raise LoraMismatchError(by_patch[id(entries[0][0])], f"targets {module_key}, which this Gemma keeps "
                                    f"quantized ({target}); text-encoder LoRAs need full-precision Gemma weights.")
        return fuse_weight(value, entries, target)

    return transform, report
