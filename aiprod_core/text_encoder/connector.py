"""1-D embeddings connector: a small pre-norm transformer over the projected text features.

Padded positions are replaced by learnable registers: each sample's valid tokens are packed to the front (in
order) and position ``t`` past them takes register ``t mod R``; attention then sees the whole sequence. This is
done per sample, so a batch of prompts with different lengths gives each sample the result of a batch of one.
State-dict keys equal the checkpoint's ``model.diffusion_model.{video,audio}_embeddings_connector.*`` keys.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..modules import Linear
from .config import ConnectorConfig

__all__ = ["EmbeddingsConnector"]

NORM_EPS = 1e-6
FF_MULT = 4


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.rms_norm(x, (x.shape[-1],), eps=NORM_EPS)


def _frequency_grid(theta: float, count: int, double_precision: bool) -> torch.Tensor:
    """``count`` angular frequencies theta^linspace(0, 1) * pi/2 as float32, (count,)."""
    if double_precision:
        grid = np.power(theta, np.linspace(0.0, 1.0, count, dtype=np.float64))
        return torch.tensor(grid * math.pi / 2, dtype=torch.float32)
    grid = theta ** torch.linspace(0.0, 1.0, count, dtype=torch.float32)
    return grid * math.pi / 2


def rope_tables(
    config: ConnectorConfig, length: int, dtype: torch.dtype, device: torch.device | str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin tables for positions 0..length-1, broadcastable against (B, T, H, D) queries.

    Interleaved: (1, T, H, D), each frequency repeated for the two members of a pair; head h takes the slice
    h*D/2 .. (h+1)*D/2 of the frequency table. Split: (1, T, H, D/2), the same slice, applied to the two halves.
    """
    inner = config.inner_dim
    grid = _frequency_grid(config.rope_theta, inner // 2, config.double_precision_rope).to(device)
    positions = torch.arange(length, dtype=torch.float32, device=device) / config.rope_max_pos
    angles = grid[None, :] * (positions[:, None] * 2 - 1)  # (T, inner/2)
    cos, sin = angles.cos(), angles.sin()
    if config.rope_type == "split":
        shape = (1, length, config.num_heads, config.head_dim // 2)
        return cos.reshape(shape).to(dtype), sin.reshape(shape).to(dtype)
    shape = (1, length, config.num_heads, config.head_dim)
    cos = cos.repeat_interleave(2, dim=-1).reshape(shape)
    sin = sin.repeat_interleave(2, dim=-1).reshape(shape)
    return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_type: str) -> torch.Tensor:
    """Rotate (B, T, H, D) by the tables of `rope_tables`."""
    if rope_type == "split":
        first, second = x.chunk(2, dim=-1)  # (B, T, H, D/2) each
        return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    pairs = x.unflatten(-1, (-1, 2))  # (B, T, H, D/2, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


class ConnectorAttention(nn.Module):
    """Self-attention with q/k RMSNorm, rope and optional per-head gates: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ConnectorConfig, dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        self.config = config
        dim = config.inner_dim
        factory = {"dtype": dtype, "device": device}
        self.q_norm = nn.RMSNorm(dim, eps=NORM_EPS, **factory)
        self.k_norm = nn.RMSNorm(dim, eps=NORM_EPS, **factory)
        self.to_q = Linear(dim, dim, **factory)
        self.to_k = Linear(dim, dim, **factory)
        self.to_v = Linear(dim, dim, **factory)
        self.to_gate_logits = Linear(dim, config.num_heads, **factory) if config.gated_attention else None
        self.to_out = nn.Sequential(Linear(dim, dim, **factory), nn.Identity())

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (B, T, C); rope tables; mask (B, T) bool of attendable keys or None for all."""
        b, t, _ = x.shape
        heads, head_dim = self.config.num_heads, self.config.head_dim
        q = self.q_norm(self.to_q(x)).view(b, t, heads, head_dim)
        k = self.k_norm(self.to_k(x)).view(b, t, heads, head_dim)
        v = self.to_v(x).view(b, t, heads, head_dim)
        q = apply_rope(q, *rope, self.config.rope_type)
        k = apply_rope(k, *rope, self.config.rope_type)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T)
        out = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask
        ).transpose(1, 2)  # (B, T, H, D)
        if self.to_gate_logits is not None:
            out = out * (2.0 * torch.sigmoid(self.to_gate_logits(x)))[..., None]
        return self.to_out(out.reshape(b, t, heads * head_dim))


class _GeluTanhProjection(nn.Module):
    def __init__(
        self, dim_in: int, dim_out: int, bias: bool, dtype: torch.dtype | None, device: torch.device | str | None
    ):
        super().__init__()
        self.proj = Linear(dim_in, dim_out, bias=bias, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """Linear -> GELU(tanh) -> Linear with 4x hidden width: (B, T, C) -> (B, T, C)."""

    def __init__(
        self, dim: int, dtype: torch.dtype | None, device: torch.device | str | None, bias: bool = True
    ) -> None:
        super().__init__()
        hidden = dim * FF_MULT
        self.net = nn.Sequential(
            _GeluTanhProjection(dim, hidden, bias, dtype, device),
            nn.Identity(),
            Linear(hidden, dim, bias=bias, dtype=dtype, device=device),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConnectorBlock(nn.Module):
    """Pre-norm (weightless RMS) self-attention and feed-forward, both residual: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ConnectorConfig, dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        self.attn1 = ConnectorAttention(config, dtype, device)
        self.ff = FeedForward(config.inner_dim, dtype, device, bias=config.ff_bias)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = x + self.attn1(_rms_norm(x), rope, mask)
        return x + self.ff(_rms_norm(x))


class EmbeddingsConnector(nn.Module):
    """Text features (B, T, C) and their valid-token mask (B, T) -> connector output (B, T, C) and its mask (B, T).

    With registers (every published checkpoint) the output mask is all ones: padding became registers.
    """

    def __init__(
        self, config: ConnectorConfig, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.transformer_1d_blocks = nn.ModuleList(
            [ConnectorBlock(config, dtype, device) for _ in range(config.num_layers)]
        )
        if config.num_registers:
            # (R, C); the checkpoint provides the values
            self.learnable_registers = nn.Parameter(
                torch.empty(config.num_registers, config.inner_dim, dtype=dtype, device=device)
            )
        else:
            self.learnable_registers = None

    def _fill_registers(self, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Pack each sample's valid tokens to the front and put registers behind them: (B, T, C)."""
        b, t, c = features.shape
        # stable sort on "is padding" keeps the valid tokens in order, then the padded slots
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # (B, T)
        packed = features.gather(1, order[..., None].expand(b, t, c))
        slots = torch.arange(t, device=features.device)
        registers = self.learnable_registers[slots % self.config.num_registers].to(features.dtype)  # (T, C)
        is_token = slots[None, :] < valid.sum(dim=1, keepdim=True)  # (B, T)
        return torch.where(is_token[..., None], packed, registers[None])

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = mask.bool()
        attend: torch.Tensor | None = valid
        if self.learnable_registers is not None:
            features = self._fill_registers(features, valid)
            valid = torch.ones_like(valid)
            attend = None
        rope = rope_tables(self.config, features.shape[1], features.dtype, features.device)
        x = features
        for block in self.transformer_1d_blocks:
            x = block(x, rope, attend)
        x = _rms_norm(x)
        return x * valid[..., None].to(x.dtype), valid.to(torch.int64)
