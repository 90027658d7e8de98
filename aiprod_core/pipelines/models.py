"""The already-built modules a pipeline runs, and the host that places them on the compute device stage by stage.

A pipeline never loads weights: the caller (ComfyUI's model management, the loaders, a test) builds the modules
and hands them over in `PipelineModels`. Each stage asks the `ModelHost` to ``use`` a module for the duration of
that stage only, so a host that offloads can keep one large model on the accelerator at a time.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

__all__ = ["LocalHost", "ModelHost", "OffloadingHost", "PipelineModels"]

logger = logging.getLogger(__name__)


class ModelHost(Protocol):
    """Where stages compute: ``device`` for latents and noise; ``use`` makes a module ready there for a stage."""

    @property
    def device(self) -> torch.device: ...

    def use(self, module: nn.Module) -> contextlib.AbstractContextManager[nn.Module]: ...


class LocalHost:
    """Every module already lives on ``device``: ``use`` is a no-op."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    @contextlib.contextmanager
    def use(self, module: nn.Module) -> Iterator[nn.Module]:
        yield module


class OffloadingHost:
    """Moves a module to ``device`` for a stage and back to ``offload_device`` after it, then frees the cache."""

    def __init__(self, device: torch.device | str, offload_device: torch.device | str = "cpu") -> None:
        self._device = torch.device(device)
        self.offload_device = torch.device(offload_device)

    @property
    def device(self) -> torch.device:
        return self._device

    @contextlib.contextmanager
    def use(self, module: nn.Module) -> Iterator[nn.Module]:
        logger.debug("loading %s to %s", type(module).__name__, self._device)
        module.to(self._device)
        try:
            yield module
        finally:
            module.to(self.offload_device)
            gc.collect()
            if self._device.type == "cuda":
                torch.cuda.empty_cache()


@dataclass
class PipelineModels:
    """The modules of one generation, built by the caller (a stage only touches the ones it needs).

    transformer: the stage-1 audio+video transformer (velocity model, ``AVTransformer``; for IC-LoRA the one with
        the IC-LoRA fused; for the distilled pipeline the distilled checkpoint).
    refiner: the stage-2 transformer of the two-stage pipelines (the base model with the distilled LoRA fused;
        for IC-LoRA the base model without the IC-LoRA); None: ``transformer`` refines too.
    video_encoder / video_decoder: the video VAE halves (the encoder's statistics also drive the upsampler).
    audio_decoder / vocoder: latent -> mel -> waveform.
    upsampler: the x2 spatial latent upsampler (two-stage pipelines).
    dtype: the dtype latent states are kept in (the transformer's compute dtype).
    """

    transformer: nn.Module | None = None
    video_encoder: nn.Module | None = None
    video_decoder: nn.Module | None = None
    audio_decoder: nn.Module | None = None
    vocoder: nn.Module | None = None
    upsampler: nn.Module | None = None
    refiner: nn.Module | None = None
    dtype: torch.dtype = torch.bfloat16

    def require(self, *names: str) -> None:
        """Raise ``ValueError`` naming every module in ``names`` that is missing."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"missing models={missing!r}, expected modules for {list(names)!r}")

    def stage_2_transformer(self) -> nn.Module:
        module = self.refiner if self.refiner is not None else self.transformer
        if module is None:
            raise ValueError("transformer=None, expected a transformer for stage 2")
        return module
