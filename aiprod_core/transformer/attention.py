"""Multi-head attention with RMS q/k norm, rotary embedding and optional per-head gates; the feed-forward."""

from __future__ import annotations

import torch
from torch import nn

from ..modules import Linear
from .rope import HeadRotation, RotaryTables, apply_rotary, rotate_heads

__all__ = ["Attention", "FeedForward"]


class Attention(nn.Module):
    """Attention of x (B, T, query_dim) over context (B, S, context_dim) -> (B, T, query_dim).

    ``heads`` x ``head_dim`` inner width; q and k are RMS-normalised over the whole inner width, then rotated.
    With ``gated`` (LTX-2.3) each head's output is scaled by 2 sigmoid(gate logits of x). ``value_only`` is the
    STG perturbation: the attention weights are skipped and the value projection passes through. ``kv`` takes the
    keys and values of a context computed beforehand by `project_kv` (the text keys / values shared by the passes
    and steps that see the same prompt).
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        *,
        context_dim: int | None = None,
        rope_type: str = "split",
        gated: bool = False,
        norm_eps: float = 1e-6,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        inner = heads * head_dim
        context_dim = query_dim if context_dim is None else context_dim
        factory = {"dtype": dtype, "device": device}
        self.heads, self.head_dim, self.rope_type = heads, head_dim, rope_type
        self.q_norm = nn.RMSNorm(inner, eps=norm_eps, **factory)
        self.k_norm = nn.RMSNorm(inner, eps=norm_eps, **factory)
        self.to_q = Linear(query_dim, inner, **factory)
        self.to_k = Linear(context_dim, inner, **factory)
        self.to_v = Linear(context_dim, inner, **factory)
        self.to_gate_logits = Linear(query_dim, heads, **factory) if gated else None
        self.to_out = nn.ModuleList([Linear(inner, query_dim, **factory)])

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        rope: RotaryTables | HeadRotation | None = None,
        key_rope: RotaryTables | HeadRotation | None = None,
        value_only: bool = False,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``mask``: additive bias broadcastable to (B, H, T, S); ``key_rope`` defaults to ``rope`` (both given as
        layout tables, or both as ``HeadRotation``, the split layout prepared once per forward pass); ``kv``:
        `project_kv` of the context (B, S, inner) each, used instead of ``context``."""
        if kv is not None:
            if value_only:
                raise ValueError("value_only=True with precomputed kv: the value pass-through needs the context rows")
            keys, values = kv
            out = self._attend(x, None, values, mask, rope, key_rope, keys)
        else:
            context = x if context is None else context
            values = self.to_v(context)  # (B, S, inner)
            out = values if value_only else self._attend(x, context, values, mask, rope, key_rope)
        if self.to_gate_logits is not None:
            batch, tokens, _ = out.shape
            gates = 2.0 * torch.sigmoid(self.to_gate_logits(x))  # (B, T, H)
            out = (out.view(batch, tokens, self.heads, self.head_dim) * gates.unsqueeze(-1)).view(batch, tokens, -1)
        return self.to_out[0](out)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised keys, values) of context (B, S, context_dim), each (B, S, inner), before any rotation."""
        return self.k_norm(self.to_k(context)), self.to_v(context)

    def _attend(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        values: torch.Tensor,
        mask: torch.Tensor | None,
        rope: RotaryTables | HeadRotation | None,
        key_rope: RotaryTables | HeadRotation | None,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        queries = self.q_norm(self.to_q(x))  # (B, T, inner)
        if keys is None:
            keys = self.k_norm(self.to_k(context))  # (B, S, inner)
        key_rope = rope if key_rope is None else key_rope
        batch = x.shape[0]
        if rope is not None and not isinstance(rope, HeadRotation):
            queries = apply_rotary(queries, rope, self.rope_type)
            keys = apply_rotary(keys, key_rope, self.rope_type)
        q, k, v = (self._heads(t, batch) for t in (queries, keys, values))  # (B, H, T|S, head_dim) views
        if isinstance(rope, HeadRotation):
            q, k = rotate_heads(q, rope), rotate_heads(k, key_rope)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, head_dim)
        return out.transpose(1, 2).reshape(batch, -1, self.heads * self.head_dim)

    def _heads(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """(B', S, inner) -> (B, H, S, head_dim) view; a batch-1 tensor (keys / values shared by every row) is
        broadcast over the batch without a copy."""
        heads = t.view(t.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)
        return heads if t.shape[0] == batch else heads.expand(batch, -1, -1, -1)


class _GeluProjection(nn.Module):
    """Linear then tanh-approximate GELU."""

    def __init__(
        self, dim_in: int, dim_out: int, *, bias: bool, dtype: torch.dtype | None, device: torch.device | str | None
    ):
        super().__init__()
        self.proj = Linear(dim_in, dim_out, bias=bias, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """x (B, T, dim) -> (B, T, dim) through a 4 x dim tanh-GELU hidden layer (``bias=False``: LTX-2.5's video FF)."""

    def __init__(
        self,
        dim: int,
        mult: int = 4,
        *,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        # Index 1 is an (empty) dropout slot in the checkpoint layout: keys are net.0.proj.* and net.2.*.
        self.net = nn.Sequential(
            _GeluProjection(dim, dim * mult, bias=bias, dtype=dtype, device=device),
            nn.Identity(),
            Linear(dim * mult, dim, bias=bias, dtype=dtype, device=device),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
