"""ComfyUI's side of a run: the `ModelHost` that places our modules through ComfyUI's model management, devices
and dtypes from ComfyUI's settings, and the progress / preview / interrupt hook of the sampling loop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import torch
from torch import nn

from ..aiprod_core.sampling import StepReport
from ..aiprod_core.transformer.streaming import BlockStreamer, find_blocks, max_resident_blocks, streaming_footprint

__all__ = [
    "WEIGHT_DTYPES",
    "WEIGHT_STREAMING",
    "ComfyModelHost",
    "StepProgress",
    "check_weight_streaming",
    "load_device",
    "mark_weight_streaming",
    "release",
    "weight_dtype",
    "weight_streaming_problem",
]

logger = logging.getLogger(__name__)

WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp32")
_NAMED = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_PATCHER_ATTR = "_aiprod_patcher"
WEIGHT_STREAMING = ("auto", "off", "on")
_STREAMING_ATTR = "_aiprod_weight_streaming"
STREAM_PREFETCH = 1  # blocks copied ahead of the one computing
# Device memory kept free for a stage's activations and attention workspace when deciding whether the transformer
# fits whole ("auto") and how many blocks may stay resident while streaming: a rough allowance, not a measurement.
WORKING_RESERVE_BYTES = 2 * 1024**3
_HOST_MEMORY_DEVICES = ("cpu", "mps")  # devices computing from system memory: nothing to stream
_NOTICES: set[str] = set()  # info messages already logged in this process
PREVIEW_MAX_SIZE = 512
PREVIEW_UPSCALE = 8  # latent cells -> preview pixels


def weight_dtype(choice: str, role: str = "transformer") -> torch.dtype:
    """The dtype of a weight-dtype choice; "auto" follows ComfyUI's settings for the ``role`` (transformer, vae,
    text_encoder) on its compute device (bf16 where supported, else float32)."""
    if choice in _NAMED:
        return _NAMED[choice]
    if choice != "auto":
        raise ValueError(f"weight_dtype={choice!r}, expected one of {list(WEIGHT_DTYPES)!r}")
    device = mm.get_torch_device()
    if role == "vae":  # the VAE's own device (``--cpu-vae``): bf16 only where that device supports it
        return mm.vae_dtype(mm.vae_device(), allowed_dtypes=[torch.bfloat16])
    if role == "text_encoder":
        dtype = mm.text_encoder_dtype(device)
        return dtype if dtype in (torch.bfloat16, torch.float32) else torch.bfloat16
    dtype = mm.unet_dtype(device, supported_dtypes=[torch.bfloat16, torch.float32])
    return dtype if dtype in (torch.bfloat16, torch.float32) else torch.bfloat16


def load_device() -> torch.device:
    """Where freshly loaded weights wait until a stage uses them (ComfyUI's offload device)."""
    return mm.unet_offload_device()


class ComfyModelHost:
    """`ModelHost` over ComfyUI's model management: each module is wrapped once in a ``ModelPatcher`` and loaded
    with ``load_models_gpu`` for a stage, so ComfyUI evicts it (and ours evict its models) like its own."""

    def __init__(self, device: torch.device | None = None, offload_device: torch.device | None = None) -> None:
        self._device = device if device is not None else mm.get_torch_device()
        self._offload = offload_device if offload_device is not None else mm.unet_offload_device()

    @property
    def device(self) -> torch.device:
        return self._device

    def patcher(self, module: nn.Module) -> comfy.model_patcher.ModelPatcher:
        """The module's one ``ModelPatcher`` (kept on the module so ComfyUI sees the same model every run)."""
        patcher = module.__dict__.get(_PATCHER_ATTR)
        if patcher is None or patcher.load_device != self._device:
            patcher = comfy.model_patcher.ModelPatcher(module, load_device=self._device,
                                                       offload_device=self._offload)
            module.__dict__[_PATCHER_ATTR] = patcher
        return patcher

    @contextlib.contextmanager
    def use(self, module: nn.Module) -> Iterator[nn.Module]:
        mm.throw_exception_if_processing_interrupted()
        streamer = self._streamer(module)
        if streamer is None:
            # Our layers are plain torch modules (no comfy cast ops): load them fully, never partially.
            mm.load_models_gpu([self.patcher(module)], force_full_load=True)
            yield module
            return
        try:
            with streamer.attached(module, self._device):
                yield module
        finally:
            mm.soft_empty_cache()

    def _streamer(self, module: nn.Module) -> BlockStreamer | None:
        """A `BlockStreamer` when ``module`` was marked for weight streaming and streams on this device (ComfyUI
        memory freed for its footprint, our own patcher unloaded), else None: load it whole."""
        choice = module.__dict__.get(_STREAMING_ATTR, "off")
        blocks = find_blocks(module)
        if choice == "off" or blocks is None:
            return None
        if self._device.type in _HOST_MEMORY_DEVICES:
            if choice == "on":
                _notice_once("cpu", f"weight_streaming='on' has no effect: ComfyUI computes on {self._device}, "
                             "which uses CPU memory, so the transformer runs as it is")
            return None
        if choice == "auto" and self._fits_whole(module):
            return None
        release(module)  # off the device if ComfyUI holds it there: the blocks stream from the offload copy
        if any(t.device.type != "cpu" for t in blocks.parameters()):
            _notice_once("offload", f"weight_streaming={choice!r}: the transformer's offload device is "
                         f"{self._offload}, not CPU memory, so it is loaded whole")
            return None
        footprint = streaming_footprint(module, 0, STREAM_PREFETCH)
        mm.free_memory(footprint + WORKING_RESERVE_BYTES, self._device)
        budget = mm.get_free_memory(self._device) - WORKING_RESERVE_BYTES
        resident = max_resident_blocks(module, budget, STREAM_PREFETCH)
        logger.info("weight streaming: %d of %d transformer blocks stream from CPU memory (%.2f GB of weights on "
                    "%s, %d blocks resident)", len(blocks) - resident, len(blocks),
                    streaming_footprint(module, resident, STREAM_PREFETCH) / 1e9, self._device, resident)
        return BlockStreamer(resident_blocks=resident, prefetch=STREAM_PREFETCH)

    def _fits_whole(self, module: nn.Module) -> bool:
        """The module is loaded on the device already, or fits there whole with the working reserve once ComfyUI
        has freed what it can."""
        patcher = module.__dict__.get(_PATCHER_ATTR)
        if patcher is not None and any(loaded.model is patcher for loaded in mm.current_loaded_models):
            return True
        needed = mm.module_size(module) + WORKING_RESERVE_BYTES
        mm.free_memory(needed, self._device)
        return mm.get_free_memory(self._device) >= needed


def mark_weight_streaming(module: nn.Module, choice: str) -> nn.Module:
    """Mark a transformer for `ComfyModelHost`: "auto" streams its blocks from CPU memory when it does not fit in
    VRAM whole, "on" always (on a GPU), "off" never."""
    module.__dict__[_STREAMING_ATTR] = check_weight_streaming(choice)
    return module


def weight_streaming_problem(choice: object) -> str | None:
    """What is wrong with a weight_streaming choice (None: it is one of `WEIGHT_STREAMING`)."""
    if choice in WEIGHT_STREAMING:
        return None
    return f"weight_streaming={choice!r}: expected one of {list(WEIGHT_STREAMING)!r}"


def check_weight_streaming(choice: str) -> str:
    """``choice`` when it is one of `WEIGHT_STREAMING`, else a ``ValueError`` naming it."""
    problem = weight_streaming_problem(choice)
    if problem is not None:
        raise ValueError(problem)
    return choice


def _notice_once(key: str, message: str) -> None:
    if key not in _NOTICES:
        _NOTICES.add(key)
        logger.info(message)


def release(module: nn.Module) -> None:
    """Unload ``module`` from ComfyUI's loaded models now (back to the offload device) and free the cache: the
    text encoder is done after encoding and should not hold accelerator memory while the transformer samples."""
    patcher = module.__dict__.get(_PATCHER_ATTR)
    if patcher is None:
        return
    for index in range(len(mm.current_loaded_models) - 1, -1, -1):
        loaded = mm.current_loaded_models[index]
        if loaded.model is patcher:
            loaded.model_unload()
            mm.current_loaded_models.pop(index)
    mm.soft_empty_cache()


class StepProgress:
    """The sampling loop's callback: ComfyUI progress bar, a cheap latent preview and the interrupt check."""

    def __init__(self, total: int, preview: bool = True) -> None:
        self.bar = comfy.utils.ProgressBar(total)
        self.total = total
        self.done = 0
        self.preview = preview

    def __call__(self, report: StepReport) -> None:
        mm.throw_exception_if_processing_interrupted()
        self.done = min(self.total, self.done + 1)
        image = latent_preview(report) if self.preview else None
        self.bar.update_absolute(self.done, self.total, ("JPEG", image, PREVIEW_MAX_SIZE) if image else None)


class DecodeProgress:
    """The tiled decode's per-chunk callback: ComfyUI progress bar over frames and the interrupt check."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(done, total)


def latent_preview(report: StepReport) -> Any:
    """A PIL image of the first latent frame of this step's x0 video: three latent channels, min-max scaled."""
    state, x0 = report.video, report.x0_video
    if state is None or x0 is None:
        return None
    try:
        from PIL import Image

        starts = state.positions[0, :, :, 0]  # (3, T): time (s), y (px), x (px) of each token
        first_frame = int((starts[0] == starts[0, 0]).int().cumprod(0).sum())  # leading tokens of frame 0
        width = int(torch.unique(starts[2, :first_frame]).numel())
        height = first_frame // max(width, 1)
        if height * width != first_frame or first_frame == 0:
            return None
        tokens = x0[0, : height * width, :3].float()  # first latent frame, (H' W', 3)
        low, high = tokens.min(dim=0).values, tokens.max(dim=0).values
        rgb = ((tokens - low) / (high - low).clamp_min(1e-6) * 255).to(torch.uint8).reshape(height, width, 3)
        image = Image.fromarray(rgb.cpu().numpy())
        return image.resize((width * PREVIEW_UPSCALE, height * PREVIEW_UPSCALE), Image.NEAREST)
    except (RuntimeError, ValueError, AttributeError) as exc:  # a preview never stops sampling
        logger.debug("no preview: %s", exc)
        return None
