"""The five generation pipelines, each a short composition of the shared stages.

- `text_to_video`: one guided stage at the target size (text/image-to-video).
- `two_stage`: guided stage at half size -> x2 latent upsample -> 3-step refinement by ``models.refiner``.
- `distilled`: the distilled model at half size (8 fixed steps) -> upsample -> 3 refinement steps.
- `ic_lora`: like `distilled`, stage 1 by the IC-LoRA transformer with reference-video conditioning, stage 2 by
  the base model (``models.refiner``).
- `keyframe_interpolation`: like `two_stage`, every image appended as a keyframe (frame 0 included).

Noise, conditioning, schedules and the decode follow ltx-pipelines 1.0.0: one generator seeded once draws the
stage-1 noise (video, then audio), the stage-2 noise and the decoder's noise, in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..conditioning import ConditioningItem
from ..sampling import EulerAncestralStep, Guidance, StepReport, StreamGuider, distilled_sigmas, ltx2_sigmas
from ..sampling.steps import DiffusionStep
from ..video_vae import TilingConfig
from .latents import AVLatents, PromptContexts, empty_latents
from .models import LocalHost, ModelHost, PipelineModels
from .stages import (
    ImageCondition,
    ReferenceCondition,
    decode_audio,
    decode_video,
    image_conditionings,
    reference_conditionings,
    sample,
    upsample,
)
from .validation import PipelineKind, check_request

__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "GuidedSampling",
    "distilled",
    "ic_lora",
    "keyframe_interpolation",
    "text_to_video",
    "two_stage",
]

logger = logging.getLogger(__name__)

LTX2_STG_BLOCK, LTX23_STG_BLOCK = 29, 28  # ltx-pipelines' default STG blocks (utils/constants.py)



@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: size, length, frame rate, seed, conditioning images and decode options."""

    width: int
    height: int
    frames: int
    fps: float
    seed: int
    images: tuple[ImageCondition, ...] = ()
    tiling: TilingConfig | None = None
    callback: Callable[[StepReport], None] | None = field(default=None, compare=False)
    decode_callback: Callable[[int, int], None] | None = field(default=None, compare=False)  # (done, total) frames
    # The distilled pipeline's stage-1 sampler: "euler", or "euler_ancestral" (LTX-2.5: ltx-pipelines 1.2.0 samples
    # stage 1 of a model_version >= 2.5 ancestrally, eta 1, its noise seeded seed + 10000).
    distilled_stage_1: str = "euler"


@dataclass(frozen=True)
class GuidedSampling:
    """A guided stage: ``steps`` of the LTX-2 schedule and one multimodal guider per stream."""

    steps: int
    video: StreamGuider = field(default_factory=lambda: _default_guider(3.0, LTX2_STG_BLOCK))
    audio: StreamGuider = field(default_factory=lambda: _default_guider(7.0, LTX2_STG_BLOCK))

    @classmethod
    def defaults(cls, ltx23: bool) -> GuidedSampling:
        """ltx-pipelines' defaults: 40 steps (LTX-2) / 30 (LTX-2.3), CFG 3 video / 7 audio, STG 1 on block 29 / 28,
        rescale 0.7, modality 3."""
        block = LTX23_STG_BLOCK if ltx23 else LTX2_STG_BLOCK
        return cls(30 if ltx23 else 40, _default_guider(3.0, block), _default_guider(7.0, block))


def _default_guider(cfg: float, stg_block: int) -> StreamGuider:
    return StreamGuider.multimodal(cfg_scale=cfg, stg_scale=1.0, stg_blocks=(stg_block,), rescale_scale=0.7,
                                   modality_scale=3.0)  # fmt: skip


@dataclass(frozen=True)
class GenerationResult:
    """Frames (F, H, W, 3) float32 in [0, 1], waveform (C, S) float32 at ``sample_rate`` covering F / fps seconds,
    and the final latents: video (B, 128, F', H', W'), audio (B, 8, T, 16)."""

    frames: torch.Tensor
    waveform: torch.Tensor
    sample_rate: int
    fps: float
    latents: AVLatents


