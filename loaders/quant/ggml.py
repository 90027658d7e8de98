"""De-quantisation of GGUF (ggml) block types, bit for bit as the ``gguf`` package's ``gguf.quants.dequantize``.

A row of a quantized GGUF tensor is a run of blocks; each block holds ``block_size`` values in ``type_size``
bytes: float16 scale(s) first or last, then packed integers (ggml's ``block_q*`` structs). Every value is
computed in float32 with the same operations in the same order as the reference (one multiply, then one
add or subtract), so the float32 results are identical; the caller's dtype is a final cast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["GGML_KERNELS", "dequantize_ggml"]

QK_K = 256  # values per super-block of the k-quants


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The float16 stored at bytes [start, start + 2) of each block, as float32 (n, 1)."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _nibbles(data: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    """(n, groups * width) bytes -> (n, groups, 2, width): low nibbles of a run of ``width`` bytes, then high."""
    data = data.reshape(data.shape[0], groups, 1, width)
    shifts = torch.tensor([0, 4], dtype=torch.uint8, device=data.device).reshape(1, 1, 2, 1)
    return (data >> shifts) & 0x0F


def _bits(data: torch.Tensor, groups: int, width: int, step: int) -> torch.Tensor:
    """(n, groups * width) bytes -> (n, groups, 8 // step, width): the ``step``-bit fields from low to high."""
    data = data.reshape(data.shape[0], groups, 1, width)
    shifts = torch.arange(0, 8, step, dtype=torch.uint8, device=data.device).reshape(1, 1, -1, 1)
    return (data >> shifts) & ((1 << step) - 1)


def _high_bits_32(data: torch.Tensor) -> torch.Tensor:
    """A little-endian uint32 of 4 bytes per block -> its 32 bits, bit i for value i (n, 32)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=data.device).reshape(1, 1, 8)
    return ((data.reshape(-1, 4, 1) >> shifts) & 1).reshape(-1, 32)


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b, 0)
    q = _nibbles(b[:, 2:], 1, 16).reshape(-1, 32).to(torch.int8) - 8
    return d * q.float()


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _f16(b, 0), _f16(b, 2)
    q = _nibbles(b[:, 4:], 1, 16).reshape(-1, 32).float()
    return (d * q) + m


def _q5(b: torch.Tensor, start: int) -> torch.Tensor:
    high = _high_bits_32(b[:, start:start + 4])
    low = _nibbles(b[:, start + 4:], 1, 16).reshape(-1, 32)
    return low | (high << 4)


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    return _f16(b, 0) * (_q5(b, 2).to(torch.int8) - 16).float()


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    return (_f16(b, 0) * _q5(b, 4).float()) + _f16(b, 2)


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    return b[:, 2:].contiguous().view(torch.int8).float() * _f16(b, 0)


def _q2_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    scales, qs = b[:, :16], b[:, 16:80]
    d, dmin = _f16(b, 80), _f16(b, 82)
    dl = (d * (scales & 0x0F).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    q = _bits(qs, 2, 32, 2).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    hmask, qs, packed = b[:, :32], b[:, 32:96], b[:, 96:108]
    d = _f16(b, 108)
    low = _nibbles(packed[:, :8], 1, 8).reshape(n, 16)
    high = _bits(packed[:, 8:], 1, 4, 2).reshape(n, 16)
    scales = ((low & 0x0F) | ((high & 0x03) << 4)).to(torch.int8) - 32
    dl = (d * scales.float()).reshape(n, 16, 1)
    ql = _bits(qs, 2, 32, 2).reshape(n, 16, 16)
    qh = _bits(hmask, 1, 32, 1).reshape(n, 16, 16) ^ 1  # a set mask bit means no offset
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).reshape(n, QK_K)


def _scale_min_k4(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and mins of a Q4_K / Q5_K block from its 12 packed bytes."""
    d, m, md = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scale = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    minimum = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return scale, minimum


def _q45_k_scales(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = b.shape[0]
    d, dmin = _f16(b, 0), _f16(b, 2)
    scale, minimum = _scale_min_k4(b[:, 4:16])
    return (d * scale.float()).reshape(n, 8, 1), (dmin * minimum.float()).reshape(n, 8, 1)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dm = _q45_k_scales(b)
    q = _nibbles(b[:, 16:], 4, 32).reshape(n, 8, 32).float()
    return (d * q - dm).reshape(n, QK_K)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dm = _q45_k_scales(b)
    high = _bits(b[:, 16:48], 1, 32, 1).reshape(n, 8, 32)
    low = _nibbles(b[:, 48:], 4, 32).reshape(n, 8, 32)
    q = (low | (high << 4)).float()
    return (d * q - dm).reshape(n, QK_K)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql, qh, scales = b[:, :128], b[:, 128:192], b[:, 192:208]
    d = (_f16(b, 208) * scales.contiguous().view(torch.int8).float()).reshape(n, 16, 1)
    low = _nibbles(ql, 2, 64).reshape(n, 8, 32)
    high = _bits(qh, 2, 32, 2).reshape(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    return (d * q).reshape(n, QK_K)


GGML_KERNELS: dict[str, tuple[int, int, Callable[[torch.Tensor], torch.Tensor]]] = {
    "Q4_0": (32, 18, _q4_0), "Q4_1": (32, 20, _q4_1), "Q5_0": (32, 22, _q5_0), "Q5_1": (32, 24, _q5_1),
    "Q8_0": (32, 34, _q8_0), "Q2_K": (256, 84, _q2_k), "Q3_K": (256, 110, _q3_k), "Q4_K": (256, 144, _q4_k),
    "Q5_K": (256, 176, _q5_k), "Q6_K": (256, 210, _q6_k),
}


def dequantize_ggml(name: str, data: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """GGUF tensor ``data`` (uint8, rows x bytes per row) of block type ``name`` as ``dtype`` of ``shape``."""
    block_size, type_size, kernel = GGML_KERNELS[name]
    blocks = data.reshape(-1, type_size)
    return kernel(blocks).reshape(shape).to(dtype)
