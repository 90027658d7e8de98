"""Self-attention strength matrices for conditioning tokens appended after the generated tokens.

Layout of the (B, N + M, N + M) matrix when M new tokens join N existing ones (the first N_gen generated):
generated <-> new tokens get the per-token strength, new <-> new 1, earlier conditioning groups <-> new 0, and the
existing N x N block is kept (all ones when there was no matrix yet).
"""

from __future__ import annotations

import torch

__all__ = ["append_attention_strength", "per_token_strength"]


def per_token_strength(
    strength: float | torch.Tensor, tokens: int, batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A strength as (B, M): a scalar everywhere, (M,) per token for every sample, or (B, M) / (1, M)."""
    if not isinstance(strength, torch.Tensor) or strength.ndim == 0:
        return torch.full((batch, tokens), float(strength), device=device, dtype=dtype)
    values = strength.to(device=device, dtype=dtype)
    if values.ndim == 1 and values.shape[0] == tokens:
        return values.unsqueeze(0).expand(batch, -1)
    if values.ndim == 2 and values.shape[1] == tokens and values.shape[0] in (1, batch):
        return values.expand(batch, -1)
    raise ValueError(f"attention strength shape {tuple(values.shape)}, expected (), ({tokens},) or ({batch}, {tokens})")


def append_attention_strength(
    existing: torch.Tensor | None,
    existing_tokens: int,
    generated_tokens: int,
    strength: torch.Tensor,
) -> torch.Tensor:
    """(B, N, N) or None -> (B, N + M, N + M) for M new tokens with per-token strength (B, M)."""
    batch, new_tokens = strength.shape
    total = existing_tokens + new_tokens
    mask = torch.zeros((batch, total, total), device=strength.device, dtype=strength.dtype)
    mask[:, :existing_tokens, :existing_tokens] = 1.0 if existing is None else existing
    mask[:, existing_tokens:, existing_tokens:] = 1.0
    mask[:, :generated_tokens, existing_tokens:] = strength.unsqueeze(1)  # generated tokens attending new ones
    mask[:, existing_tokens:, :generated_tokens] = strength.unsqueeze(2)  # new tokens attending generated ones
    return mask
