"""The text path after Gemma when its parts come from two files (LTX-2.5), and the check that they belong together.

LTX-2.5 ships the text projection inside the Gemma 4 text encoder file (``text_embedding_projection.*``) and the
connectors inside the transformer file (``model.diffusion_model.{video,audio}_embeddings_connector.*``), whose
``config`` also describes both. `load_split_text_embeddings` loads each part strictly and assembles the usual
`TextEmbeddingsProcessor`. `check_text_encoder_pairing` reads only the two headers: the transformer's
``gemma_source_checkpoint.gemma_version`` must equal the text encoder's (ltx-core 1.2.0's
``_check_gemma_version``), and files of two different generations (a Gemma-3 / LTX-2.3 projection with an LTX-2.5
transformer) are refused with both generations named.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch

from .component_loader import LoadedComponent, load_component
from .detect import describe_file
from .errors import WrongComponentError
from .safetensors_header import read_header

__all__ = ["check_text_encoder_pairing", "gemma_version_of", "load_split_text_embeddings"]

logger = logging.getLogger(__name__)


def _json(metadata: dict[str, str], key: str) -> dict[str, Any]:
    try:
        value = json.loads(metadata.get(key, "{}"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def gemma_version_of(metadata: dict[str, str]) -> str | None:
    """The LTX Gemma stamp a file declares: a transformer's ``gemma_source_checkpoint.gemma_version``, a text
    encoder's ``gemma_config.gemma_version`` (None when it declares none, as LTX-2 / LTX-2.3 files)."""
    for key in ("gemma_source_checkpoint", "gemma_config"):
        version = _json(metadata, key).get("gemma_version")
        if isinstance(version, str) and version:
            return version
    return None


def check_text_encoder_pairing(transformer_path: str | os.PathLike[str],
                               text_encoder_path: str | os.PathLike[str]) -> None:
    """Raise `WrongComponentError` unless the text encoder file fits the transformer file (headers only)."""
    from ..aiprod_core.pipelines.validation import generation_family

    transformer, encoder = read_header(transformer_path), read_header(text_encoder_path)
    expected, found = gemma_version_of(transformer.metadata), gemma_version_of(encoder.metadata)
    if expected is not None and found is not None and expected != found:
        raise WrongComponentError(
            encoder.path, f"declares gemma_version={found!r}, but the transformer {transformer.path} was trained "
            f"with gemma_version={expected!r}.", "Use the text encoder released with that transformer.")
    model_generation = describe_file(transformer.path).generation
    encoder_generation = describe_file(encoder.path).generation
    model, text = generation_family(model_generation), generation_family(encoder_generation)
    if model is not None and text is not None and model != text:
        raise WrongComponentError(
            encoder.path, f"is a {encoder_generation} text encoder / projection (LTX-{text}), but the transformer "
            f"{transformer.path} is {model_generation} (LTX-{model}).",
            f"Use the text encoder released for LTX-{model}.")
    if expected is not None and found is None:
        logger.warning("%s declares no gemma_version; the transformer %s expects %r: not checked",
                       encoder.path, transformer.path, expected)


def load_split_text_embeddings(
    text_encoder_path: str | os.PathLike[str],
    transformer_path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> LoadedComponent:
    """The text projection of ``text_encoder_path`` and the connectors of ``transformer_path`` (whose ``config``
    describes both) as one `TextEmbeddingsProcessor`; both loads are strict, the pairing is checked first."""
    from ..aiprod_core.text_encoder import TextEmbeddingsProcessor

    check_text_encoder_pairing(transformer_path, text_encoder_path)
    connectors = load_component(transformer_path, "text_connectors", dtype=dtype, device=device)
    projection = load_component(text_encoder_path, "text_projection", dtype=dtype, device=device,
                                config=connectors.config)
    processor = TextEmbeddingsProcessor.from_parts(projection.module, connectors.module)
    return LoadedComponent(module=processor.eval(), layout=f"{projection.layout} + {connectors.layout}",
                           config=connectors.config)
