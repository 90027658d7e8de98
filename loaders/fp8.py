"""fp8 weights: the names the fp8-only loader had, now served by the quantized-weights mechanism (`loaders.quant`).

Official fp8 LTX-2 files store the transformer blocks' Linear weights as float8_e4m3fn, (out, in) like any
Linear weight. "Cast" files hold nothing else; "scaled" files add a scalar float32 ``<layer>.weight_scale``
(weight = fp8 x weight_scale) and an ``<layer>.input_scale`` used by fp8 matmuls (kept so the keys load).
`Fp8Linear` is `QuantLinear` (every quantized format, fp8 included); `swap_in_fp8_linears` takes the old
per-layer spec (``weight_dtype`` and the ``weight_scale`` / ``input_scale`` shapes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .quant.formats import LIGHTRICKS_FP8
from .quant.kernels import dequantize
from .quant.linear import LayerSpec, QuantLinear, swap_in_quant_linears

__all__ = ["FP8_DTYPES", "SCALE_SUFFIXES", "Fp8Linear", "dequantise", "swap_in_fp8_linears"]

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_SUFFIXES = ("weight_scale", "input_scale")
Fp8Linear = QuantLinear


def dequantise(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """fp8 ``weight`` (x ``scale`` when given) as ``dtype``, computed as comfy-kitchen does (both cast to
    ``dtype``, then multiplied)."""
    scales = {} if scale is None else {"weight_scale": scale}
    return dequantize(LIGHTRICKS_FP8.kernel, weight, scales, {}, tuple(weight.shape), dtype)


def swap_in_fp8_linears(module: nn.Module, layers: dict[str, dict[str, Any]]) -> list[str]:
    """Replace the ``nn.Linear`` at each path of ``layers`` by an fp8 `QuantLinear` on the same device.

    ``layers[path]`` gives ``weight_dtype`` and the ``weight_scale`` / ``input_scale`` shapes (None: absent).
    Paths that are not a Linear are left alone (returned) so the caller can up-cast their weights instead.
    """
    specs = {}
    for path, spec in layers.items():
        linear = module.get_submodule(path)
        shape = tuple(linear.weight.shape) if isinstance(linear, nn.Linear) else ()
        scales = {name: (torch.float32, tuple(spec[name])) for name in SCALE_SUFFIXES if spec.get(name) is not None}
        specs[path] = LayerSpec(LIGHTRICKS_FP8, (spec["weight_dtype"], shape), scales)
    return swap_in_quant_linears(module, specs)
