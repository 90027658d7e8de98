"""Pipelines that edit an existing clip, one stage at the clip's own size (guided, or the distilled schedule):

- `retake`: regenerate ``[start_time, end_time)`` of the clip (ltx-pipelines ``RetakePipeline``) with a temporal
  region mask per stream; ``regenerate_video`` / ``regenerate_audio`` = False freeze that stream instead.
- `extend`: continue the clip by ``extend_frames`` frames: its last ``context_frames`` frames (and their audio)
  are encoded at the start of a canvas whose remainder is generated (a retake of the canvas' tail), and the
  continuation is appended to the untouched source.

What is kept, and how exactly:

- Latents: every token the mask keeps (outside the window, or a frozen stream) is never noised and leaves the
  sampler bit for bit equal to the source's encoding (``GenerationResult.latents``).
- Retake frames and waveform are decoded from those latents, so outside the window they are the VAE round trip of
  the source, ``decode(encode(source))``, not the source itself: bit-identical to it wherever the decoders'
  receptive field holds no regenerated latent frame, and differing from the source by the round trip's own error.
- Extension: the source frames and the source waveform come back unchanged, bit for bit (they are not decoded);
  the continuation starts at the next frame and the next audio sample, the generated audio resampled to the
  source's rate (no gap, no overlap: exactly round((F + N) / fps x rate) samples in all).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchaudio
from torch import nn

from ..conditioning import ConditioningItem, Frozen, TemporalRegionMask
from ..conditioning.regions import region_tokens
from ..sampling import AudioLatentShape, AudioLayout, StepReport, VideoLatentShape
from ..sampling.state import AUDIO_LATENT_CHANNELS, AUDIO_MEL_BINS
from ..video_vae import TilingConfig
from . import clip_rules
from .latents import AVLatents, PromptContexts, audio_latent_frames
from .models import ModelHost, PipelineModels
from .run import GenerationResult, GuidedSampling, Run, stage_1_sigmas, start_run
from .sources import AudioClip, SourceClip, encode_audio, encode_frames, encode_source, samples_at
from .validation import PipelineKind, check_problems

__all__ = [
    "ExtendRequest",
    "RetakeRequest",
    "append_continuation",
    "canvas_latents",
    "extend",
    "extend_problems",
    "retake",
    "retake_problems",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SourceRequest:
    """The fields a source-based request shares; the size and length are the source's."""

    source: SourceClip
    seed: int
    tiling: TilingConfig | None = None
    callback: Callable[[StepReport], None] | None = field(default=None, compare=False)
    decode_callback: Callable[[int, int], None] | None = field(default=None, compare=False)
    images: tuple = ()  # no image conditioning (the request vocabulary's field)

    @property
    def width(self) -> int:
        return self.source.width

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def fps(self) -> float:
        return self.source.fps


@dataclass(frozen=True, kw_only=True)
class RetakeRequest(_SourceRequest):
    """Regenerate ``[start_time, end_time)`` seconds of ``source`` (both on latent-frame boundaries)."""

    start_time: float
    end_time: float
    regenerate_video: bool = True
    regenerate_audio: bool = True

    @property
    def frames(self) -> int:
        return self.source.num_frames


@dataclass(frozen=True, kw_only=True)
class ExtendRequest(_SourceRequest):
    """Continue ``source`` by ``extend_frames`` (8k) frames, seeing its last ``context_frames`` (8k + 1; 0 = all)."""

    extend_frames: int
    context_frames: int = 0

    @property
    def context(self) -> int:
        return self.context_frames or self.source.num_frames

    @property
    def frames(self) -> int:
        """Frames of the canvas that is sampled: the context and the continuation."""
        return self.context + self.extend_frames


def _source_problems(source: SourceClip) -> list[str]:
    problems = clip_rules.source_problems(source.frames, source.fps)
    if source.audio is not None and not problems:
        # a track up to one audio latent (40 ms) short of the clip is padded with silence (container rounding)
        problems += clip_rules.audio_problems(source.audio.waveform, source.audio.sample_rate,
                                              source.duration - 1 / 25, "source audio")  # fmt: skip
    return problems


