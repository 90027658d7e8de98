"""Strict loading of one component from a safetensors file into our module.

config (``config`` metadata, checked against the header: `config_check`) -> our module on the meta device -> every
key and shape checked against the file header (nothing read yet) -> tensors read in file order (`MappedFile`: each
into memory of its own), each cast to the requested dtype (or fused with LoRA deltas) ->
``load_state_dict(strict=True, assign=True)``.

Memory: a tensor stored in the requested dtype is used as read: one copy, the module's. A cast tensor is converted
and its source freed at once, keeping the peak resident set at about the module's size plus one tensor. A loaded
module never refers to its file: the file may be replaced or truncated under a running prompt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .components import COMPONENTS, FOLDER_HINTS, ComponentSpec
from .config_check import check_config, config_metadata
from .detect import LORA_MARKERS, describe_file
from .errors import CheckpointFormatError, StateDictMismatchError, WrongComponentError
from .fp8 import FP8_DTYPES, SCALE_SUFFIXES, dequantise, swap_in_fp8_linears
from .key_maps import KeyMap
from .mapped_file import TORCH_DTYPES, MappedFile
from .safetensors_header import SafetensorsHeader, TensorInfo, read_header

__all__ = [
    "LoadPlan",
    "LoadedComponent",
    "check_keys",
    "load_component",
    "plan_load",
    "stream_tensors",
]

logger = logging.getLogger(__name__)

SHOWN_KEYS = 8  # how many offending keys an error message lists
FP8_NAMES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
Fp8Mode = Literal["upcast", "keep"]
# (file key, tensor as stored, target dtype) -> tensor to load; used by the LoRA fusion.
WeightTransform = Callable[[str, torch.Tensor, torch.dtype], torch.Tensor]


@dataclass(frozen=True)
class LoadPlan:
    """What will be read: the layout chosen, module key -> file key, and the fp8 layers kept in fp8."""

    path: str
    header: SafetensorsHeader
    spec: ComponentSpec
    layout: KeyMap
    config: dict[str, Any]
    keys: dict[str, str]
    fp8_layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    scales: dict[str, str] = field(default_factory=dict)  # module weight key -> file key of its weight_scale


@dataclass
class LoadedComponent:
    """A loaded module plus how it was found (layout name) and what LoRAs did (filled by `loaders.lora`)."""

    module: nn.Module
    layout: str
    config: dict[str, Any]
    lora_report: Any = None


def _config_of(header: SafetensorsHeader, spec: ComponentSpec, override: dict[str, Any] | None) -> dict[str, Any]:
    if override is not None:
        config = override
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
           "gemma_vision_tower": "Gemma vision tower"}


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


def _fp8_layers(header: SafetensorsHeader, keys: dict[str, str], fp8: Fp8Mode) -> dict[str, dict[str, Any]]:
    if fp8 != "keep":
        return {}
    layers = {}
    for module_key, file_key in keys.items():
        info = header.tensors[file_key]
        if module_key.endswith(".weight") and info.dtype in FP8_NAMES and len(info.shape) == 2:
            base = file_key.removesuffix(".weight")
            scales = {name: header.tensors[f"{base}.{name}"].shape if f"{base}.{name}" in header.tensors else None
                      for name in SCALE_SUFFIXES}  # shape () or (1,) in the files seen so far
            layers[module_key.removesuffix(".weight")] = {"weight_dtype": FP8_NAMES[info.dtype], **scales}
    return layers


def plan_load(path: str | os.PathLike[str], component: str, *, config: dict[str, Any] | None = None,
              fp8: Fp8Mode = "upcast") -> LoadPlan:
    """Header-only part of a load: config, layout, key selection, fp8 layers (raises on a wrong file)."""
    if component not in COMPONENTS:
        raise ValueError(f"component={component!r}, expected one of {sorted(COMPONENTS)!r}")
    if fp8 not in ("upcast", "keep"):
        raise ValueError(f"fp8={fp8!r}, expected 'upcast' or 'keep'")
    header = read_header(path)
    spec = COMPONENTS[component]
    layout = _pick_layout(header, spec)
    chosen_config = _config_of(header, spec, config)
    keys = layout.select(header.tensors)
    check_config(header, spec.name, spec.label, chosen_config, keys)  # values vs tensors, before any build
    fp8_layers = _fp8_layers(header, keys, fp8)
    scales: dict[str, str] = {}
    if fp8 == "upcast":  # scales are consumed by the de-quantisation, not loaded
        for module_key in [k for k in keys if k.endswith(SCALE_SUFFIXES)]:
            file_key = keys.pop(module_key)
            if module_key.endswith(".weight_scale"):
                scales[module_key.removesuffix("_scale")] = file_key
    return LoadPlan(header.path, header, spec, layout, chosen_config, keys, fp8_layers, scales)


def check_keys(path: str, label: str, layout: KeyMap, keys: dict[str, str], tensors: dict[str, TensorInfo],
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


def _read_scales(plan: LoadPlan, device: torch.device) -> dict[str, torch.Tensor]:
    if not plan.scales:
        return {}
    with MappedFile(plan.header) as mapped:
        return {k: mapped.tensor(f).to(device=device, dtype=torch.float32, copy=True) for k, f in plan.scales.items()}


def stream_tensors(
    header: SafetensorsHeader,
    keys: dict[str, str],
    targets: dict[str, torch.dtype],
    device: torch.device,
    transform: WeightTransform | None = None,
    scales: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Read ``keys`` (module key -> file key) of one file, each cast to ``targets[module key]`` on ``device``.

    One tensor at a time, in file order, each read into memory of its own (`MappedFile`); fp8 tensors bound for a
    wider dtype are de-quantised (times ``scales[module key]`` when given); ``transform`` sees each tensor before
    the final cast. A tensor that needs no conversion is used as read (one copy, no second resident set); a
    converted tensor's source is freed as soon as it is converted, so a cast load peaks at about the module's size
    plus one tensor.
    """
    items = sorted(keys.items(), key=lambda kv: header.tensors[kv[1]].begin)
    scales = scales or {}
    state: dict[str, torch.Tensor] = {}
    with MappedFile(header) as mapped:
        for module_key, file_key in items:
            target = targets[module_key]
            stored = mapped.tensor(file_key)  # read into memory of its own
            value = stored
            if value.dtype in FP8_DTYPES and target not in FP8_DTYPES:
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


