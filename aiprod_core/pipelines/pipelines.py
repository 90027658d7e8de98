"""The text/image-to-video pipelines, each a short composition of the shared stages (`run`, `stages`).

- `text_to_video`: one guided stage at the target size (text/image-to-video).
- `two_stage`: guided stage at half size -> x2 latent upsample -> 3-step refinement by ``models.refiner``.
- `distilled`: the distilled model at half size (8 fixed steps) -> upsample -> 3 refinement steps.
- `ic_lora`: like `distilled`, stage 1 by the IC-LoRA transformer with reference-video conditioning, stage 2 by
  the base model (``models.refiner``).
- `keyframe_interpolation`: like `two_stage`, every image appended as a keyframe (frame 0 included).

- `two_stage_hq`: `two_stage` with the res_2s second-order sampler, its own step count and guidance.

Noise, conditioning, schedules and the decode follow ltx-pipelines 1.0.0 (1.2.0 for the HQ flow): one generator
seeded once draws the stage-1 noise (video, then audio), the stage-2 noise and the decoder's noise, in that order.
The audio-driven, audio-only and edit pipelines are in `audio_pipelines` and `edits`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..sampling import EulerAncestralStep, Res2s, Sampler
from ..sampling.schedules import video_token_count
from ..sampling.steps import DiffusionStep
from .latents import PromptContexts
from .models import ModelHost, PipelineModels
from .run import GenerationRequest, GenerationResult, GuidedSampling, Run, stage_1_sigmas, start_run
from .stages import ReferenceCondition, reference_conditionings
from .validation import PipelineKind

__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "GuidedSampling",
    "distilled",
    "ic_lora",
    "keyframe_interpolation",
    "text_to_video",
    "two_stage",
    "two_stage_hq",
]

logger = logging.getLogger(__name__)


def _two_stage(
    run: Run,
    guided: GuidedSampling | None,
    keyframes_only: bool = False,
    references: Sequence[ReferenceCondition] = (),
    downscale_factor: int = 1,
    skip_stage_2: bool = False,
    step: DiffusionStep | Sampler | None = None,
    stage_1_step: DiffusionStep | None = None,
) -> GenerationResult:
    """Half-size stage 1 (images, references), x2 upsample, refinement by ``models.refiner``; ``step``: both
    stages' sampler (``stage_1_step``, when given, stage 1's). A res_2s run shifts its stage-1 schedule for the
    stage's token count (the HQ pipeline)."""
    m = run.models
    half = run.empty(2)
    conditionings = run.images(half, keyframes_only)
    if references:
        conditionings += reference_conditionings(m.video_encoder, references, half, run.host, downscale_factor)
    tokens = video_token_count(tuple(half.video.shape)) if isinstance(step, Res2s) else None
    latents = run.sample(m.transformer, half, conditionings, stage_1_sigmas(guided, tokens), run.guidance(guided),
                         step=stage_1_step or step)  # fmt: skip
    if not skip_stage_2:
        refined = run.refine(latents, m.stage_2_transformer(), keyframes_only=keyframes_only, step=step)
        # ltx-pipelines' HQ refines the video only and keeps stage 1's audio (its stage-2 audio is discarded)
        latents = refined.with_audio(latents.audio) if isinstance(step, Res2s) else refined
    return run.finish(latents)


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
    run = start_run(models, contexts, request, host, PipelineKind.ONE_STAGE, guided=guided)
    latents = run.empty(1)
    conditionings = run.images(latents)
    latents = run.sample(models.transformer, latents, conditionings, stage_1_sigmas(guided), run.guidance(guided))
    return run.finish(latents)


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
    run = start_run(models, contexts, request, host, PipelineKind.TWO_STAGES, guided=guided)
    return _two_stage(run, guided)


def distilled(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    host: ModelHost | None = None,
) -> GenerationResult:
    """The distilled model: 8 fixed steps at half size, x2 upsample, 3 fixed steps (``DistilledPipeline``)."""
    models.require(*_TWO_STAGE)
    run = start_run(models, contexts, request, host, PipelineKind.DISTILLED)
    return _two_stage(run, None, stage_1_step=_distilled_stage_1_step(run))


DISTILLED_STAGE_1 = ("euler", "euler_ancestral")
ANCESTRAL_NOISE_SEED_OFFSET = 10000  # ltx-pipelines 1.2.0: the ancestral loop's noise is not the initial noise


def _distilled_stage_1_step(run: Run) -> DiffusionStep | None:
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
    run = start_run(
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
    run = start_run(models, contexts, request, host, PipelineKind.KEYFRAME_INTERPOLATION, guided=guided)
    return _two_stage(run, guided, keyframes_only=True)


def two_stage_hq(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    guided: GuidedSampling | None = None,
    host: ModelHost | None = None,
    sampler: Res2s | None = None,
) -> GenerationResult:
    """The two-stage flow with the res_2s sampler in both stages (ltx-pipelines ``TI2VidTwoStagesHQPipeline``):
    ``models.transformer`` is the base model with the distilled LoRA at 0.25, ``models.refiner`` with it at 0.5;
    ``guided`` defaults to `GuidedSampling.hq_defaults` (15 steps, STG off). The stage-1 schedule is shifted for
    the half-size latent's token count; the audio is stage 1's (stage 2 refines the video only)."""
    models.require(*_TWO_STAGE, "refiner")
    guided = GuidedSampling.hq_defaults() if guided is None else guided
    run = start_run(models, contexts, request, host, PipelineKind.TWO_STAGES_HQ, guided=guided)
    return _two_stage(run, guided, step=Res2s() if sampler is None else sampler)