def _models_needed(models: PipelineModels, source: SourceClip) -> None:
    audio = ("audio_encoder",) if source.audio is not None else ()
    models.require("transformer", "video_encoder", "video_decoder", "audio_decoder", "vocoder", *audio)


def _edit_stage(run: Run, latents: AVLatents, video: list[ConditioningItem], audio: list[ConditioningItem],
                guided: GuidedSampling | None) -> AVLatents:  # fmt: skip
    """The one sampling stage of an edit: the masks on the source latents, guided or the distilled schedule."""
    return run.sample(run.models.transformer, latents, video, stage_1_sigmas(guided), run.guidance(guided),
                      audio_conditionings=audio)  # fmt: skip


def _window(request: RetakeRequest) -> clip_rules.Window:
    window, problems = clip_rules.window_problems(request.start_time, request.end_time, request.source.num_frames,
                                                  request.source.fps)  # fmt: skip
    check_problems(problems)
    assert window is not None
    return window


def retake_problems(request: RetakeRequest) -> list[str]:
    """What is wrong with a retake's own inputs (the source, its audio, the window, the switches): the pipeline
    raises these with the request's (`validation.check_request`) before any model work; nodes ask for them before
    the prompt is encoded."""
    source = request.source
    problems = _source_problems(source)
    if not problems:
        problems += clip_rules.window_problems(request.start_time, request.end_time, source.num_frames,
                                               source.fps)[1]  # fmt: skip
    if not (request.regenerate_video or request.regenerate_audio):
        problems.append("regenerate_video=False, regenerate_audio=False: nothing to regenerate; turn one on")
    return problems


def extend_problems(request: ExtendRequest) -> list[str]:
    """What is wrong with an extension's own inputs (the source, its audio, the frame counts); as
    `retake_problems`."""
    problems = _source_problems(request.source)
    if not problems:
        problems += clip_rules.extension_problems(request.source.num_frames, request.extend_frames,
                                                  request.context_frames)  # fmt: skip
    return problems


def retake(
    models: PipelineModels,
    contexts: PromptContexts,
    request: RetakeRequest,
    guided: GuidedSampling | None = None,
    host: ModelHost | None = None,
) -> GenerationResult:
    """Regenerate a time window of a clip: guided (``guided``'s steps and guiders, full model) or, with ``guided``
    None, the distilled model's 8 fixed steps, positive prompt only. A clip without audio gets its whole audio
    generated (as ltx-pipelines does)."""
    source = request.source
    _models_needed(models, source)
    run = start_run(models, contexts, request, host, PipelineKind.RETAKE, guided=guided,
                    problems=retake_problems(request))  # fmt: skip
    window = _window(request)
    latents = encode_source(models.video_encoder, models.audio_encoder, source, run.host, request.tiling)
    region = TemporalRegionMask(window.start_time, window.end_time)
    video: list[ConditioningItem] = [region if request.regenerate_video else Frozen()]
    audio: list[ConditioningItem] = []
    if source.audio is not None:
        audio = [region if request.regenerate_audio else Frozen()]
    return run.finish(_edit_stage(run, latents, video, audio, guided))


