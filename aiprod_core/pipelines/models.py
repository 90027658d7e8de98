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

from ..transformer.streaming import BlockStreamer, find_blocks

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
    """Moves a module to ``device`` for a stage and back to ``offload_device`` after it, then frees the cache.

    ``stream_blocks``: a module with a block list (the transformer) is not moved whole; its blocks stream from
    host memory around each block's forward (`BlockStreamer`, low-VRAM mode) with the first ``resident_blocks``
    kept on the device. Other modules are moved as usual.
    """

    def __init__(self, device: torch.device | str, offload_device: torch.device | str = "cpu", *,
                 stream_blocks: bool = False, resident_blocks: int = 0, prefetch: int = 1) -> None:
        self._device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.streamer = BlockStreamer(resident_blocks=resident_blocks, prefetch=prefetch) if stream_blocks else None

    @property
    def device(self) -> torch.device:
        return self._device

    @contextlib.contextmanager
    def use(self, module: nn.Module) -> Iterator[nn.Module]:
        if self.streamer is not None and find_blocks(module, self.streamer.blocks_attr) is not None:
            logger.debug("streaming the blocks of %s to %s", type(module).__name__, self._device)
            module.to(self.offload_device)
            try:
                with self.streamer.attached(module, self._device):
                    yield module
            finally:
                self._free_cache()
            return
        logger.debug("loading %s to %s", type(module).__name__, self._device)
        module.to(self._device)
        try:
            yield module
        finally:
            module.to(self.offload_device)
            self._free_cache()

    def _free_cache(self) -> None:
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
    audio_encoder: waveform -> audio latent (the edit and audio-to-video pipelines encode existing audio).
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
    audio_encoder: nn.Module | None = None
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
