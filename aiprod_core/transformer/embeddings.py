"""Timestep embeddings with AdaLN-single modulation, and the LTX-2 caption projection."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..modules import Linear

__all__ = ["AdaLNSingle", "CaptionProjection", "sinusoidal_embedding"]

SINUSOID_CHANNELS = 256
MAX_PERIOD = 10000


def sinusoidal_embedding(timesteps: torch.Tensor, channels: int = SINUSOID_CHANNELS) -> torch.Tensor:
    """timesteps (N,) -> (N, channels) float32: [cos(t w_i), sin(t w_i)], w_i = MAX_PERIOD**(-i / (channels/2))."""
    half = channels // 2
    exponent = -math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _TimestepMLP(nn.Module):
    """(N, 256) -> (N, dim): linear, SiLU, linear."""

    def __init__(self, dim: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.linear_1 = Linear(SINUSOID_CHANNELS, dim, dtype=dtype, device=device)
        self.linear_2 = Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(nn.functional.silu(self.linear_1(x)))


class _TimestepEmbedding(nn.Module):
    """timesteps (N,) -> (N, dim); the sinusoid is cast to ``dtype`` before the MLP."""

    def __init__(self, dim: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.timestep_embedder = _TimestepMLP(dim, dtype=dtype, device=device)

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(sinusoidal_embedding(timesteps).to(dtype))


class AdaLNSingle(nn.Module):
    """adaLN-single (PixArt-alpha): timesteps (N,) -> (modulation (N, rows * dim), embedding (N, dim)).

    ``rows`` is the number of dim-wide shift / scale / gate vectors the modulation carries.
    """

    def __init__(
        self, dim: int, rows: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ):
        super().__init__()
        self.emb = _TimestepEmbedding(dim, dtype=dtype, device=device)
        self.linear = Linear(dim, rows * dim, dtype=dtype, device=device)

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.emb(timesteps, dtype)
        return self.linear(nn.functional.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """LTX-2 text projection inside the transformer: context (B, S, caption_channels) -> (B, S, dim)."""

    def __init__(
        self,
        caption_channels: int,
        dim: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.linear_1 = Linear(caption_channels, dim, dtype=dtype, device=device)
        self.linear_2 = Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.linear_2(nn.functional.gelu(self.linear_1(context), approximate="tanh"))