def canvas_latents(video_encoder: nn.Module, audio_encoder: nn.Module | None, request: ExtendRequest,
                   host: ModelHost) -> tuple[AVLatents, tuple[tuple[ConditioningItem, ...], ...]]:  # fmt: skip
    """An extension's canvas: the context's latents first (its last ``context`` frames and their audio), zeros
    after, and the (video, audio) conditioning items that generate everything after the context (no source
    audio: the whole audio is generated)."""
    source, context = request.source, request.context
    first = source.num_frames - context  # the context's first pixel frame in the source
    video = encode_frames(video_encoder, source.frames[first:], host, request.tiling)  # (1, 128, F'c, H', W')
    latent_frames = VideoLatentShape.from_pixels(1, request.frames, source.height, source.width).frames
    video = torch.nn.functional.pad(video, (0, 0, 0, 0, 0, latent_frames - video.shape[2]))  # zeros after the context
    shape = AudioLatentShape(1, AUDIO_LATENT_CHANNELS, audio_latent_frames(request.frames, source.fps), AUDIO_MEL_BINS)
    audio = torch.zeros(shape.torch_shape(), device=video.device, dtype=video.dtype)
    region = TemporalRegionMask(context / source.fps, math.inf)
    if source.audio is None or audio_encoder is None:
        return AVLatents(video, audio, request.frames, float(source.fps)), ((region,), ())
    track = source.audio.fitted(source.duration).cut(first / source.fps, context / source.fps)
    # every audio token the region keeps (it ends by the context's end) holds the context's encoding
    kept = int((~region_tokens(AudioLayout(shape), region.start_time, region.end_time))[0].sum())
    audio[:, :, :kept] = encode_audio(audio_encoder, track, host, kept).to(audio.dtype)
    return AVLatents(video, audio, request.frames, float(source.fps)), ((region,), (region,))


def append_continuation(source: SourceClip, canvas_frames: torch.Tensor, canvas_audio: AudioClip,
                        context: int) -> tuple[torch.Tensor, AudioClip]:  # fmt: skip
    """The source's own frames and waveform, then the decoded canvas from the end of its ``context`` frames on:
    frames (F + N, H, W, 3) and exactly round((F + N) / fps x rate) samples at the source's rate and channel
    count (no source audio: silence, then the canvas audio at its own rate)."""
    fps, added = source.fps, canvas_frames.shape[0] - context
    frames = torch.cat([source.frames.float().to(canvas_frames.device), canvas_frames[context:].float()], dim=0)
    tail, rate = canvas_audio.waveform.float(), canvas_audio.sample_rate
    tail = tail[:, samples_at(context / fps, rate):]
    total = (source.num_frames + added) / fps
    if source.audio is None:
        head = torch.zeros(tail.shape[0], samples_at(source.duration, rate))
    else:
        head = source.audio.fitted(source.duration).waveform.float()
        if rate != source.audio.sample_rate:
            tail = torchaudio.functional.resample(tail, rate, source.audio.sample_rate)
        rate = source.audio.sample_rate
        tail = tail.mean(dim=0, keepdim=True) if head.shape[0] == 1 else tail.expand(head.shape[0], -1)
    tail = AudioClip(tail.cpu(), rate).fitted(total - head.shape[-1] / rate).waveform
    return frames, AudioClip(torch.cat([head.cpu(), tail], dim=-1), rate).fitted(total)


def extend(
    models: PipelineModels,
    contexts: PromptContexts,
    request: ExtendRequest,
    guided: GuidedSampling | None = None,
    host: ModelHost | None = None,
) -> GenerationResult:
    """Continue a clip: the canvas (context + ``extend_frames``) is sampled with everything after the context
    regenerated (guided, or the distilled schedule with ``guided`` None), decoded, and its continuation appended
    to the source's own frames and audio. ``result.latents`` are the canvas'."""
    source = request.source
    _models_needed(models, source)
    run = start_run(models, contexts, request, host, PipelineKind.EXTEND, guided=guided,
                    problems=extend_problems(request))  # fmt: skip
    canvas, (video_items, audio_items) = canvas_latents(models.video_encoder, models.audio_encoder, request, run.host)
    latents = _edit_stage(run, canvas, list(video_items), list(audio_items), guided)
    frames, waveform, rate = run.decode(latents)
    assert waveform is not None
    video, audio = append_continuation(source, frames, AudioClip(waveform, rate), request.context)
    return GenerationResult(video, audio.waveform, audio.sample_rate, float(source.fps), latents)