def load_component(
    path: str | os.PathLike[str],
    component: str,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
    config: dict[str, Any] | None = None,
    fp8: Fp8Mode = "upcast",
    transform: WeightTransform | None = None,
) -> LoadedComponent:
    """Load ``component`` ("transformer", "video_decoder", ... see `COMPONENTS`) strictly from ``path``.

    ``dtype=None`` keeps each tensor's stored dtype. ``fp8="keep"`` keeps fp8 Linear weights in fp8
    (`Fp8Linear`, up-cast per call); ``"upcast"`` de-quantises them to ``dtype`` while loading. ``config``
    overrides the file's ``config`` metadata (split files that lack it). Raises `WrongComponentError`,
    `StateDictMismatchError` or `CheckpointFormatError` with what the file is and where it belongs.
    """
    plan = plan_load(path, component, config=config, fp8=fp8)
    # Only the device argument (no global meta context): constructors may compute buffers (DFT bases) on CPU.
    module = plan.spec.build(plan.config, plan.header.tensors, dtype, "meta")
    for layer in swap_in_fp8_linears(module, plan.fp8_layers):  # fp8 2-D weights outside a Linear: up-cast them
        for name in SCALE_SUFFIXES:
            file_key = plan.keys.pop(f"{layer}.{name}", None)
            if file_key is not None and name == "weight_scale":
                plan.scales[f"{layer}.weight"] = file_key
    expected = module.state_dict(keep_vars=True)
    header = plan.header
    # Target dtypes: every floating tensor in ``dtype`` (as the reference casts them all, computed buffers
    # included) except the fp8 weights kept in fp8; ``dtype=None`` keeps the stored dtypes.
    expected = {k: torch.empty(v.shape, dtype=_target_dtype(header, plan, k, v, dtype), device="meta")
                for k, v in expected.items()}
    check_keys(plan.path, plan.spec.label, plan.layout, plan.keys, header.tensors, expected)
    targets = {k: v.dtype for k, v in expected.items()}
    # de-quantisation and LoRA fusion run on the CPU tensors read from the map, before the move to ``device``
    state = stream_tensors(plan.header, plan.keys, targets, torch.device(device), transform,
                           _read_scales(plan, torch.device("cpu")))
    module.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftovers:  # a buffer outside the state dict that only a real construction would compute
        raise RuntimeError(f"{plan.spec.label} has tensors left on the meta device: {leftovers[:SHOWN_KEYS]}")
    module.requires_grad_(False)
    logger.info("loaded %s from %s (layout %s, %d tensors)", plan.spec.label, plan.path, plan.layout.name,
                len(state))
    return LoadedComponent(module=module.eval(), layout=plan.layout.name, config=plan.config)




def _target_dtype(header: SafetensorsHeader, plan: LoadPlan, module_key: str, meta: torch.Tensor,
                  dtype: torch.dtype | None) -> torch.dtype:
    if meta.dtype in FP8_DTYPES or not meta.dtype.is_floating_point or module_key.endswith(SCALE_SUFFIXES):
        return meta.dtype  # fp8 weights kept, integer buffers, and fp8 scales (float32) keep their dtype
    if dtype is not None:
        return dtype
    file_key = plan.keys.get(module_key)
    if file_key is None:
        return meta.dtype
    stored = TORCH_DTYPES.get(header.tensors[file_key].dtype, meta.dtype)
    return torch.bfloat16 if stored in FP8_DTYPES else stored  # an fp8 weight not kept in fp8 is computed in bf16