@dataclass(frozen=True)
class _Run:
    """The per-call context every stage of a pipeline shares."""

    models: PipelineModels
    contexts: PromptContexts
    request: GenerationRequest
    host: ModelHost
    generator: torch.Generator

    def sample(
        self,
        transformer: torch.nn.Module,
        latents: AVLatents,
        conditionings: Sequence[ConditioningItem],
        sigmas: torch.Tensor,
        guidance: Guidance,
        noise_scale: float = 1.0,
        step: DiffusionStep | None = None,
    ) -> AVLatents:
        return sample(
            transformer, latents, conditionings, sigmas, guidance, self.generator, self.host,
            dtype=self.models.dtype, noise_scale=noise_scale, step=step, callback=self.request.callback,
        )  # fmt: skip

    def empty(self, downscale: int) -> AVLatents:
        r = self.request
        width, height = r.width // downscale, r.height // downscale
        return empty_latents(width, height, r.frames, r.fps, dtype=self.models.dtype, device=self.host.device)

    def images(self, latents: AVLatents, keyframes_only: bool = False) -> list[ConditioningItem]:
        if not self.request.images:
            return []
        return image_conditionings(
            self.models.video_encoder, self.request.images, latents, self.host, keyframes_only=keyframes_only
        )


def _start(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    host: ModelHost | None,
    kind: PipelineKind,
    **rules: Any,
) -> _Run:
    """Validates the request (before any model work) and seeds the run's one generator."""
    host = LocalHost() if host is None else host
    model_config = getattr(models.transformer, "config", None)
    request = check_request(request, contexts, kind, model_config=model_config, **rules)
    generator = torch.Generator(device=host.device).manual_seed(request.seed)
    return _Run(models, contexts.to(host.device, models.dtype), request, host, generator)


def _guidance(run: _Run, guided: GuidedSampling | None) -> Guidance:
    if guided is None:
        return Guidance(run.contexts.positive)
    return Guidance(run.contexts.positive, run.contexts.negative, guided.video, guided.audio)


def _stage_1_sigmas(guided: GuidedSampling | None) -> torch.Tensor:
    return distilled_sigmas() if guided is None else ltx2_sigmas(guided.steps)


def _refine(run: _Run, stage_1: AVLatents, transformer: torch.nn.Module, keyframes_only: bool) -> AVLatents:
    """x2 upsample of the stage-1 video, full-size image conditioning, 3 positive-only distilled steps."""
    upsampled = upsample(stage_1, run.models.upsampler, run.models.video_encoder, run.host)
    conditionings = run.images(upsampled, keyframes_only)
    sigmas = distilled_sigmas(stage_2=True)
    return run.sample(transformer, upsampled, conditionings, sigmas, _guidance(run, None), float(sigmas[0]))


def _finish(run: _Run, latents: AVLatents) -> GenerationResult:
    """Decode video (with the run's generator, after every sampling draw) and audio of exactly the clip's length."""
    m, r = run.models, run.request
    frames = decode_video(m.video_decoder, latents.video, run.host, generator=run.generator, tiling=r.tiling,
                          on_chunk=r.decode_callback)
    waveform, rate = decode_audio(m.audio_decoder, m.vocoder, latents.audio, run.host, duration=latents.duration)
    return GenerationResult(frames[0], waveform[0], rate, latents.fps, latents)


def _two_stage(
    run: _Run,
    guided: GuidedSampling | None,
    keyframes_only: bool = False,
    references: Sequence[ReferenceCondition] = (),
    downscale_factor: int = 1,
    skip_stage_2: bool = False,
    stage_1_step: DiffusionStep | None = None,
) -> GenerationResult:
    m = run.models
    half = run.empty(2)
    conditionings = run.images(half, keyframes_only)
    if references:
        conditionings += reference_conditionings(m.video_encoder, references, half, run.host, downscale_factor)
    latents = run.sample(m.transformer, half, conditionings, _stage_1_sigmas(guided), _guidance(run, guided),
                         step=stage_1_step)
    if not skip_stage_2:
        latents = _refine(run, latents, m.stage_2_transformer(), keyframes_only)
    return _finish(run, latents)


