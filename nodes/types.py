"""The values AIPROD sockets carry between nodes, and their custom socket types.

Model handles load lazily: a loader node returns a handle that says what to load; the first stage that needs the
module loads it (once per handle; ComfyUI keeps the handle while the loader's inputs are unchanged). So a chain of
LoRA nodes costs one load, and a handle nobody uses costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from comfy_api.latest import io
from torch import nn

from ..aiprod_core.pipelines import AVLatents, ImageCondition, ReferenceCondition
from ..aiprod_core.sampling import StreamGuider
from ..aiprod_core.transformer import TransformerConfig
from ..loaders.component_loader import plan_load

__all__ = [
    "AudioVAE",
    "AudioVAESocket",
    "ConditioningSocket",
    "GuiderSettings",
    "GuiderSocket",
    "LatentBundle",
    "LatentSocket",
    "LazyModule",
    "ModelSocket",
    "TextEncoder",
    "TextEncoderSocket",
    "TransformerHandle",
    "UpsamplerSocket",
    "VideoVAE",
    "VideoVAESocket",
]

ModelSocket = io.Custom("AIPROD_MODEL")
VideoVAESocket = io.Custom("AIPROD_VIDEO_VAE")
AudioVAESocket = io.Custom("AIPROD_AUDIO_VAE")
UpsamplerSocket = io.Custom("AIPROD_UPSAMPLER")
TextEncoderSocket = io.Custom("AIPROD_TEXT_ENCODER")
ConditioningSocket = io.Custom("AIPROD_CONDITIONING")
LatentSocket = io.Custom("AIPROD_AV_LATENT")
GuiderSocket = io.Custom("AIPROD_GUIDER")


class LazyModule:
    """A module built by ``load`` on first use and kept afterwards (thread-safe)."""

    def __init__(self, load: Callable[[], nn.Module], label: str) -> None:
        self._load = load
        self._module: nn.Module | None = None
        self._lock = threading.Lock()
        self.label = label

    def get(self) -> nn.Module:
        with self._lock:
            if self._module is None:
                self._module = self._load()
            return self._module

    @property
    def loaded(self) -> bool:
        return self._module is not None

    def __repr__(self) -> str:
        return f"LazyModule({self.label!r}, loaded={self.loaded})"


@dataclass(frozen=True)
class TransformerHandle:
    """A transformer to load: file, weight dtype, quantized_weights mode ("upcast" / "keep"), stacked LoRAs
    [(path, strength)], what is known without loading it (generation, IC-LoRA reference downscale factor) and the
    low-VRAM weight streaming choice ("auto", "off", "on"; see `runtime.mark_weight_streaming`)."""

    path: str
    dtype: torch.dtype
    quantized_weights: str = "upcast"
    loras: tuple[tuple[str, float], ...] = ()
    generation: str | None = None
    reference_downscale_factor: int = 1
    weight_streaming: str = "auto"
    lazy: LazyModule | None = field(default=None, compare=False)

    @property
    def fp8(self) -> str:
        """The quantized_weights mode under its former name."""
        return self.quantized_weights

    def module(self) -> nn.Module:
        if self.lazy is None:
            raise RuntimeError("transformer handle without a loader")
        return self.lazy.get()

    def config(self) -> TransformerConfig | None:
        """The transformer's config (block count, context widths): the loaded module's, else read from the file's
        header without loading weights; None when the header cannot tell (the load then reports why)."""
        if self.lazy is not None and self.lazy.loaded:
            return getattr(self.lazy.get(), "config", None)
        try:
            plan = plan_load(self.path, "transformer", quantized_weights=self.quantized_weights)  # type: ignore[arg-type]
            return TransformerConfig.from_metadata(plan.config)
        except (ValueError, OSError, KeyError, TypeError):  # a format the header does not describe: the load says why
            return None


@dataclass(frozen=True)
class VideoVAE:
    """The video VAE halves (encoder: images -> latents and the upsampler's statistics; decoder: latents -> frames)."""

    encoder: LazyModule
    decoder: LazyModule


@dataclass(frozen=True)
class AudioVAE:
    """Audio latent -> mel decoder and mel -> waveform vocoder; the encoder (waveform -> latent) when the file has
    one (loaded only by the nodes that encode audio: retake, extension, audio-to-video)."""

    decoder: LazyModule
    vocoder: LazyModule
    encoder: LazyModule | None = None


@dataclass(frozen=True)
class TextEncoder:
    """Gemma-3 backbone + its tokenizer (loaded together) and the checkpoint's text projection and connectors.

    Text-encoder LoRAs: ``gemma_path`` is what they are matched against, ``loras`` the stack [(path, strength)]
    fused into ``gemma``, and ``load_gemma(transform)`` loads the Gemma with a weight transform (None: plain).
    """

    gemma: Any  # LazyModule over loaders.text_encoder_files.LoadedGemma (not an nn.Module itself)
    processor: LazyModule
    label: str
    gemma_path: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    load_gemma: Callable[[Any], Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LatentBundle:
    """Audio+video latents plus the conditioning the sampler applies to them (pixels, encoded at sampling time at
    the latents' resolution, so an upsampled latent is conditioned at its new size).

    keyframes_only: every image is an appended keyframe (keyframe interpolation), frame 0 included.
    references: IC-LoRA reference videos, at 1 / ``downscale_factor`` of the latents' resolution.
    video_items / audio_items: which tokens each stream generates (retake windows, extension canvases, frozen
    audio); a video latent without tokens is an audio-only clip (text-to-audio).
    """

    latents: AVLatents
    images: tuple[ImageCondition, ...] = ()
    keyframes_only: bool = False
    references: tuple[ReferenceCondition, ...] = ()
    downscale_factor: int = 1
    denoised: bool = False
    video_items: tuple[Any, ...] = ()  # conditioning items of the video stream (region masks, `Frozen`)
    audio_items: tuple[Any, ...] = ()  # and of the audio stream: kept in time, so they survive an upsample

    def with_latents(self, latents: AVLatents, *, denoised: bool) -> LatentBundle:
        return replace(self, latents=latents, denoised=denoised)


@dataclass(frozen=True)
class GuiderSettings:
    """Per-stream multimodal guidance (CFG, STG, rescale, modality isolation, skipped steps)."""

    video: StreamGuider
    audio: StreamGuider


