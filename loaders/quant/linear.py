"""`QuantLinear`: a Linear whose weight stays in its quantized storage and is de-quantised for its own matmul.

`layer_spec` turns a `LayerQuant` and the file header into what the module holds (the stored weight's dtype and
shape, each scale tensor's); `swap_in_quant_linears` replaces the ``nn.Linear`` layers of a (meta) module by
`QuantLinear` s whose state-dict keys are the file's (``weight``, ``bias``, ``weight_scale``, ...), so the file
loads into them strictly like any other tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..safetensors_header import SafetensorsHeader
from .formats import QuantFormat
from .kernels import dequantize
from .layers import LayerQuant

__all__ = ["LayerSpec", "QuantLinear", "layer_spec", "swap_in_quant_linears"]

# safetensors dtype names -> the torch dtype a tensor is held in (E8M0 block scales are held as their bytes).
HELD_DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.uint8, "I8": torch.int8, "U8": torch.uint8,
}


@dataclass(frozen=True)
class LayerSpec:
    """How one quantized layer is held: format, stored weight (dtype, shape), scales by suffix, parameters."""

    format: QuantFormat
    weight: tuple[torch.dtype, tuple[int, ...]]
    scales: dict[str, tuple[torch.dtype, tuple[int, ...]]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def layer_spec(quant: LayerQuant, header: SafetensorsHeader) -> LayerSpec:
    """The `LayerSpec` of ``quant`` from the tensors of ``header``."""

    def held(key: str) -> tuple[torch.dtype, tuple[int, ...]]:
        info = header.tensors[key]
        return HELD_DTYPES[info.dtype], info.shape

    scales = {suffix: held(key) for suffix, key in quant.scale_keys.items()}
    return LayerSpec(quant.format, held(quant.weight_key), scales, dict(quant.params))


class QuantLinear(nn.Module):
    """A Linear (out, in) whose weight is kept quantized; x (..., in) -> (..., out), computed in x's dtype.

    ``weight`` holds the stored bytes (fp8 / int8 / packed nvfp4 / GGUF blocks) and the scale tensors are buffers
    named by their file suffix; `dequantize` rebuilds the weight (out, in) for one call, so a layer's
    full-precision copy exists only while that layer runs. ``mode`` is ``"keep"`` here by construction.
    """

    def __init__(self, in_features: int, out_features: int, spec: LayerSpec, *, bias: bool,
                 bias_dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.quant_format = spec.format
        self.quant_params = dict(spec.params)
        dtype, shape = spec.weight
        self.weight = nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)
        self.bias = (nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device), requires_grad=False)
                     if bias else None)
        self.scale_names = tuple(spec.scales)
        for name, (scale_dtype, scale_shape) in spec.scales.items():
            self.register_buffer(name, torch.empty(scale_shape, dtype=scale_dtype, device=device))

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight (out, in) in ``dtype``."""
        scales = {name: getattr(self, name) for name in self.scale_names}
        return dequantize(self.quant_format.kernel, self.weight, scales, self.quant_params,
                          (self.out_features, self.in_features), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, format={self.quant_format.name}")


def swap_in_quant_linears(module: nn.Module, layers: Mapping[str, LayerSpec]) -> list[str]:
    """Replace the ``nn.Linear`` at each module path of ``layers`` by a `QuantLinear` on the same device.

    Paths that are not a Linear are left alone and returned, so the caller can de-quantise their weights at load.
    """
    skipped = []
    for path, spec in layers.items():
        linear = module.get_submodule(path)
        if not isinstance(linear, nn.Linear):
            skipped.append(path)
            continue
        replacement = QuantLinear(linear.in_features, linear.out_features, spec, bias=linear.bias is not None,
                                  bias_dtype=linear.bias.dtype if linear.bias is not None else None,
                                  device=linear.weight.device)
        parent_path, _, name = path.rpartition(".")
        setattr(module.get_submodule(parent_path), name, replacement)
    return skipped