_DECODE = ("video_decoder", "audio_decoder", "vocoder")
_TWO_STAGE = ("transformer", "video_encoder", "upsampler", *_DECODE)


def text_to_video(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    guided: GuidedSampling,
    host: ModelHost | None = None,
) -> GenerationResult:
    """Text/image-to-video in one guided stage at the target size (ltx-pipelines ``TI2VidOneStagePipeline``)."""
    models.require("transformer", *_DECODE, *(("video_encoder",) if request.images else ()))
    run = _start(models, contexts, request, host, PipelineKind.ONE_STAGE, guided=guided)
    latents = run.empty(1)
    conditionings = run.images(latents)
    latents = run.sample(models.transformer, latents, conditionings, ltx2_sigmas(guided.steps), _guidance(run, guided))
    return _finish(run, latents)


def two_stage(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    guided: GuidedSampling,
    host: ModelHost | None = None,
) -> GenerationResult:
    """Guided half-size stage, x2 upsample, distilled-LoRA refinement by ``models.refiner``
    (ltx-pipelines ``TI2VidTwoStagesPipeline``)."""
    models.require(*_TWO_STAGE, "refiner")
    run = _start(models, contexts, request, host, PipelineKind.TWO_STAGES, guided=guided)
    return _two_stage(run, guided)


def distilled(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    host: ModelHost | None = None,
) -> GenerationResult:
    """The distilled model: 8 fixed steps at half size, x2 upsample, 3 fixed steps (``DistilledPipeline``)."""
    models.require(*_TWO_STAGE)
    run = _start(models, contexts, request, host, PipelineKind.DISTILLED)
    return _two_stage(run, None, stage_1_step=_distilled_stage_1_step(run))


DISTILLED_STAGE_1 = ("euler", "euler_ancestral")
ANCESTRAL_NOISE_SEED_OFFSET = 10000  # ltx-pipelines 1.2.0: the ancestral loop's noise is not the initial noise


def _distilled_stage_1_step(run: _Run) -> DiffusionStep | None:
    choice = run.request.distilled_stage_1
    if choice not in DISTILLED_STAGE_1:
        raise ValueError(f"distilled_stage_1={choice!r}, expected one of {', '.join(DISTILLED_STAGE_1)}")
    if choice == "euler":
        return None
    generator = torch.Generator(device=run.host.device).manual_seed(run.request.seed + ANCESTRAL_NOISE_SEED_OFFSET)
    return EulerAncestralStep(generator)


def ic_lora(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    references: Sequence[ReferenceCondition],
    downscale_factor: int = 1,
    skip_stage_2: bool = False,
    host: ModelHost | None = None,
) -> GenerationResult:
    """IC-LoRA: stage 1 by ``models.transformer`` (IC-LoRA fused) with the reference videos at 1 /
    ``downscale_factor`` resolution, stage 2 by ``models.refiner`` (the base model) (``ICLoraPipeline``)."""
    models.require(*(("transformer", "video_encoder", *_DECODE) if skip_stage_2 else (*_TWO_STAGE, "refiner")))
    run = _start(
        models, contexts, request, host, PipelineKind.IC_LORA, references=references,
        downscale_factor=downscale_factor,
    )  # fmt: skip
    return _two_stage(
        run, None, references=references, downscale_factor=downscale_factor, skip_stage_2=skip_stage_2
    )


def keyframe_interpolation(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    guided: GuidedSampling,
    host: ModelHost | None = None,
) -> GenerationResult:
    """Keyframes (every image appended as a guiding latent) through the two-stage flow
    (``KeyframeInterpolationPipeline``)."""
    models.require(*_TWO_STAGE, "refiner")
    run = _start(models, contexts, request, host, PipelineKind.KEYFRAME_INTERPOLATION, guided=guided)
    return _two_stage(run, guided, keyframes_only=True)
