"""The duration head: connector outputs -> clip length in seconds, and that length as a valid frame count.

The video (B, S, Dv) and audio (B, S, Da) connector outputs of a prompt are projected to a shared pooler width and
tagged with a learned per-modality embedding; learned queries cross-attend to all of those tokens (no mask: the
connectors replaced the padding with registers); a tanh-GELU MLP turns the pooled queries into a log-duration,
returned as seconds (``exp``). State-dict keys are the file's without its ``duration_head.`` prefix; the pooler's
attention keeps ``nn.MultiheadAttention``'s layout (``in_proj_weight`` = [q; k; v], ``out_proj``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..modules import Linear

__all__ = ["DurationHead", "DurationHeadConfig", "frames_for_seconds"]

FRAMES_PER_LATENT = 8  # the video VAE's temporal factor: frame counts are 8 k + 1


def _reject(key: str, actual: object, expected: object) -> ValueError:
    return ValueError(f"{key}={actual!r}, expected {expected!r}")


def _positive(section: dict[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _reject(key, value, "a positive int")
    return value


@dataclass(frozen=True)
class DurationHeadConfig:
    """Widths of the duration head: the connectors' (``transformer.cross_attention_dim`` /
    ``audio_cross_attention_dim``) and the head's own (``duration_head`` section, reference defaults)."""

    video_dim: int
    audio_dim: int
    pooler_dim: int = 256
    num_queries: int = 1
    num_heads: int = 4
    mlp_hidden: int = 256

    @classmethod
    def from_metadata(cls, config: dict[str, Any]) -> DurationHeadConfig:
        """From the file's ``config`` metadata: ``transformer`` widths and an optional ``duration_head`` section
        (``pooler_hidden_dim``, ``num_queries``, ``num_pooler_heads``, ``mlp_hidden``: the reference's names)."""
        transformer = config.get("transformer", {})
        head = config.get("duration_head", {})
        made = cls(
            video_dim=_positive(transformer, "cross_attention_dim", 4096),
            audio_dim=_positive(transformer, "audio_cross_attention_dim", 2048),
            pooler_dim=_positive(head, "pooler_hidden_dim", 256),
            num_queries=_positive(head, "num_queries", 1),
            num_heads=_positive(head, "num_pooler_heads", 4),
            mlp_hidden=_positive(head, "mlp_hidden", 256),
        )
        if made.pooler_dim % made.num_heads:
            raise _reject("num_pooler_heads", made.num_heads, f"a divisor of pooler_hidden_dim {made.pooler_dim}")
        return made


class _PoolerAttention(nn.Module):
    """Multi-head attention of queries (B, Q, E) over tokens (B, S, E) -> (B, Q, E), ``nn.MultiheadAttention``'s
    weights: ``in_proj_weight`` (3 E, E), ``in_proj_bias`` (3 E), ``out_proj`` (E -> E)."""

    def __init__(self, dim: int, heads: int, *, dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim, dtype=dtype, device=device))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim, dtype=dtype, device=device))
        self.out_proj = Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = nn.functional.linear(queries, w_q, b_q)
        k, v = nn.functional.linear(tokens, w_k, b_k), nn.functional.linear(tokens, w_v, b_v)
        batch, count, dim = q.shape
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, H, *, E / H)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, H, Q, E / H)
        return self.out_proj(out.transpose(1, 2).reshape(batch, count, dim))


class _AttentionPooler(nn.Module):
    def __init__(self, config: DurationHeadConfig, *, dtype: torch.dtype | None, device: torch.device | str | None):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.empty(config.num_queries, config.pooler_dim, dtype=dtype,
                                                     device=device))  # fmt: skip
        self.cross_attn = _PoolerAttention(config.pooler_dim, config.num_heads, dtype=dtype, device=device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        queries = self.query_tokens.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, Q, E)
        return self.cross_attn(queries.to(tokens.dtype), tokens)


class DurationHead(nn.Module):
    """Connector outputs video (B, S_v, Dv) and / or audio (B, S_a, Da) -> predicted clip length (B,) in seconds."""

    def __init__(
        self,
        config: DurationHeadConfig,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.config = config
        factory = {"dtype": dtype, "device": device}
        self.video_input_proj = Linear(config.video_dim, config.pooler_dim, **factory)
        self.video_modality_emb = nn.Parameter(torch.empty(config.pooler_dim, **factory))
        self.audio_input_proj = Linear(config.audio_dim, config.pooler_dim, **factory)
        self.audio_modality_emb = nn.Parameter(torch.empty(config.pooler_dim, **factory))
        self.attention_pooler = _AttentionPooler(config, **factory)
        self.mlp_hidden = Linear(config.pooler_dim * config.num_queries, config.mlp_hidden, **factory)
        self.mlp_out = Linear(config.mlp_hidden, 1, **factory)

    def forward(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> torch.Tensor:
        """Seconds (B,); the inputs are cast to the head's dtype (the text path may run wider)."""
        if video is None and audio is None:
            raise ValueError("video=None and audio=None, expected at least one connector output")
        dtype = self.mlp_out.weight.dtype
        groups = []
        for tokens, projection, tag, width in (
            (video, self.video_input_proj, self.video_modality_emb, self.config.video_dim),
            (audio, self.audio_input_proj, self.audio_modality_emb, self.config.audio_dim),
        ):
            if tokens is None:
                continue
            if tokens.ndim != 3 or tokens.shape[-1] != width:
                raise ValueError(f"connector output shape {tuple(tokens.shape)}, expected (B, S, {width})")
            groups.append(projection(tokens.to(dtype)) + tag)
        pooled = self.attention_pooler(torch.cat(groups, dim=1))  # (B, Q, E)
        hidden = nn.functional.gelu(self.mlp_hidden(pooled.flatten(1)), approximate="tanh")
        return self.mlp_out(hidden).squeeze(-1).exp()


def frames_for_seconds(
    seconds: float, frame_rate: float, min_seconds: float = 1.0, max_seconds: float = 20.0
) -> int:
    """A predicted length as a frame count: ``round(seconds * frame_rate)`` clamped to the frames of
    [min_seconds, max_seconds], then down to the VAE's 8 k + 1 grid (up to the next grid point when that leaves the
    minimum), as the reference's ``seconds_to_clamped_num_frames`` (LTX-2 pipelines 1.2.0). A window holding no
    8 k + 1 count is refused (the reference would return an off-grid count)."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise _reject("seconds", seconds, "a positive duration")
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise _reject("frame_rate", frame_rate, "a positive frame rate")
    if not 0 <= min_seconds < max_seconds:
        raise ValueError(f"min_seconds={min_seconds!r}, max_seconds={max_seconds!r}: expected 0 <= min < max")
    low = max(1, round(min_seconds * frame_rate))
    high = round(max_seconds * frame_rate)
    frames = max(low, min(round(seconds * frame_rate), high))
    frames = (frames - 1) // FRAMES_PER_LATENT * FRAMES_PER_LATENT + 1
    if frames < low:
        frames += FRAMES_PER_LATENT
    if not low <= frames <= high:
        raise ValueError(f"min_seconds={min_seconds!r}, max_seconds={max_seconds!r} at frame_rate={frame_rate!r}: "
                         f"frames {low}..{high} hold no {FRAMES_PER_LATENT} k + 1 frame count; widen the range")
    return frames
