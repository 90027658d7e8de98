"""Fit the quantized layers of a file to a module built on the meta device (any component, any key layout).

`fit_quantized_layers` is the one call a loader needs: given the module, a file header and the keys it will load
(module key -> file key), it finds the quantized layers (`layers.scan_quantized_layers`), drops the keys that only
describe formats (``comfy_quant``, the ``scaled_fp8`` marker) and, for ``"upcast"``, the scale tensors the
de-quantisation consumes; for ``"keep"`` it swaps each quantized ``nn.Linear`` for a `QuantLinear` (other
quantized weights are de-quantised at load), and checks every layer's stored weight and scales against the
module's shapes. The result tells `stream_tensors` what to de-quantise (``upcast``) and the target-dtype rule
which tensors keep their stored dtype (``held``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from ..safetensors_header import SafetensorsHeader, TensorInfo
from .layers import LayerQuant, check_layer, scan_quantized_layers
from .linear import layer_spec, swap_in_quant_linears

__all__ = ["QuantFit", "fit_module", "fit_quantized_layers", "quant_plan"]

QuantMode = Literal["upcast", "keep"]


@dataclass(frozen=True)
class QuantFit:
    """How a module takes a file's quantized layers: ``kept`` (module weight key -> layer, held in QuantLinear s),
    ``upcast`` (module weight key -> (layer, logical shape), de-quantised while streaming) and ``held`` (module
    keys loaded in their stored dtype: the kept weights and their scales)."""

    kept: dict[str, LayerQuant] = field(default_factory=dict)
    upcast: dict[str, tuple[LayerQuant, tuple[int, ...]]] = field(default_factory=dict)
    held: frozenset[str] = frozenset()

    def shown_tensors(self, tensors: Mapping[str, TensorInfo], keys: Mapping[str, str]) -> dict[str, TensorInfo]:
        """``tensors`` with each up-cast weight at its logical shape (what the dense module expects)."""
        shown = dict(tensors)
        for module_key, (_, shape) in self.upcast.items():
            if module_key in keys:
                shown[keys[module_key]] = dataclasses.replace(tensors[keys[module_key]], shape=shape)
        return shown


def _drop(keys: dict[str, str], file_keys: list[str] | tuple[str, ...]) -> None:
    by_file = {f: m for m, f in keys.items()}
    for file_key in file_keys:
        keys.pop(by_file.get(file_key, ""), None)


def quant_plan(header: SafetensorsHeader, keys: dict[str, str], mode: QuantMode) -> dict[str, LayerQuant]:
    """Module weight key -> `LayerQuant` for the keys of ``header`` among ``keys``; drops from ``keys`` the format
    markers and, for ``"upcast"``, the scales the de-quantisation consumes."""
    mine = {m: f for m, f in keys.items() if f in header.tensors}
    scan = scan_quantized_layers(header, mine.values())
    by_file = {f: m for m, f in mine.items()}
    layers = {by_file[q.weight_key]: q for q in scan.layers.values() if q.weight_key in by_file}
    for quant in layers.values():
        _drop(keys, [*quant.extra_keys, *(quant.scale_keys.values() if mode == "upcast" else ())])
    _drop(keys, scan.markers)
    return layers


def fit_module(module: nn.Module, path: str, header: SafetensorsHeader, layers: Mapping[str, LayerQuant],
               keys: dict[str, str], mode: QuantMode) -> QuantFit:
    """Swap `QuantLinear` s into ``module`` (``"keep"``) and check every layer of ``layers`` (see the module doc)."""
    kept: dict[str, LayerQuant] = {}
    if mode == "keep":
        specs = {k.removesuffix(".weight"): layer_spec(q, header) for k, q in layers.items() if k.endswith(".weight")}
        skipped = set(swap_in_quant_linears(module, specs))
        kept = {f"{p}.weight": layers[f"{p}.weight"] for p in specs if p not in skipped}
        for key, quant in layers.items():  # non-Linear quantized weights are de-quantised at load
            if key not in kept:
                _drop(keys, list(quant.scale_keys.values()))
    meta = module.state_dict(keep_vars=True)
    upcast = {k: (q, tuple(meta[k].shape)) for k, q in layers.items() if k not in kept and k in meta}
    for key, quant in kept.items():
        layer = module.get_submodule(key.removesuffix(".weight"))
        check_layer(path, quant, (layer.out_features, layer.in_features), header.tensors)
    for quant, shape in upcast.values():
        check_layer(path, quant, shape, header.tensors)
    held = {f"{k.removesuffix('weight')}{s}" for k, q in kept.items() for s in q.scale_keys} | set(kept)
    return QuantFit(kept, upcast, frozenset(held))


def fit_quantized_layers(module: nn.Module, header: SafetensorsHeader, keys: dict[str, str],
                         mode: QuantMode = "upcast") -> QuantFit:
    """`quant_plan` then `fit_module` for one file (call once per file of a sharded model, on the same ``keys``)."""
    return fit_module(module, header.path, header, quant_plan(header, keys, mode), keys, mode)
