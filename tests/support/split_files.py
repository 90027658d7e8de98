"""Converters from a single-file LTX checkpoint to the split text-encoder files users have.

- ``embeddings_connector``: Kijai's LTX-2 ``ltx-2-19b-embeddings_connector_*`` (text_encoders/): the text
  projection and both connectors, the connectors under ``model.diffusion_model.`` or bare;
- ``comfy_te_naming``: the same parts in ComfyUI's own LTX-2 text-encoder naming (lt.py: the projection is one
  Linear ``text_embedding_projection.weight``, the connectors bare);
- ``text_projection``: Kijai's LTX-2.3 ``ltx-2.3_text_projection_bf16``: ``text_embedding_projection.*`` alone;
- ``transformer_only``: the transformer (with the connectors ComfyUI runs inside it), prefixed or bare, with the
  checkpoint's ``config`` metadata.

Each returns (tensors, metadata); ``with_config`` keeps the checkpoint's ``config`` / ``model_version`` metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["comfy_te_naming", "embeddings_connector", "read_checkpoint", "text_projection", "transformer_only",
           "write"]

DIT = "model.diffusion_model."
PROJECTION = "text_embedding_projection."
CONNECTORS = (DIT + "video_embeddings_connector.", DIT + "audio_embeddings_connector.")

Tensors = dict[str, torch.Tensor]


def read_checkpoint(path: Path) -> tuple[Tensors, dict[str, str]]:
    with safe_open(str(path), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})


def _metadata(metadata: dict[str, str], with_config: bool) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k in ("config", "model_version")} if with_config else {}


def embeddings_connector(tensors: Tensors, metadata: dict[str, str], prefixed: bool = True,
                         with_config: bool = True) -> tuple[Tensors, dict[str, str]]:
    out = {k: v for k, v in tensors.items() if k.startswith(PROJECTION)}
    for key, value in tensors.items():
        if key.startswith(CONNECTORS):
            out[key if prefixed else key.removeprefix(DIT)] = value
    return out, _metadata(metadata, with_config)


def comfy_te_naming(tensors: Tensors, metadata: dict[str, str]) -> tuple[Tensors, dict[str, str]]:
    out, meta = embeddings_connector(tensors, metadata, prefixed=False, with_config=False)
    out[PROJECTION + "weight"] = out.pop(PROJECTION + "aggregate_embed.weight")
    return out, meta


def text_projection(tensors: Tensors, metadata: dict[str, str],
                    with_config: bool = False) -> tuple[Tensors, dict[str, str]]:
    return {k: v for k, v in tensors.items() if k.startswith(PROJECTION)}, _metadata(metadata, with_config)


def transformer_only(tensors: Tensors, metadata: dict[str, str], prefixed: bool = True,
                     with_config: bool = True) -> tuple[Tensors, dict[str, str]]:
    out = {(k if prefixed else k.removeprefix(DIT)): v for k, v in tensors.items() if k.startswith(DIT)}
    meta = _metadata(metadata, with_config)
    if "config" in meta:  # a transformer-only file describes the transformer alone
        meta["config"] = json.dumps({"transformer": json.loads(meta["config"])["transformer"]})
    return out, meta


def write(path: Path, made: tuple[Tensors, dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, metadata = made
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or None)
    return path
