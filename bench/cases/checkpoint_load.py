"""Strict load of the transformer from a single-file checkpoint (bf16 on disk and in memory, CPU).

Ours: ``loaders.component_loader.load_component(path, "transformer")``. Reference: ltx-core's
``SingleGPUModelBuilder`` with ``LTXModelConfigurator`` and the ComfyUI renaming map, as ltx-pipelines'
``ModelLedger`` sets it up. The file (written once, seeded) lives in ``.cache/bench/``; both sides read it from
the page cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..common import REPO_ROOT, random_state_dict
from . import sizes

PREFIX = "model.diffusion_model."
CACHE = REPO_ROOT / ".cache" / "bench"


def _config() -> dict[str, object]:
    return {"transformer": sizes.checkpoint_transformer_section()}


def checkpoint_path() -> Path:
    """The benchmark checkpoint, written on first use (atomically, so a crash never leaves half a file)."""
    path = CACHE / f"transformer_{sizes.CHECKPOINT_LAYERS}x{sizes.CHECKPOINT_HEADS}_bf16.safetensors"
    if path.exists():
        return path
    from safetensors.torch import save_file

    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    config = _config()
    meta = AVTransformer(TransformerConfig.from_metadata(config), device="meta")
    tensors = {PREFIX + k: v.to(torch.bfloat16) for k, v in random_state_dict(meta).items()}
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    save_file(tensors, str(partial), metadata={"config": json.dumps(config), "model_version": "2.3.0"})
    partial.replace(path)
    return path


PAGE_BYTES = 4096


def resident(module: torch.nn.Module) -> torch.nn.Module:
    """Touch one element per memory page of every weight: a load is done when the weights are in memory (the
    reference returns tensors that still lie in the file mapping, read on first use)."""
    for tensor in module.state_dict().values():
        flat = tensor.reshape(-1)
        flat[:: max(1, PAGE_BYTES // flat.element_size())].sum()
    return module


def _into_page_cache(path: str, chunk: int = 64 * 1024 * 1024) -> None:
    """Read the file once (untimed, nothing kept): both sides then load from the page cache. Without it the first
    measurement of a run paid the disk read (1.5-2.2 s instead of ~0.3 s), always on the side that went first."""
    with open(path, "rb") as handle:
        while handle.read(chunk):
            pass


def prepare(side: str, variant: str) -> Callable[[], object]:
    path = str(checkpoint_path())
    _into_page_cache(path)
    if side == "ours":
        from aiprod.loaders.component_loader import load_component

        return lambda: resident(load_component(path, "transformer", dtype=torch.bfloat16, device="cpu").module)
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator

    builder = SingleGPUModelBuilder(
        model_path=path, model_class_configurator=LTXModelConfigurator, model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP
    )
    return lambda: resident(builder.build(device=torch.device("cpu"), dtype=torch.bfloat16))
