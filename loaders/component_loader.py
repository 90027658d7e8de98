"""Strict loading of one component from a safetensors or GGUF file into our module.

config (``config`` metadata, checked against the header: `config_check`) -> our module on the meta device -> every
key and shape checked against the file header, quantized layers included (nothing read yet) -> tensors read in file
order (`MappedFile`: each into memory of its own), each cast to the requested dtype, de-quantised or fused with
LoRA deltas -> ``load_state_dict(strict=True, assign=True)``. `check_component` runs every check of a load without
reading a tensor (loader nodes call it, so a wrong file fails at the node, not at the first sampler).

Quantized weights (`loaders.quant`): ``quantized_weights="keep"`` swaps each quantized Linear for a `QuantLinear`
holding the stored bytes (de-quantised per call); ``"upcast"`` de-quantises them once while loading.

Memory: a tensor stored in the requested dtype is used as read: one copy, the module's. A cast or de-quantised
tensor is converted and its source freed at once, keeping the peak resident set at about the module's size plus
one tensor. A loaded module never refers to its file: the file may be replaced or truncated under a running prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .components import COMPONENTS, FOLDER_HINTS, ComponentSpec
from .config_check import check_config, config_metadata
from .detect import LORA_MARKERS, describe_file
from .errors import CheckpointFormatError, StateDictMismatchError, WrongComponentError
from .foreign_files import identify_foreign
from .fp8 import FP8_DTYPES, dequantise
from .gguf_config import gguf_config
from .gguf_file import is_gguf, read_gguf_header
from .key_maps import KeyMap
from .mapped_file import TORCH_DTYPES, MappedFile
from .quant.fit import fit_module, quant_plan
from .quant.formats import GGML_TYPES
from .quant.kernels import dequantize
from .quant.layers import LayerQuant
from .safetensors_header import SafetensorsHeader, TensorInfo, read_header

__all__ = [
    "LoadPlan",
    "LoadedComponent",
    "check_component",
    "check_keys",
    "load_component",
    "plan_load",
    "read_model_header",
    "stream_tensors",
]

logger = logging.getLogger(__name__)

SHOWN_KEYS = 8  # how many offending keys an error message lists
QuantMode = Literal["upcast", "keep"]
Fp8Mode = QuantMode  # the option's former name
QUANT_MODES = ("upcast", "keep")
# (file key, tensor as stored, target dtype) -> tensor to load; used by the LoRA fusion.
WeightTransform = Callable[[str, torch.Tensor, torch.dtype], torch.Tensor]
# module weight key -> (its quantized layer, logical weight shape): weights de-quantised while streaming.
UpcastLayers = Mapping[str, tuple[LayerQuant, tuple[int, ...]]]
# Tensors whose dtype torch cannot view (E8M0 block scales) are read as their bytes.
BYTE_DTYPES = {"F8_E8M0": "U8"}


@dataclass(frozen=True)
class LoadPlan:
    """What will be read: the layout chosen, module key -> file key, and the quantized layers.

    ``quant_layers`` maps a module weight key to its `LayerQuant`; ``mode`` says whether they are kept quantized
    (``"keep"``: their scale tensors are in ``keys`` too) or de-quantised at load (``"upcast"``)."""

    path: str
    header: SafetensorsHeader
    spec: ComponentSpec
    layout: KeyMap
    config: dict[str, Any]
    keys: dict[str, str]
    quant_layers: dict[str, LayerQuant] = field(default_factory=dict)
    mode: QuantMode = "upcast"
    scales: dict[str, str] = field(default_factory=dict)  # unused since quant_layers; kept for callers

    @property
    def fp8_layers(self) -> dict[str, LayerQuant]:
        """Module layer path -> `LayerQuant` of the layers kept quantized (every format, not only fp8): LoRAs
        on them run as run-time adapters."""
        if self.mode != "keep":
            return {}
        return {k.removesuffix(".weight"): q for k, q in self.quant_layers.items() if k.endswith(".weight")}


@dataclass
class LoadedComponent:
    """A loaded module plus how it was found (layout name) and what LoRAs did (filled by `loaders.lora`)."""

    module: nn.Module
    layout: str
    config: dict[str, Any]
    lora_report: Any = None


def read_model_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """The header of a ``.safetensors`` or ``.gguf`` file (a `GGUFHeader` for the latter)."""
    return read_gguf_header(path) if is_gguf(path) else read_header(path)


def _config_of(header: SafetensorsHeader, spec: ComponentSpec, override: dict[str, Any] | None) -> dict[str, Any]:
    if override is not None:
        config = override
    elif is_gguf(header.path):
        config = gguf_config(header)
    else:
        config = config_metadata(header)  # a JSON object, else a CheckpointFormatError naming the file
        if config is None:
            raise CheckpointFormatError(
                header.path, f"has no `config` metadata, so the {spec.label} architecture cannot be determined.",
                "LTX-2 files carry their config in the safetensors metadata; the file was probably re-saved by a "
                "tool that dropped it. Use the official release file, or pass the config of the matching "
                "single-file checkpoint.",
            )
    if spec.config_section is not None and spec.config_section not in config:
        raise WrongComponentError(
            header.path, f"has no `{spec.config_section}` section in its config (it has: "
            f"{', '.join(sorted(config)) or 'none'}), so it does not describe a {spec.label}.",
            _where_it_belongs(header.path),
        )
    return config


_LABELS = {"transformer": "transformer", "video_vae": "video VAE", "audio_vae": "audio VAE", "vocoder": "vocoder",
           "text_projection": "text projection", "lora": "LoRA", "latent_upsampler": "latent upsampler",
           "vae_split": "VAE (split file)", "gemma_language_model": "Gemma text encoder",
           "gemma_vision_tower": "Gemma vision tower", "duration_head": "duration head"}


def _where_it_belongs(path: str) -> str:
    """'This is a video VAE file; choose it in ...' from the header alone (empty if it cannot be described)."""
    try:
        desc = describe_file(path)
    except CheckpointFormatError:
        return ""
    names = [n for n in desc.component_names if n in FOLDER_HINTS]
    if not names:
        return f"It looks like: {desc.kind}."
    if desc.kind == "single-file checkpoint":
        return f"This is a single-file checkpoint; choose it in {FOLDER_HINTS['transformer']}."
    labels = list(dict.fromkeys(_LABELS[n] for n in names))
    what = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
    return f"This is a {what} file; choose it in {FOLDER_HINTS[names[0]]}."


def _pick_layout(header: SafetensorsHeader, spec: ComponentSpec) -> KeyMap:
    if any(marker in key for key in header.tensors for marker in LORA_MARKERS):
        raise WrongComponentError(header.path, f"is a LoRA, not a {spec.label}.", _where_it_belongs(header.path))
    for layout in spec.key_maps:
        if layout.is_present(header.tensors):
            return layout
    wanted = " or ".join(f"{m.marker if m.marker is not None else m.renames[0][0]}*" for m in spec.key_maps)
    raise WrongComponentError(header.path, f"does not contain a {spec.label} (no key matches {wanted}).",
                              _where_it_belongs(header.path))


def _refuse_foreign(header: SafetensorsHeader, label: str) -> None:
    """A file of another architecture (a tiny preview VAE, a diffusers-folder file, an image model...) is named as
    such, before any LTX-2 layout or config is looked for."""
    foreign = identify_foreign(header)
    if foreign is not None:
        raise WrongComponentError(header.path, f"is a {foreign.name} file, not an LTX-2 {label}.", foreign.instead)


def _quant_mode(quantized_weights: str | None, fp8: str | None) -> QuantMode:
    name, mode = ("quantized_weights", quantized_weights) if quantized_weights is not None else ("fp8", fp8)
    mode = "upcast" if mode is None else mode
    if mode not in QUANT_MODES:
        raise ValueError(f"{name}={mode!r}, expected 'upcast' or 'keep'")
    return mode  # type: ignore[return-value]


def _refuse_unsupported_gguf(header: SafetensorsHeader, keys: dict[str, str]) -> None:
    unsupported = getattr(header, "unsupported", {})
    found = {unsupported[k]: k for k in keys.values() if k in unsupported}
    if found:
        supported = ", ".join(name for name, fmt in GGML_TYPES.values() if fmt is not None)
        example = next(iter(found.values()))
        raise CheckpointFormatError(
            header.path, f"stores tensors as GGUF type(s) {', '.join(sorted(found))} (e.g. `{example}`), which "
            f"AIPROD does not de-quantise (supported: {supported}, F16, BF16, F32).",
            "Use a K-quant or Q8_0 GGUF of this model, or its safetensors release.")


def plan_load(path: str | os.PathLike[str], component: str, *, config: dict[str, Any] | None = None,
              quantized_weights: QuantMode | None = None, fp8: Fp8Mode | None = None) -> LoadPlan:
    """Header-only part of a load: config, layout, key selection, quantized layers (raises on a wrong file).

    ``quantized_weights`` ("upcast" or "keep"; ``fp8`` is its former name) says what happens to quantized layers.
    """
    if component not in COMPONENTS:
        raise ValueError(f"component={component!r}, expected one of {sorted(COMPONENTS)!r}")
    mode = _quant_mode(quantized_weights, fp8)
    header = read_model_header(path)
    spec = COMPONENTS[component]
    _refuse_foreign(header, spec.label)
    layout = _pick_layout(header, spec)
    chosen_config = _config_of(header, spec, config)
    keys = layout.select(header.tensors)
    _refuse_unsupported_gguf(header, keys)  # a block type we cannot read says so first
    check_config(header, spec.name, spec.label, chosen_config, keys)  # values vs tensors, before any build
    quant_layers = quant_plan(header, keys, mode)
    return LoadPlan(header.path, header, spec, layout, chosen_config, keys, quant_layers, mode)


def check_keys(path: str, label: str, layout: KeyMap, keys: dict[str, str], tensors: Mapping[str, TensorInfo],
               expected: dict[str, torch.Tensor]) -> None:
    """Raise `StateDictMismatchError` unless ``keys`` (module key -> file key) cover ``expected`` exactly, shapes
    included; the message lists the first missing / unexpected keys and every shape as expected vs found."""
    missing = tuple(k for k in expected if k not in keys)
    unexpected = tuple(keys[k] for k in keys if k not in expected)
    mismatched = tuple((k, tuple(expected[k].shape), tensors[keys[k]].shape) for k in expected
                       if k in keys and tuple(expected[k].shape) != tensors[keys[k]].shape)
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        shown = [layout.to_file_key(k) or k for k in missing[:SHOWN_KEYS]]
        parts.append(f"{len(missing)} missing key(s), first: {', '.join(shown)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first: {', '.join(unexpected[:SHOWN_KEYS])}")
    if mismatched:
        shown = [f"{keys[k]} expected {list(e)} found {list(f)}" for k, e, f in mismatched[:SHOWN_KEYS]]
        parts.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(shown)}")
    problem = f"does not fit the {label} its config describes (layout: {layout.label}): " + "; ".join(parts) + "."
    hint = "The file may be from another model version or a broken conversion. " + _where_it_belongs(path)
    raise StateDictMismatchError(path, problem, hint.strip(), missing=missing, unexpected=unexpected,
                                 mismatched=mismatched)


def _readable(header: SafetensorsHeader, names: set[str] | None = None) -> SafetensorsHeader:
    """``header`` with the tensors torch cannot view (E8M0) described as their bytes, for `MappedFile`."""
    odd = {k: dataclasses.replace(v, dtype=BYTE_DTYPES[v.dtype]) for k, v in header.tensors.items()
           if v.dtype in BYTE_DTYPES and (names is None or k in names)}
    return dataclasses.replace(header, tensors={**header.tensors, **odd}) if odd else header


def _dequantized(mapped: MappedFile, quant: LayerQuant, stored: torch.Tensor, shape: tuple[int, ...],
                 target: torch.dtype) -> torch.Tensor:
    scales = {}
    for suffix, key in quant.scale_keys.items():
        scales[suffix] = mapped.tensor(key).clone()  # tiny; owned, so its pages can go
        mapped.release(key)
    dtype = target if target.is_floating_point and target not in FP8_DTYPES else torch.bfloat16
    return dequantize(quant.format.kernel, stored, scales, quant.params, shape, dtype)


def stream_tensors(
    header: SafetensorsHeader,
    keys: dict[str, str],
    targets: dict[str, torch.dtype],
    device: torch.device,
    transform: WeightTransform | None = None,
    scales: dict[str, torch.Tensor] | None = None,
    quant: UpcastLayers | None = None,
) -> dict[str, torch.Tensor]:
    """Read ``keys`` (module key -> file key) of one file, each cast to ``targets[module key]`` on ``device``.

    One tensor at a time, in file order, each read into memory of its own (`MappedFile`). The weights of
    ``quant`` (module weight key -> (`LayerQuant`, logical shape)) are de-quantised from their stored bytes and
    scales; other fp8 tensors bound for a wider dtype are up-cast (times ``scales[module key]`` when given);
    ``transform`` sees each tensor before the final cast. A tensor that needs no conversion is used as read (one
    copy, no second resident set); a converted tensor's source is freed as soon as it is converted, so a cast load
    peaks at about the module's size plus one tensor.
    """
    items = sorted(keys.items(), key=lambda kv: header.tensors[kv[1]].begin)
    scales, quant = scales or {}, quant or {}
    state: dict[str, torch.Tensor] = {}
    with MappedFile(_readable(header)) as mapped:
        for module_key, file_key in items:
            target = targets[module_key]
            stored = mapped.tensor(file_key)  # read into memory of its own
            value = stored
            if module_key in quant:
                value = _dequantized(mapped, quant[module_key][0], stored, quant[module_key][1], target)
            elif value.dtype in FP8_DTYPES and target not in FP8_DTYPES:
                value = dequantise(value, scales.get(module_key), target)
            if transform is not None:
                value = transform(file_key, value, target)
            value = value.to(device=device, dtype=target)
            shares_map = value.device.type == "cpu" and (
                value.untyped_storage().data_ptr() == stored.untyped_storage().data_ptr())
            state[module_key] = value
            del stored, value
            if not shares_map:
                mapped.release(file_key)
    return state


@dataclass
class _Prepared:
    """A meta module fitted to the plan: its expected tensors and the quantized weights to de-quantise."""

    module: nn.Module
    expected: dict[str, torch.Tensor]
    upcast: dict[str, tuple[LayerQuant, tuple[int, ...]]]


def _prepare(plan: LoadPlan, dtype: torch.dtype | None) -> _Prepared:
    """Build the meta module, swap in `QuantLinear` s (keep mode) and run every key, shape and format check."""
    header = plan.header
    # Only the device argument (no global meta context): constructors may compute buffers (DFT bases) on CPU.
    module = plan.spec.build(plan.config, header.tensors, dtype, "meta")
    fit = fit_module(module, plan.path, header, plan.quant_layers, plan.keys, plan.mode)
    meta = module.state_dict(keep_vars=True)
    # Target dtypes: every floating tensor in ``dtype`` (as the reference casts them all, computed buffers
    # included) except the quantized storage and its scales; ``dtype=None`` keeps the stored dtypes.
    expected = {k: torch.empty(v.shape, dtype=_target_dtype(header, plan, k, v, dtype, k in fit.held,
                                                            k in fit.upcast), device="meta") for k, v in meta.items()}
    # An up-cast weight is checked at its logical shape (its stored shape was checked against that by its format).
    check_keys(plan.path, plan.spec.label, plan.layout, plan.keys, fit.shown_tensors(header.tensors, plan.keys),
               expected)
    _refuse_integer_weights(plan, expected, set(fit.upcast) | set(fit.kept))
    return _Prepared(module, expected, fit.upcast)


def _refuse_integer_weights(plan: LoadPlan, expected: dict[str, torch.Tensor], quantized: set[str]) -> None:
    """An integer / packed tensor bound for a float parameter with no format found: refuse (never cast bytes)."""
    for key, meta in expected.items():
        file_key = plan.keys.get(key)
        if file_key is None or key in quantized or not meta.dtype.is_floating_point:
            continue
        stored = plan.header.tensors[file_key].dtype
        if stored in ("U8", "I8", "F8_E8M0"):
            raise CheckpointFormatError(plan.path, f"stores `{file_key}` as {stored} with no quantization marker, "
                                        "so its format cannot be known.",
                                        "Use a ComfyUI-quantized file (with comfy_quant markers), an official "
                                        "Lightricks file, a GGUF file, or the bf16 release.")


def check_component(path: str | os.PathLike[str], component: str, *, config: dict[str, Any] | None = None,
                    quantized_weights: QuantMode | None = None, fp8: Fp8Mode | None = None,
                    dtype: torch.dtype | None = torch.bfloat16) -> LoadPlan:
    """Every check of `load_component` (layout, config, keys, shapes, quantized formats) without reading tensors.

    Builds the module on the meta device; raises what a load would raise, naming the file."""
    plan = plan_load(path, component, config=config, quantized_weights=quantized_weights, fp8=fp8)
    _prepare(plan, dtype)
    return plan


def load_component(
    path: str | os.PathLike[str],
    component: str,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
    config: dict[str, Any] | None = None,
    quantized_weights: QuantMode | None = None,
    fp8: Fp8Mode | None = None,
    transform: WeightTransform | None = None,
) -> LoadedComponent:
    """Load ``component`` ("transformer", "video_decoder", ... see `COMPONENTS`) strictly from ``path``.

    ``dtype=None`` keeps each tensor's stored dtype. ``quantized_weights="keep"`` (``fp8`` is its former name)
    keeps quantized Linear weights quantized (`QuantLinear`, de-quantised per call); ``"upcast"`` de-quantises
    them to ``dtype`` while loading. ``config`` overrides the file's ``config`` metadata (split files that lack
    it). Raises `WrongComponentError`, `StateDictMismatchError` or `CheckpointFormatError` with what the file is
    and where it belongs.
    """
    plan = plan_load(path, component, config=config, quantized_weights=quantized_weights, fp8=fp8)
    prepared = _prepare(plan, dtype)
    module = prepared.module
    targets = {k: v.dtype for k, v in prepared.expected.items()}
    # de-quantisation and LoRA fusion run on the CPU tensors read from the map, before the move to ``device``
    state = stream_tensors(plan.header, plan.keys, targets, torch.device(device), transform, quant=prepared.upcast)
    module.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftovers:  # a buffer outside the state dict that only a real construction would compute
        raise RuntimeError(f"{plan.spec.label} has tensors left on the meta device: {leftovers[:SHOWN_KEYS]}")
    module.requires_grad_(False)
    logger.info("loaded %s from %s (layout %s, %d tensors, %d quantized layers %s)", plan.spec.label, plan.path,
                plan.layout.name, len(state), len(plan.quant_layers), plan.mode)
    return LoadedComponent(module=module.eval(), layout=plan.layout.name, config=plan.config)


def _target_dtype(header: SafetensorsHeader, plan: LoadPlan, module_key: str, meta: torch.Tensor,
                  dtype: torch.dtype | None, held: bool, upcast: bool) -> torch.dtype:
    if held or meta.dtype in FP8_DTYPES or not meta.dtype.is_floating_point:
        return meta.dtype  # quantized storage and its scales, integer buffers keep their dtype
    if dtype is not None:
        return dtype
    file_key = plan.keys.get(module_key)
    if file_key is None:
        return meta.dtype
    stored = TORCH_DTYPES.get(header.tensors[file_key].dtype, meta.dtype)
    if upcast or stored in FP8_DTYPES or not stored.is_floating_point:
        return torch.bfloat16  # a quantized weight not kept quantized is computed in bf16
    return stored
