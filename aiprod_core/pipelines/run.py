"""What every pipeline shares: the request and guidance types, the result, and one run's context (validated
request, the one seeded generator, the host) with the blocks two or more pipelines run the same way (guidance
from the prompts, the x2-upsample refinement, the decode).

One generator seeded once draws, in order, the stage-1 noise (video, then audio), the stage-2 noise and the
decoder's noise, as ltx-pipelines does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..conditioning import ConditioningItem
from ..sampling import Guidance, Prompt, Sampler, StepReport, StreamGuider, distilled_sigmas, ltx2_sigmas
from ..sampling.steps import DiffusionStep
from ..video_vae import TilingConfig
from .latents import AVLatents, PromptContexts, empty_latents
from .models import LocalHost, ModelHost, PipelineModels
from .stages import ImageCondition, decode_audio, decode_video, image_conditionings, sample, upsample
from .validation import PipelineKind, check_problems, check_request

__all__ = ["GenerationRequest", "GenerationResult", "GuidedSampling", "Run", "start_run"]

logger = logging.getLogger(__name__)

LTX2_STG_BLOCK, LTX23_STG_BLOCK = 29, 28  # ltx-pipelines' default STG blocks (utils/constants.py)
HQ_STEPS = 15  # ltx-pipelines' LTX_2_3_HQ_PARAMS


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


def _default_guider(cfg: float, stg_block: int) -> StreamGuider:
    return StreamGuider.multimodal(cfg_scale=cfg, stg_scale=1.0, stg_blocks=(stg_block,), rescale_scale=0.7,
                                   modality_scale=3.0)  # fmt: skip


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

    @classmethod
    def hq_defaults(cls) -> GuidedSampling:
        """ltx-pipelines' HQ preset (res_2s): 15 steps, CFG 3 video / 7 audio, STG off, rescale 0.45 / 1.0,
        modality 3 (one preset for every generation)."""
        video = StreamGuider.multimodal(cfg_scale=3.0, rescale_scale=0.45, modality_scale=3.0)
        audio = StreamGuider.multimodal(cfg_scale=7.0, rescale_scale=1.0, modality_scale=3.0)
        return cls(HQ_STEPS, video, audio)


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
class Run:
    """One pipeline call: the models, the prompts on the device, the checked request, the host and the one
    generator every stage draws from."""

    models: PipelineModels
    contexts: PromptContexts
    request: Any
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
        *,
        step: DiffusionStep | Sampler | None = None,
        audio_conditionings: Sequence[ConditioningItem] = (),
    ) -> AVLatents:
        return sample(
            transformer, latents, conditionings, sigmas, guidance, self.generator, self.host,
            dtype=self.models.dtype, noise_scale=noise_scale, callback=self.request.callback, step=step,
            audio_conditionings=audio_conditionings,
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

    def guidance(self, guided: GuidedSampling | None, negative_audio_positive: bool = False) -> Guidance:
        """The prompts with ``guided``'s guiders (None: the positive prompt alone, the distilled schedules).

        ``negative_audio_positive``: the negative pass keeps the positive audio context (a stream without CFG of
        its own still feeds the other through cross-attention: ltx-pipelines passes its positive context).
        """
        if guided is None:
            return Guidance(self.contexts.positive)
        negative = self.contexts.negative
        if negative_audio_positive and negative is not None:
            negative = Prompt(negative.video, self.contexts.positive.audio, negative.video_mask,
                              self.contexts.positive.audio_mask)  # fmt: skip
        return Guidance(self.contexts.positive, negative, guided.video, guided.audio)

    def refine(
        self,
        stage_1: AVLatents,
        transformer: torch.nn.Module,
        *,
        keyframes_only: bool = False,
        step: DiffusionStep | Sampler | None = None,
        audio_conditionings: Sequence[ConditioningItem] = (),
    ) -> AVLatents:
        """x2 upsample of the stage-1 video, full-size image conditioning, 3 positive-only distilled steps (video
        and audio re-noised to the schedule's first sigma unless ``audio_conditionings`` hold the audio)."""
        upsampled = upsample(stage_1, self.models.upsampler, self.models.video_encoder, self.host)
        conditionings = self.images(upsampled, keyframes_only)
        sigmas = distilled_sigmas(stage_2=True)
        return self.sample(transformer, upsampled, conditionings, sigmas, self.guidance(None), float(sigmas[0]),
                           step=step, audio_conditionings=audio_conditionings)  # fmt: skip

    def decode(self, latents: AVLatents, audio: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(frames (F, H, W, 3), waveform (C, S) of exactly the clip's length or None, sample rate): the video
        with the run's generator (after every sampling draw), then the audio."""
        m, r = self.models, self.request
        frames = decode_video(m.video_decoder, latents.video, self.host, generator=self.generator, tiling=r.tiling,
                              on_chunk=r.decode_callback)  # fmt: skip
        if not audio:
            return frames[0], None, int(m.vocoder.output_sampling_rate) if m.vocoder is not None else 0
        waveform, rate = decode_audio(m.audio_decoder, m.vocoder, latents.audio, self.host, duration=latents.duration)
        return frames[0], waveform[0], rate

    def finish(self, latents: AVLatents) -> GenerationResult:
        frames, waveform, rate = self.decode(latents)
        assert waveform is not None
        return GenerationResult(frames, waveform, rate, latents.fps, latents)


def stage_1_sigmas(guided: GuidedSampling | None, tokens: int | None = None) -> torch.Tensor:
    """The distilled table (no guidance) or ``guided.steps`` of the LTX-2 schedule, shifted for ``tokens`` video
    tokens when given (the HQ pipeline; the others use the schedule's default shift)."""
    if guided is None:
        return distilled_sigmas()
    return ltx2_sigmas(guided.steps) if tokens is None else ltx2_sigmas(guided.steps, tokens)


def start_run(
    models: PipelineModels,
    contexts: PromptContexts,
    request: Any,
    host: ModelHost | None,
    kind: PipelineKind,
    *,
    problems: Sequence[str] = (),
    **rules: Any,
) -> Run:
    """Validates the request (before any model work; ``problems`` found by the pipeline itself are raised with the
    request's, in one message) and seeds the run's one generator."""
    host = LocalHost() if host is None else host
    model_config = getattr(models.transformer, "config", None)
    try:
        request = check_request(request, contexts, kind, model_config=model_config, **rules)
    except ValueError as exc:
        check_problems([*problems, str(exc)])
    check_problems(problems)
    generator = torch.Generator(device=host.device).manual_seed(request.seed)
    return Run(models, contexts.to(host.device, models.dtype), request, host, generator)
