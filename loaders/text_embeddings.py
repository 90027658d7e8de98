"""The text path after Gemma when its parts come from two files (LTX-2.5), and the check that they belong together.

LTX-2.5 ships the text projection inside the Gemma 4 text encoder file (``text_embedding_projection.*``) and the
connectors inside the transformer file (``model.diffusion_model.{video,audio}_embeddings_connector.*``), whose
``config`` also describes both. `load_split_text_embeddings` loads each part strictly and assembles the usual
`TextEmbeddingsProcessor`, after `check_text_encoder_generation` (headers only: a Gemma 3 encoder with an
LTX-2.5 transformer, or another ``gemma_version`` than the transformer's ``gemma_source_checkpoint``, is refused with
both named).
"""

from __future__ import annotations

import os

import torch

from .component_loader import LoadedComponent, load_component
from .text_encoder_generation import check_text_encoder_generation

__all__ = ["load_split_text_embeddings"]


def load_split_text_embeddings(
    text_encoder_path: str | os.PathLike[str],
    transformer_path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> LoadedComponent:
    """The text projection of ``text_encoder_path`` and the connectors of ``transformer_path`` (whose ``config``
    describes both) as one `TextEmbeddingsProcessor`; both loads are strict, the generations are checked first."""
    from ..aiprod_core.text_encoder import TextEmbeddingsProcessor

    check_text_encoder_generation(text_encoder_path, transformer_path)
    connectors = load_component(transformer_path, "text_connectors", dtype=dtype, device=device)
    projection = load_component(text_encoder_path, "text_projection", dtype=dtype, device=device,
                                config=connectors.config)
    processor = TextEmbeddingsProcessor.from_parts(projection.module, connectors.module)
    return LoadedComponent(module=processor.eval(), layout=f"{projection.layout} + {connectors.layout}",
                           config=connectors.config)
