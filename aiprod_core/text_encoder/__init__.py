"""Text encoder: Gemma-3 text backbone, multi-layer feature extractor and video / audio embeddings connectors."""

from .config import TextEmbeddingsConfig
from .embeddings import CHECKPOINT_PREFIXES, TextEmbeddings, TextEmbeddingsProcessor
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
    "TextEmbeddings",
    "TextEmbeddingsConfig",
    "TextEmbeddingsProcessor",
    "encode_prompts",
    "gemma_text_config",
    "gemma_text_state_dict",
]
