"""Feature extractor ("text embedding projection"): all Gemma hidden states -> one text feature per token.

The L = num_hidden_layers + 1 hidden states (embeddings included) are stacked to (B, T, D, L), normalised and
flattened to (B, T, D*L) (index d*L + l), then projected by linear layers whose keys are the checkpoint's
``text_embedding_projection.*`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..modules import Linear
from .config import FeatureExtractorKind, TextEmbeddingsConfig

__all__ = ["TextFeatureExtractor", "stack_hidden_states"]

NORM_EPS = 1e-6
MINMAX_SCALE = 8.0  # LTX-2 maps each sample's per-layer value range onto [-8, 8] around the mean


def stack_hidden_states(hidden_states: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Tuple of L tensors (B, T, D) -> (B, T, D, L); a stacked tensor passes through."""
    if isinstance(hidden_states, torch.Tensor):
        return hidden_states
    return torch.stack(tuple(hidden_states), dim=-1)


def minmax_normalise(stacked: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """LTX-2: per sample and layer, (x - mean) / range * 8 over the valid tokens; (B, T, D, L) -> (B, T, D*L).

    ``valid`` (B, T) bool. Padded positions come out as zeros.
    """
    b, t, d, _ = stacked.shape
    keep = valid[:, :, None, None]
    count = (valid.sum(dim=1) * d).view(b, 1, 1, 1)
    mean = stacked.masked_fill(~keep, 0.0).sum(dim=(1, 2), keepdim=True) / (count + NORM_EPS)  # (B, 1, 1, L)
    low = stacked.masked_fill(~keep, math.inf).amin(dim=(1, 2), keepdim=True)
    high = stacked.masked_fill(~keep, -math.inf).amax(dim=(1, 2), keepdim=True)
    normed = MINMAX_SCALE * (stacked - mean) / (high - low + NORM_EPS)
    return normed.reshape(b, t, -1).masked_fill(~valid[..., None], 0.0)


def per_token_rms_normalise(stacked: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """LTX-2.3: RMS-normalise each token of each layer over D; (B, T, D, L) -> (B, T, D*L), padding zeroed."""
    b, t, _, _ = stacked.shape
    normed = stacked * torch.rsqrt(stacked.square().mean(dim=2, keepdim=True) + NORM_EPS)
    return normed.reshape(b, t, -1).masked_fill(~valid[..., None], 0.0)


class TextFeatureExtractor(nn.Module):
    """Gemma hidden states L x (B, T, D) and mask (B, T) -> video features (B, T, Cv), audio features (B, T, Ca).

    LTX-2 (``aggregate``): one projection ``aggregate_embed`` (D*L -> D, no bias) feeds both streams.
    LTX-2.3 (``dual``): ``video_aggregate_embed`` / ``audio_aggregate_embed`` (with bias), each fed the normalised
    features scaled by sqrt(out_width / D). Normalisation runs in float32 whatever the weights' dtype.
    """

    def __init__(
        self,
        config: TextEmbeddingsConfig,
        gemma_hidden_size: int,
        gemma_num_layers: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.kind = config.kind
        self.embedding_dim = gemma_hidden_size
        flat = gemma_hidden_size * (gemma_num_layers + 1)
        factory = {"dtype": dtype, "device": device}
        if config.kind is FeatureExtractorKind.AGGREGATE:
            if config.caption_channels != gemma_hidden_size:
                raise ValueError(f"caption_channels={config.caption_channels!r}, expected {gemma_hidden_size!r}")
            self.aggregate_embed = Linear(flat, gemma_hidden_size, bias=False, **factory)
        else:
            self.video_aggregate_embed = Linear(flat, config.video_dim, bias=True, **factory)
            self.audio_aggregate_embed = Linear(flat, config.audio_dim, bias=True, **factory)

    @property
    def output_widths(self) -> tuple[int, int]:
        """(video, audio) feature widths."""
        if self.kind is FeatureExtractorKind.AGGREGATE:
            return self.aggregate_embed.out_features, self.aggregate_embed.out_features
        return self.video_aggregate_embed.out_features, self.audio_aggregate_embed.out_features

    def forward(
        self, hidden_states: Sequence[torch.Tensor] | torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = stack_hidden_states(hidden_states).float()  # (B, T, D, L)
        valid = mask.bool()
        if self.kind is FeatureExtractorKind.AGGREGATE:
            weight_dtype = self.aggregate_embed.weight.dtype
            features = self.aggregate_embed(minmax_normalise(stacked, valid).to(weight_dtype))
            return features, features
        normed = per_token_rms_normalise(stacked, valid)
        projected = []
        for embed in (self.video_aggregate_embed, self.audio_aggregate_embed):
            scale = math.sqrt(embed.out_features / self.embedding_dim)
            projected.append(embed((normed * scale).to(embed.weight.dtype)))
        return projected[0], projected[1]
