"""Pipelines built around the audio stream:

- `audio_to_video`: a video driven by the user's audio (ltx-pipelines ``A2VidPipelineTwoStage``): the track,
  trimmed to ``start_time`` and at most ``max_duration``, is encoded by the audio VAE and frozen (never noised,
  never denoised, seen by the transformer at sigma 0); the video is generated at half size, x2-upsampled and
  refined by ``models.refiner`` with the audio still frozen. The audio returned is the user's waveform itself,
  sample for sample (not the VAE round trip).
- `text_to_audio`: audio alone (ltx-pipelines ``T2AOneStagePipeline``): one guided stage on the audio stream
  with no video stream at all; the transformer may be the audio-only build (no video weights) and its video
  branch is never called. The duration is frames / fps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..conditioning import Frozen
from ..sampling import StepReport, StreamGuider
from . import clip_rules
from .latents import PromptContexts, empty_latents
from .models import ModelHost, PipelineModels
from .run import (
    LTX2_STG_BLOCK,
    LTX23_STG_BLOCK,
    GenerationRequest,
    GenerationResult,
    GuidedSampling,
    stage_1_sigmas,
    start_run,
)
from .sources import AudioClip, encode_audio
from .stages import decode_audio
from .validation import PipelineKind

__all__ = ["AudioRequest", "AudioResult", "audio_to_video", "text_to_audio", "text_to_audio_defaults"]

logger = logging.getLogger(__name__)

_NO_GUIDANCE = StreamGuider()  # a stream without guidance terms: the positive pass alone


def audio_to_video(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    audio: AudioClip,
    guided: GuidedSampling,
    host: ModelHost | None = None,
    *,
    start_time: float = 0.0,
    max_duration: float = 0.0,
) -> GenerationResult:
    """Audio-driven two-stage video. ``guided.audio`` is not used (the audio is frozen: no audio guidance); the
    negative pass of the video's CFG keeps the positive audio context. ``max_duration`` 0 = the clip's duration;
    the returned audio is ``audio`` from ``start_time`` for that long, unchanged."""
    models.require("transformer", "video_encoder", "upsampler", "video_decoder", "audio_encoder", "refiner")
    clip = request.frames / request.fps if isinstance(request.frames, int) and request.fps else 0.0
    problems = clip_rules.audio_window_problems(audio.waveform, audio.sample_rate, start_time, max_duration, clip)
    video_only = GuidedSampling(guided.steps, guided.video, _NO_GUIDANCE)
    run = start_run(models, contexts, request, host, PipelineKind.AUDIO_TO_VIDEO, guided=video_only,
                    problems=problems)  # fmt: skip
    used = audio.cut(start_time, max_duration or clip)
    half = run.empty(2)
    frozen = encode_audio(models.audio_encoder, used, run.host, half.audio.shape[2]).to(half.audio.dtype)
    half = half.with_audio(frozen)
    guidance = run.guidance(video_only, negative_audio_positive=True)
    latents = run.sample(models.transformer, half, run.images(half), stage_1_sigmas(video_only), guidance,
                         audio_conditionings=[Frozen()])  # fmt: skip
    latents = run.refine(latents, models.stage_2_transformer(), audio_conditionings=[Frozen()])
    frames, _, _ = run.decode(latents, audio=False)
    return GenerationResult(frames, used.waveform, used.sample_rate, latents.fps, latents)


@dataclass(frozen=True)
class AudioRequest:
    """Audio to generate: ``frames`` / ``fps`` seconds of it (frames 8k + 1, the video convention), and a seed."""

    frames: int
    fps: float
    seed: int
    callback: Callable[[StepReport], None] | None = field(default=None, compare=False)
    images: tuple = ()  # the request vocabulary's fields a video request has
    width: None = None
    height: None = None
    tiling: None = None


@dataclass(frozen=True)
class AudioResult:
    """Waveform (C, S) float32 at ``sample_rate``, exactly frames / fps seconds, and the audio latent
    (1, 8, T, 16)."""

    waveform: torch.Tensor
    sample_rate: int
    latent: torch.Tensor


def text_to_audio_defaults(ltx23: bool) -> GuidedSampling:
    """ltx-pipelines' T2A defaults: 30 (LTX-2.3) / 40 (LTX-2) steps, audio CFG 7, STG 1 on block 28 / 29, rescale
    0.7, modality guidance off (there is no video to isolate from)."""
    block = LTX23_STG_BLOCK if ltx23 else LTX2_STG_BLOCK
    audio = StreamGuider.multimodal(cfg_scale=7.0, stg_scale=1.0, stg_blocks=(block,), rescale_scale=0.7)
    return GuidedSampling(30 if ltx23 else 40, _NO_GUIDANCE, audio)


def text_to_audio(
    models: PipelineModels,
    contexts: PromptContexts,
    request: AudioRequest,
    guided: GuidedSampling,
    host: ModelHost | None = None,
) -> AudioResult:
    """Audio alone from the prompt's audio context: ``guided.audio`` guides, ``guided.video`` is ignored; needs
    only ``models.transformer`` (full or audio-only), ``audio_decoder`` and ``vocoder``."""
    models.require("transformer", "audio_decoder", "vocoder")
    audio_only = GuidedSampling(guided.steps, _NO_GUIDANCE, guided.audio)
    run = start_run(models, contexts, request, host, PipelineKind.TEXT_TO_AUDIO, guided=audio_only)
    latents = empty_latents(0, 0, request.frames, request.fps, dtype=models.dtype, device=run.host.device)
    latents = run.sample(models.transformer, latents, (), stage_1_sigmas(audio_only), run.guidance(audio_only))
    waveform, rate = decode_audio(models.audio_decoder, models.vocoder, latents.audio, run.host,
                                  duration=latents.duration)  # fmt: skip
    return AudioResult(waveform[0], rate, latents.audio)
