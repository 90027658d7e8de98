"""fp8 (float8_e4m3fn) weights kept in fp8 in memory and up-cast per layer at compute time.

Official fp8 LTX-2 files store the transformer blocks' Linear weights as float8_e4m3fn, (out, in) like any
Linear weight. "Cast" files hold nothing else (the weight is used as it stands); "scaled" files add a scalar
float32 ``<layer>.weight_scale`` (weight = fp8 x weight_scale) and an ``<layer>.input_scale`` used by the
reference's TensorRT fp8 matmul (kept here only so the keys load; we up-cast instead).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FP8_DTYPES", "SCALE_SUFFIXES", "Fp8Linear", "dequantise", "swap_in_fp8_linears"]

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_SUFFIXES = ("weight_scale", "input_scale")


def dequantise(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """fp8 ``weight`` (x ``scale`` when given, computed in float32) as ``dtype``."""
    if scale is None:
        return weight.to(dtype)
    return (weight.to(torch.float32) * scale.to(torch.float32)).to(dtype)


class Fp8Linear(nn.Module):
    """A Linear whose weight (out, in) stays in fp8; x (..., in) -> (..., out) computed in x's dtype.

    The weight is up-cast (and multiplied by ``weight_scale`` when the file has one) for each call only, so a
    layer's full-precision copy exists only while that layer runs.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool, weight_scale: tuple[int, ...] | None = None,
                 input_scale: tuple[int, ...] | None = None, bias_dtype: torch.dtype | None = None,
                 weight_dtype: torch.dtype = torch.float8_e4m3fn, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=weight_dtype, device=device),
                                   requires_grad=False)
        self.bias = (nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device), requires_grad=False)
                     if bias else None)
        self.weight_scale: torch.Tensor | None
        self.input_scale: torch.Tensor | None
        for name, shape in (("weight_scale", weight_scale), ("input_scale", input_scale)):
            value = None if shape is None else torch.empty(shape, dtype=torch.float32, device=device)
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = dequantise(self.weight, self.weight_scale, x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, scaled={self.weight_scale is not None}")


def swap_in_fp8_linears(module: nn.Module, layers: dict[str, dict[str, Any]]) -> list[str]:
    """Replace the ``nn.Linear`` at each path of ``layers`` by an `Fp8Linear` on the same device.

    ``layers[path]`` gives ``weight_dtype`` and the ``weight_scale`` / ``input_scale`` shapes (None: absent).
    Paths that are not a Linear are left alone (returned) so the caller can up-cast their weights instead.
    """
    skipped = []
    for path, spec in layers.items():
        linear = module.get_submodule(path)
        if not isinstance(linear, nn.Linear):
            skipped.append(path)
            continue
        replacement = Fp8Linear(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            weight_scale=spec["weight_scale"], input_scale=spec["input_scale"],
            bias_dtype=linear.bias.dtype if linear.bias is not None else None,
            weight_dtype=spec["weight_dtype"], device=linear.weight.device,
        )
        parent_path, _, name = path.rpartition(".")
        setattr(module.get_submodule(parent_path), name, replacement)
    return skipped
