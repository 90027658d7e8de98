"""Text encoder: Gemma-3 text backbone, multi-layer feature extractor and video / audio embeddings connectors."""

from .config import TextEmbeddingsConfig
from .embeddings import CHECKPOINT_PREFIXES, TextConnectors, TextEmbeddings, TextEmbeddingsProcessor
from .features import TextFeatureExtractor
from .gemma import (
    GemmaPromptTokenizer,
    GemmaTextEncoder,
    encode_prompts,
    gemma_text_config,
    gemma_text_state_dict,
)

__all__ = [
    "CHECKPOINT_PREFIXES",
    "GemmaPromptTokenizer",
    "GemmaTextEncoder",
    "TextConnectors",
    "TextEmbeddings",
    "TextEmbeddingsConfig",
    "TextEmbeddingsProcessor",
    "TextFeatureExtractor",
    "encode_prompts",
    "gemma_text_config",
    "gemma_text_state_dict",
]
