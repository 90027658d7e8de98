"""Gemma hidden states -> the video / audio text embeddings the transformer cross-attends to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .config import TextEmbeddingsConfig
from .connector import EmbeddingsConnector
from .features import TextFeatureExtractor

__all__ = ["CHECKPOINT_PREFIXES", "TextConnectors", "TextEmbeddings", "TextEmbeddingsProcessor"]

# checkpoint key prefix -> module key prefix (single-file LTX-2 / LTX-2.3 checkpoints)
CHECKPOINT_PREFIXES: dict[str, str] = {
    "text_embedding_projection.": "feature_extractor.",
    "model.diffusion_model.video_embeddings_connector.": "video_connector.",
    "model.diffusion_model.audio_embeddings_connector.": "audio_connector.",
}


class TextEmbeddings(NamedTuple):
    """video (B, T, Cv), audio (B, T, Ca), mask (B, T) int64 of tokens to attend (all ones with registers)."""

    video: torch.Tensor
    audio: torch.Tensor
    mask: torch.Tensor


class TextConnectors(nn.Module):
    """The video and audio connectors alone (LTX-2.5 keeps them in the transformer file, the projection in the text
    encoder file): module keys ``video_connector.*`` / ``audio_connector.*``."""

    def __init__(
        self, config: TextEmbeddingsConfig, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.video_connector = EmbeddingsConnector(config.video_connector, dtype, device)
        self.audio_connector = EmbeddingsConnector(config.audio_connector, dtype, device)


class TextEmbeddingsProcessor(nn.Module):
    """Feature extractor + video and audio connectors: L x (B, T, D) hidden states, mask (B, T) -> `TextEmbeddings`.

    Module keys: ``feature_extractor.*``, ``video_connector.*``, ``audio_connector.*`` (see `CHECKPOINT_PREFIXES`).
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
        self.config = config
        self.feature_extractor = TextFeatureExtractor(config, gemma_hidden_size, gemma_num_layers, dtype, device)
        self.video_connector = EmbeddingsConnector(config.video_connector, dtype, device)
        self.audio_connector = EmbeddingsConnector(config.audio_connector, dtype, device)

    @classmethod
    def from_parts(cls, feature_extractor: TextFeatureExtractor, connectors: TextConnectors) -> TextEmbeddingsProcessor:
        """Assemble from a loaded text projection and loaded connectors (two files); nothing is copied."""
        config = connectors.config
        if feature_extractor.kind is not config.kind:
            raise ValueError(f"text projection kind={feature_extractor.kind.value!r}, expected {config.kind.value!r} "
                             "(the connectors' config)")
        widths = (feature_extractor.output_widths, (config.video_features_dim, config.audio_features_dim))
        if widths[0] != widths[1]:
            raise ValueError(f"text projection output widths={widths[0]!r}, expected {widths[1]!r} (the connectors)")
        processor = cls.__new__(cls)
        nn.Module.__init__(processor)
        processor.config = config
        processor.feature_extractor = feature_extractor
        processor.video_connector = connectors.video_connector
        processor.audio_connector = connectors.audio_connector
        return processor

    def forward(self, hidden_states: Sequence[torch.Tensor] | torch.Tensor, mask: torch.Tensor) -> TextEmbeddings:
        video_features, audio_features = self.feature_extractor(hidden_states, mask)
        video, video_mask = self.video_connector(video_features, mask)
        audio, _ = self.audio_connector(audio_features, mask)
        return TextEmbeddings(video, audio, video_mask)
