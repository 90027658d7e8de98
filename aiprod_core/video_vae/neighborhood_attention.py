"""3-D neighborhood attention with NATTEN's ``na3d`` semantics: ``natten`` on CUDA when installed, else exact
pure PyTorch.

Each query at (t, h, w) attends the ``k_t x k_h x k_w`` keys of a window that is centred on it and shifted inward
at the grid borders, so it always holds exactly ``kernel`` positions per axis (``start = clamp(i - k // 2, 0,
L - k)``). Every axis must be at least its kernel long (the diffusion decoder pads its inputs so that it is).

The PyTorch path tiles the queries: one tile's keys are the union of its queries' windows, a boolean mask keeps
each query to its own window, and ``scaled_dot_product_attention`` does the softmax, so the result is the exact
windowed softmax (up to summation order); the mask of one tile is kept under ``SCORE_BUDGET`` elements.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import logging
import math

import torch
from torch import nn

__all__ = ["natten_usable", "neighborhood_attention"]

logger = logging.getLogger(__name__)

# Elements of one query tile's (heads x queries x keys) score matrix in the PyTorch path.
SCORE_BUDGET = 2**24


@functools.cache
def _natten_installed() -> bool:
    return importlib.util.find_spec("natten") is not None


def natten_usable(x: torch.Tensor) -> bool:
    """Whether ``natten.na3d`` can run on ``x``: the package is installed and ``x`` lives on a CUDA device."""
    return x.device.type == "cuda" and _natten_installed()


def _window_starts(length: int, kernel: int, device: torch.device) -> torch.Tensor:
    """(length,) first key index of each query's window along one axis."""
    index = torch.arange(length, device=device)
    return (index - kernel // 2).clamp(0, length - kernel)


def _tile_sizes(dims: tuple[int, int, int], kernel: tuple[int, int, int], heads: int) -> list[int]:
    """Query tile lengths (t, h, w) whose score matrix stays under ``SCORE_BUDGET`` (halving the longest axis)."""
    tiles = list(dims)

    def cost(sizes: list[int]) -> int:
        keys = math.prod(min(d, s + k - 1) for s, k, d in zip(sizes, kernel, dims, strict=True))
        return heads * math.prod(sizes) * keys

    while cost(tiles) > SCORE_BUDGET and max(tiles) > 1:
        axis = max(range(3), key=lambda a: tiles[a] / kernel[a])
        tiles[axis] = (tiles[axis] + 1) // 2
    return tiles


def _tile_window(first: int, size: int, length: int, starts: torch.Tensor, kernel: int) -> tuple[slice, slice,
                                                                                                   torch.Tensor]:
    """One axis of a query tile: its query slice, the union of its windows, and which keys each query sees."""
    last = min(first + size, length)
    tile_starts = starts[first:last]
    low, high = int(tile_starts[0]), int(tile_starts[-1]) + kernel
    keys = torch.arange(low, high, device=starts.device)
    visible = (keys[None] >= tile_starts[:, None]) & (keys[None] < tile_starts[:, None] + kernel)  # (nq, nk)
    return slice(first, last), slice(low, high), visible


def _pytorch_na3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    batch, t, h, w, heads, head_dim = q.shape
    dims = (t, h, w)
    starts = [_window_starts(d, kk, q.device) for d, kk in zip(dims, kernel, strict=True)]
    sizes = _tile_sizes(dims, kernel, heads * batch)
    out = torch.empty_like(v)
    firsts = [range(0, d, s) for d, s in zip(dims, sizes, strict=True)]
    for corner in itertools.product(*firsts):
        axes = [_tile_window(corner[a], sizes[a], dims[a], starts[a], kernel[a]) for a in range(3)]
        (qt, kt, mt), (qh, kh, mh), (qw, kw, mw) = axes
        # (nq_t, nq_h, nq_w, nk_t, nk_h, nk_w) -> (Nq, Nk)
        visible = mt[:, None, None, :, None, None] & mh[None, :, None, None, :, None] & mw[None, None, :, None, None, :]
        n_q = math.prod(visible.shape[:3])
        queries = q[:, qt, qh, qw]  # (B, qt, qh, qw, heads, D)
        keys = k[:, kt, kh, kw].reshape(batch, -1, heads, head_dim).transpose(1, 2)
        values = v[:, kt, kh, kw].reshape(batch, -1, heads, head_dim).transpose(1, 2)
        attended = nn.functional.scaled_dot_product_attention(
            queries.reshape(batch, n_q, heads, head_dim).transpose(1, 2), keys, values,
            attn_mask=visible.reshape(n_q, -1), scale=1.0,
        )  # (B, heads, Nq, D)
        out[:, qt, qh, qw] = attended.transpose(1, 2).reshape(queries.shape)
    return out


def neighborhood_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: tuple[int, int, int]
) -> torch.Tensor:
    """Windowed attention of pre-scaled queries: q, k, v (B, T, H, W, heads, D) -> (B, T, H, W, heads, D).

    The score is ``q . k`` (no further scaling: the caller has already multiplied q by ``D ** -0.5``).
    """
    if q.ndim != 6 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"q/k/v shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}, expected equal "
                         "(B, T, H, W, heads, D)")
    kernel = (int(kernel_size[0]), int(kernel_size[1]), int(kernel_size[2]))
    if any(d < kk for d, kk in zip(q.shape[1:4], kernel, strict=True)):
        raise ValueError(f"neighborhood attention grid (T, H, W)={tuple(q.shape[1:4])!r}, expected at least "
                         f"the kernel {kernel!r} on every axis")
    if natten_usable(q):
        import natten

        # natten's fused kernels read their inputs as contiguous (B, T, H, W, heads, D) and need one dtype.
        return natten.na3d(q.contiguous(), k.contiguous(), v.contiguous(), kernel_size=kernel, scale=1.0)
    return _pytorch_na3d(q, k, v, kernel)
