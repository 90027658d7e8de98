"""De-quantisation of the safetensors quantized formats, bit for bit as comfy-kitchen's eager backend.

Each kernel takes the stored weight, its scale tensors by suffix and the layer's parameters, and returns the
weight (out, in) in ``dtype``. The order and dtype of every operation follow comfy-kitchen's eager functions
(``dequantize_per_tensor_fp8``, ``dequantize_nvfp4``, ``dequantize_mxfp8``, ``dequantize_int8_*``), so the
results are equal to the bit, which the tests check against comfy-kitchen itself.

On CUDA, comfy-kitchen's own kernels are used for NVFP4 / MXFP8 when the package is importable (never required).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["KERNELS", "dequantize", "hadamard", "unswizzle_blocks"]

logger = logging.getLogger(__name__)

E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
NVFP4_BLOCK, MXFP8_BLOCK = 16, 32
F32_MANTISSA_BITS = 23
# The regular 4 x 4 Hadamard matrix ConvRot builds its rotations from (Kronecker powers, normalised).
HADAMARD_4 = ((1, 1, 1, -1), (1, 1, -1, 1), (1, -1, 1, 1), (-1, 1, 1, 1))
Kernel = Callable[[torch.Tensor, Mapping[str, torch.Tensor], Mapping[str, Any], torch.dtype], torch.Tensor]
_HADAMARDS: dict[tuple[int, str], torch.Tensor] = {}
_KITCHEN: list[Any] = []  # [module or None], filled on first CUDA use


def unswizzle_blocks(blocked: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Block scales from cuBLAS' swizzled layout to (rows, cols).

    The layout stores 128 x 4 tiles one after the other; inside a tile, value (i * 32 + j, c) sits at [j][i][c].
    """
    row_tiles, col_tiles = -(-rows // 128), -(-cols // 4)
    tiles = blocked.reshape(row_tiles, col_tiles, 32, 4, 4)  # (tile row, tile col, j, i, c)
    plain = tiles.permute(0, 3, 2, 1, 4).reshape(row_tiles * 128, col_tiles * 4)
    return plain[:rows, :cols]


def _e8m0_to_float(exponents: torch.Tensor) -> torch.Tensor:
    """E8M0 exponents (uint8) as float32 powers of two; 0 reads as 0, as comfy-kitchen reads it."""
    biased = exponents.to(torch.int32)
    values = (biased << F32_MANTISSA_BITS).view(torch.float32)
    return torch.where(biased == 0, torch.zeros_like(values), values)


def hadamard(size: int, device: torch.device) -> torch.Tensor:
    """The normalised regular Hadamard matrix of ``size`` (a power of 4), float32 (size, size)."""
    key = (size, str(device))
    if key not in _HADAMARDS:
        if size < 4 or size & (size - 1) or (size.bit_length() - 1) % 2:
            raise ValueError(f"convrot_groupsize={size!r}, expected a power of 4")
        base = torch.tensor(HADAMARD_4, dtype=torch.float32, device=device)
        matrix, current = base, 4
        while current < size:
            matrix, current = torch.kron(matrix, base), current * 4
        _HADAMARDS[key] = matrix / (size**0.5)
    return _HADAMARDS[key]


def _kitchen() -> Any:
    if not _KITCHEN:
        try:
            import comfy_kitchen
        except ImportError:
            comfy_kitchen = None
        _KITCHEN.append(comfy_kitchen)
    return _KITCHEN[0]


def _fast_kernels_for(weight: torch.Tensor) -> bool:
    """Whether comfy-kitchen's kernels (when importable) de-quantise ``weight``: on CUDA, where it has them; on the
    CPU our own code is the same arithmetic (equal to its eager backend, `tests/loaders/test_quant_kernels.py`)."""
    return weight.is_cuda


def _per_tensor_fp8(weight: torch.Tensor, scales: Mapping[str, torch.Tensor], params: Mapping[str, Any],
                    dtype: torch.dtype) -> torch.Tensor:
    if weight.dtype == torch.uint8:  # fp8 stored in a uint8 container
        weight = weight.view(getattr(torch, params.get("storage", "float8_e4m3fn")))
    scale = scales.get(params.get("scale_suffix", "weight_scale"))
    if scale is None:
        return weight.to(dtype)
    return weight.to(dtype) * scale.to(dtype)


def _nvfp4(weight: torch.Tensor, scales: Mapping[str, torch.Tensor], params: Mapping[str, Any],
           dtype: torch.dtype) -> torch.Tensor:
    block_scales, tensor_scale = scales["weight_scale"], scales["weight_scale_2"]
    rows, cols = weight.shape[0], weight.shape[1] * 2
    ck = _kitchen() if _fast_kernels_for(weight) else None
    if ck is not None:
        return ck.dequantize_nvfp4(weight, tensor_scale.float(), block_scales.view(torch.float8_e4m3fn), dtype)
    table = torch.tensor(E2M1_VALUES, device=weight.device).to(dtype)
    codes = torch.stack([weight >> 4, weight & 0x0F], dim=-1).reshape(rows, cols)  # high nibble first
    values = table[codes.long()].reshape(rows, cols // NVFP4_BLOCK, NVFP4_BLOCK)
    block = unswizzle_blocks(block_scales.view(torch.float8_e4m3fn), rows, cols // NVFP4_BLOCK)
    total = tensor_scale.to(dtype) * block.to(dtype)
    return (values * total.unsqueeze(-1)).reshape(rows, cols).to(dtype)


def _mxfp8(weight: torch.Tensor, scales: Mapping[str, torch.Tensor], params: Mapping[str, Any],
           dtype: torch.dtype) -> torch.Tensor:
    rows, cols = weight.shape
    exponents = scales["weight_scale"].view(torch.uint8)
    ck = _kitchen() if _fast_kernels_for(weight) else None
    if ck is not None:
        return ck.dequantize_mxfp8(weight, exponents.view(torch.float8_e8m0fnu), dtype)
    block = _e8m0_to_float(unswizzle_blocks(exponents, rows, cols // MXFP8_BLOCK))
    values = weight.to(torch.float32).reshape(rows, cols // MXFP8_BLOCK, MXFP8_BLOCK) * block.unsqueeze(-1)
    return values.reshape(rows, cols).to(dtype)


def _int8(weight: torch.Tensor, scales: Mapping[str, torch.Tensor], params: Mapping[str, Any],
          dtype: torch.dtype) -> torch.Tensor:
    values = weight.float() * scales["weight_scale"]
    if params.get("convrot"):
        size = int(params["convrot_groupsize"])
        rows, cols = values.shape
        rotation = hadamard(size, values.device).T.to(values.dtype)
        values = torch.matmul(values.reshape(rows, cols // size, size), rotation).reshape(rows, cols)
    return values.to(dtype)


KERNELS: dict[str, Kernel] = {
    "per_tensor_fp8": _per_tensor_fp8,
    "nvfp4": _nvfp4,
    "mxfp8": _mxfp8,
    "int8": _int8,
}


def dequantize(kernel: str, weight: torch.Tensor, scales: Mapping[str, torch.Tensor], params: Mapping[str, Any],
               shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The weight of logical ``shape`` in ``dtype`` (padding the format stores is cut off)."""
    if kernel.startswith("ggml_"):
        from .ggml import dequantize_ggml

        return dequantize_ggml(kernel.removeprefix("ggml_"), weight, shape, dtype)
    full = KERNELS[kernel](weight, scales, params, dtype)
    if tuple(full.shape) != tuple(shape):
        full = full[tuple(slice(0, d) for d in shape)]
    return full
