"""Rotary position embedding of the LTX transformer: fractional positions on a log-spaced frequency grid.

Two layouts share the same frequencies: ``interleaved`` rotates channel pairs (2i, 2i+1) of the whole inner
dimension, ``split`` rotates the first half of each head against its second half.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["HeadRotation", "RotaryTables", "apply_rotary", "head_rotation", "rotary_tables", "rotate_heads"]


class RotaryTables(NamedTuple):
    """cos / sin tables: ``(B, T, inner)`` for ``interleaved``, ``(B, H, T, head_dim // 2)`` for ``split``."""

    cos: torch.Tensor
    sin: torch.Tensor

    def rows(self, index: torch.Tensor) -> RotaryTables:
        """The tables of the batch elements in ``index`` (the batch is the leading dimension in both layouts);
        tables of batch 1 are shared by every element and returned as they are."""
        if self.cos.shape[0] == 1:
            return self
        return RotaryTables(self.cos[index], self.sin[index])


def frequency_grid(theta: float, n_dims: int, inner_dim: int, double_precision: bool) -> torch.Tensor:
    """``(inner_dim // (2 n_dims),)`` angular frequencies theta**linspace(0, 1) * pi / 2, as float32.

    ``double_precision`` reproduces the reference's "float64" mode: the grid is computed in float64 and rounded
    to float32; everything after it (positions, cos, sin) stays in the working precision.
    """
    count = inner_dim // (2 * n_dims)
    low, high = math.log(1, theta), math.log(theta, theta)
    if double_precision:
        grid = torch.pow(theta, torch.linspace(low, high, count, dtype=torch.float64)) * math.pi / 2
        return grid.to(torch.float32)
    grid = theta ** torch.linspace(low, high, count, dtype=torch.float32)
    return grid * math.pi / 2


def _angles(positions: torch.Tensor, max_pos: tuple[int, ...], grid: torch.Tensor) -> torch.Tensor:
    """positions (B, n_dims, T, 2) [start, end) -> angles (B, T, F * n_dims), frequency-major, dimension-minor."""
    if positions.ndim != 4 or positions.shape[-1] != 2 or positions.shape[1] != len(max_pos):
        raise ValueError(f"positions shape {tuple(positions.shape)}, expected (B, {len(max_pos)}, T, 2)")
    middle = (positions[..., 0] + positions[..., 1]) / 2.0  # (B, n_dims, T)
    fraction = torch.stack([middle[:, i] / limit for i, limit in enumerate(max_pos)], dim=-1)  # (B, T, n_dims)
    angles = grid.to(fraction.device) * (fraction.unsqueeze(-1) * 2 - 1)  # (B, T, n_dims, F)
    return angles.transpose(-1, -2).flatten(2)


def rotary_tables(
    positions: torch.Tensor,
    *,
    inner_dim: int,
    heads: int,
    max_pos: tuple[int, ...],
    theta: float,
    rope_type: str,
    double_precision: bool,
    dtype: torch.dtype,
) -> RotaryTables:
    """cos / sin tables for ``positions`` (B, n_dims, T, 2); unused leading channels get the identity rotation."""
    n_dims = positions.shape[1]
    angles = _angles(positions, max_pos, frequency_grid(theta, n_dims, inner_dim, double_precision))
    batch, tokens = angles.shape[:2]
    if rope_type == "interleaved":
        cos = angles.cos().repeat_interleave(2, dim=-1)  # (B, T, 2 F n_dims)
        sin = angles.sin().repeat_interleave(2, dim=-1)
        pad = inner_dim % (2 * n_dims)
    elif rope_type == "split":
        cos, sin = angles.cos(), angles.sin()  # (B, T, F n_dims)
        pad = inner_dim // 2 - angles.shape[-1]
    else:
        raise ValueError(f"rope_type={rope_type!r}, expected one of ('interleaved', 'split')")
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    if rope_type == "split":
        cos = cos.reshape(batch, tokens, heads, -1).transpose(1, 2)  # (B, H, T, head_dim // 2)
        sin = sin.reshape(batch, tokens, heads, -1).transpose(1, 2)
    return RotaryTables(cos.to(dtype), sin.to(dtype))


def apply_rotary(x: torch.Tensor, tables: RotaryTables, rope_type: str) -> torch.Tensor:
    """Rotate ``x`` (B, T, H * head_dim) by ``tables``; returns the same shape."""
    if rope_type == "interleaved":
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack((-odd, even), dim=-1).flatten(-2)  # (x0, x1) -> (-x1, x0)
        return x * tables.cos + rotated * tables.sin
    batch, tokens, _ = x.shape
    heads = tables.cos.shape[1]
    per_head = x.reshape(batch, tokens, heads, -1).transpose(1, 2)  # (B, H, T, head_dim)
    first, second = per_head.chunk(2, dim=-1)
    out = torch.cat(
        (first * tables.cos - tables.sin * second, second * tables.cos + tables.sin * first),
        dim=-1,
    )
    return out.transpose(1, 2).reshape(batch, tokens, -1)


class HeadRotation(NamedTuple):
    """The ``split`` rotation in the attention's head layout, shared by every block of a forward pass.

    cos ``(B, H, T, head_dim)`` is cos repeated over both halves; sin ``(B, H, T, head_dim)`` is (-sin, sin), so
    that rotating x (B, H, T, head_dim) is ``x * cos + swap_halves(x) * sin``: three passes over x instead of the
    seven of the half-by-half formula, and no layout round trip before attention.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def rows(self, index: torch.Tensor) -> HeadRotation:
        """The rotation of the batch elements in ``index`` (batch 1: shared, returned as it is)."""
        if self.cos.shape[0] == 1:
            return self
        return HeadRotation(self.cos[index], self.sin[index])


def head_rotation(tables: RotaryTables) -> HeadRotation:
    """``split`` tables (B, H, T, head_dim // 2) -> the full-width head-layout rotation (B, H, T, head_dim)."""
    return HeadRotation(torch.cat((tables.cos, tables.cos), dim=-1), torch.cat((-tables.sin, tables.sin), dim=-1))


def rotate_heads(x: torch.Tensor, rotation: HeadRotation) -> torch.Tensor:
    """Rotate x (B, H, T, head_dim) (any strides): first' = first cos - second sin, second' = second cos + first sin."""
    first, second = x.chunk(2, dim=-1)
    swapped = torch.cat((second, first), dim=-1)  # (B, H, T, head_dim), contiguous
    return torch.addcmul(x * rotation.cos, swapped, rotation.sin)
