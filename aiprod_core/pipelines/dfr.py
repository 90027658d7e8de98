"""DFR (ltx-pipelines 1.2.0 ``DFRPipeline``, LTX-2.5 only): generated keyframe slots, detailing, temporal rounds.

1. Stage 1 at half size on the padded canvas (`dfr_layout.resolve_canvas`) with a generated keyframe slot at
   every segment end: the distilled schedule, the model fills the slots (single pixel frames) with the video.
2. Stage 2 at full size: the x2-upsampled video and slots re-denoised with the 3-step schedule by
   ``models.refiner`` (the model with the detailing IC-LoRA at 0.5, its reference the stage-1 video at 1 /
   ``detailing_downscale``; without the LoRA the model re-renders alone).
3. ``temporal_rounds`` (0-2) rounds: the temporal upscaler doubles the frame rate, the canvas is cut into
   ``2 ** round`` keyframe-seam tiles (`dfr_layout.temporal_tiles`), each re-denoised from sigma 0.725 with
   ancestral Euler (eta 0.5), its seams pinned by the carried keyframes (strength 0.95) and a new slot in the
   middle of each segment; the tiles' run-ups are dropped and the slots join the carried keyframes.

The output has ``(frames - 1) * 2 ** rounds + 1`` frames at ``fps * 2 ** rounds`` (the padded tail is cut); the
audio is stage 1's (the later stages see it for cross-attention only), cut to the video's length. Above 30 fps
the transformer's positions use 60 fps (the rates it was trained on); the playback rate is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from ..conditioning import ConditioningItem, Frozen, GeneratedKeyframeSlots, PinnedKeyframe, ReferenceVideo
from ..conditioning.keyframe_slots import slot_tokens
from ..sampling import EulerAncestralStep, StepReport, distilled_sigmas
from ..sampling.state import AudioLatentShape, LatentState
from ..upsampler import temporal_upsample
from .dfr_layout import TemporalTile, resolve_canvas, temporal_tiles
from .latents import AVLatents, PromptContexts, empty_latents
from .models import ModelHost, PipelineModels
from .run import GenerationRequest, GenerationResult, Run, start_run
from .stages import decode_audio, decode_video, has_keyframe_marker, sample, upsample
from .validation import PipelineKind, generation_family

__all__ = ["DFR_ROUNDS", "DFRResult", "dfr", "dfr_output_frames", "dfr_problems"]

logger = logging.getLogger(__name__)

DFR_ROUNDS = (0, 1, 2)
ANCHOR_STRENGTH = 0.95  # carried seam keyframes: pinned just short of clean so a tile can settle its seam
TEMPORAL_ETA = 0.5
TEMPORAL_SIGMA_START = 4  # the temporal rounds run the distilled table from its 5th sigma (0.725)
DETAILING_LORA_STRENGTH = 0.5  # the reference fixes the detailing IC-LoRA's strength
SNAP_FPS_ABOVE, SNAPPED_FPS = 30.0, 60.0


def conditioning_fps(fps: float) -> float:
    """The transformer's (RoPE) frame rate for a playback rate: above 30 it is 60."""
    return SNAPPED_FPS if fps > SNAP_FPS_ABOVE else fps


def dfr_output_frames(frames: int, rounds: int) -> int:
    """Frames DFR returns for a request of ``frames``: (frames - 1) x 2 ** rounds + 1."""
    return (frames - 1) * 2**rounds + 1


def dfr_problems(models: PipelineModels, frames: object, temporal_rounds: object,
                 temporal_upsampler: nn.Module | None, generation: str | None = None) -> list[str]:  # fmt: skip
    """What DFR refuses before any model work (the request's size / frame rules are `start_run`'s)."""
    problems = []
    family = generation_family(generation)
    if family is not None and family != "2.5":
        problems.append(f"model: generation={generation!r} (LTX-{family}); DFR needs an LTX-2.5 checkpoint (its "
                        "generated keyframe slots need the keyframe embedding LTX-2 / LTX-2.3 do not have)")
    elif models.transformer is not None and not has_keyframe_marker(models.transformer):
        problems.append("model: use_keyframes_abs_pos_embedding=False (an LTX-2 / LTX-2.3 transformer); DFR needs "
                        "an LTX-2.5 checkpoint with the keyframe embedding")
    if isinstance(frames, int) and frames == 1:
        problems.append("frames=1, expected at least 9 (8k + 1 with k >= 1): DFR places keyframes on 24- or "
                        "32-frame segments")
    if temporal_rounds not in DFR_ROUNDS:
        problems.append(f"temporal_rounds={temporal_rounds!r}, expected one of {list(DFR_ROUNDS)} (x1, x2, x4 fps)")
    elif temporal_rounds and temporal_upsampler is None:
        problems.append(f"temporal_upsampler=None: temporal_rounds={temporal_rounds} needs the LTX-2.5 temporal "
                        "upscaler x2 (latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-*)")
    elif temporal_rounds and not getattr(getattr(temporal_upsampler, "config", None), "temporal_upsample", False):
        problems.append("temporal_upsampler: a spatial upscaler was given; temporal rounds need the temporal "
                        "upscaler x2")
    return problems


def _sample_with_slots(run: Run, transformer: nn.Module, latents: AVLatents, items: list[ConditioningItem],
                       slots: int, sigmas: torch.Tensor, **options: object
                       ) -> tuple[AVLatents, torch.Tensor | None]:  # fmt: skip
    """`sample` that also returns the final (B, C, K, H, W) latents of the ``slots`` generated keyframe slots
    (the last appended tokens), read from the loop's last state report."""
    last: list[LatentState | None] = [None]
    user = run.request.callback

    def hook(report: StepReport) -> None:
        last[0] = report.video
        if user is not None:
            user(report)

    out = sample(transformer, latents, items, sigmas, run.guidance(None), run.generator, run.host,
                 dtype=run.models.dtype, callback=hook, **options)  # fmt: skip
    if not slots:
        return out, None
    if last[0] is None:
        raise RuntimeError("the sampling loop reported no state; cannot read the keyframe slots")
    return out, slot_tokens(last[0], latents.video_layout(), slots).to(out.video.dtype)


def _base(run: Run, slots: tuple[int, ...], frames: int) -> tuple[AVLatents, torch.Tensor]:
    """Stage 1: half size, the canvas' frames, images and the generated keyframe slots."""
    r, m = run.request, run.models
    half = empty_latents(r.width // 2, r.height // 2, frames, r.fps, dtype=m.dtype, device=run.host.device)
    half = dataclasses.replace(half, fps=conditioning_fps(r.fps))  # audio sized by the playback rate
    items = [*run.images(half), GeneratedKeyframeSlots(slots)]
    out, keyframes = _sample_with_slots(run, m.transformer, half, items, len(slots), distilled_sigmas())
    assert keyframes is not None
    return out, keyframes


def _detail(run: Run, stage_1: AVLatents, slots: tuple[int, ...], keyframes: torch.Tensor,
            detailing_downscale: int | None) -> tuple[AVLatents, torch.Tensor]:  # fmt: skip
    """Stage 2: full size from the x2-upsampled video and slots, with the detailing reference when given."""
    m, host = run.models, run.host
    upsampled = upsample(stage_1, m.upsampler, m.video_encoder, host)
    seeded_slots = upsample(stage_1.with_video(keyframes), m.upsampler, m.video_encoder, host).video
    items: list[ConditioningItem] = [*run.images(upsampled)]
    if detailing_downscale is not None:
        items.append(ReferenceVideo(stage_1.video, detailing_downscale, 1.0))
    items.append(GeneratedKeyframeSlots(slots, seeded_slots))
    sigmas = distilled_sigmas(stage_2=True)
    out, detailed = _sample_with_slots(run, m.stage_2_transformer(), upsampled, items, len(slots), sigmas,
                                       noise_scale=float(sigmas[0]))  # fmt: skip
    assert detailed is not None
    return out, detailed


def _tile_audio(audio: torch.Tensor, pixel_start: int, frames: int, fps: float, duration: float,
                token_fps: float) -> torch.Tensor:  # fmt: skip
    """Stage 1's audio (B, 8, T, 16) over the tile's playback window, linearly resampled to the token count a
    ``frames``-frame clip at ``token_fps`` has."""
    total = audio.shape[2]
    start = pixel_start / fps / duration * total
    end = (pixel_start + frames) / fps / duration * total
    count = AudioLatentShape.for_video(1, frames, token_fps).frames
    where = (start + (end - start) / count * torch.arange(count, dtype=torch.float32)).clamp(0, total - 1)
    low = where.floor().long()
    high = (low + 1).clamp(max=total - 1)
    weight = (where - low.float()).to(audio.dtype).view(1, 1, -1, 1).to(audio.device)
    return audio[:, :, low.to(audio.device)] * (1 - weight) + audio[:, :, high.to(audio.device)] * weight


def _tile_items(tile: TemporalTile, video: torch.Tensor, carried: dict[int, torch.Tensor]) -> list[ConditioningItem]:
    """The tile's pinned seam keyframes and its new slots (seeded from the nearest latent frames of ``video``)."""
    items: list[ConditioningItem] = [PinnedKeyframe(carried[a], a - tile.pixel_start, ANCHOR_STRENGTH)
                                     for a in tile.anchors]  # fmt: skip
    if tile.slots:
        local = [s - tile.pixel_start for s in tile.slots]
        nearest = [min(max(round(p / 8), 0), video.shape[2] - 1) for p in local]
        items.append(GeneratedKeyframeSlots(tuple(local), torch.cat([video[:, :, i : i + 1] for i in nearest], 2)))
    return items


def _temporal_round(run: Run, index: int, video: torch.Tensor, frames: int, fps: float,
                    carried: dict[int, torch.Tensor], audio: torch.Tensor, duration: float,
                    upsampler: nn.Module) -> tuple[torch.Tensor, int, dict[int, torch.Tensor]]:  # fmt: skip
    """One temporal x2 round on the full-size video latent (B, C, F', H, W) of ``frames`` frames at ``fps``
    (before the round); returns the stitched latent, its frame count and the next round's carried keyframes."""
    m, host = run.models, run.host
    stats = m.video_encoder.per_channel_statistics
    with host.use(upsampler) as model:
        doubled = temporal_upsample(video.to(host.device, next(model.parameters()).dtype), model,
                                    stats.get_buffer("mean-of-means").to(host.device),
                                    stats.get_buffer("std-of-means").to(host.device), fps).latent.to(video.dtype)
    frames, fps = 2 * (frames - 1) + 1, 2 * fps
    carried = {2 * p: latent for p, latent in carried.items()}
    sigmas = distilled_sigmas()[TEMPORAL_SIGMA_START:]
    parts, new_slots = [], {}
    for number, tile in enumerate(temporal_tiles(sorted(carried), frames, 2**index)):
        part = doubled[:, :, tile.interval.start : tile.interval.end]
        local = (part.shape[2] - 1) * 8 + 1
        latents = AVLatents(part, _tile_audio(audio, tile.pixel_start, local, fps, duration, conditioning_fps(fps)),
                            local, conditioning_fps(fps))  # fmt: skip
        noise = torch.Generator(device=host.device).manual_seed(run.request.seed + 1000 * index + number)
        out, slots = _sample_with_slots(
            run, m.transformer, latents, _tile_items(tile, part, carried), len(tile.slots), sigmas,
            noise_scale=float(sigmas[0]), step=EulerAncestralStep(noise, eta=TEMPORAL_ETA),
            audio_conditionings=[Frozen()],
        )  # fmt: skip
        parts.append(out.video[:, :, tile.interval.run_up :])
        for k, position in enumerate(tile.slots):
            if slots is not None:
                new_slots.setdefault(position, slots[:, :, k : k + 1])  # a run-up repeats a slot: the earlier wins
    stitched = torch.cat(parts, dim=2)
    if stitched.shape[2] != (frames - 1) // 8 + 1:
        raise RuntimeError(f"stitched {stitched.shape[2]} latent frames, expected {(frames - 1) // 8 + 1}")
    return stitched, frames, dict(sorted({**carried, **new_slots}.items()))


def dfr(
    models: PipelineModels,
    contexts: PromptContexts,
    request: GenerationRequest,
    *,
    temporal_rounds: int = 0,
    temporal_upsampler: nn.Module | None = None,
    detailing_downscale: int | None = None,
    generation: str | None = None,
    host: ModelHost | None = None,
) -> DFRResult:
    """DFR on an LTX-2.5 distilled model (see the module docstring). ``models.refiner``: the model with the
    detailing IC-LoRA (``detailing_downscale`` its reference downscale factor; both None: no detailing LoRA);
    ``generation``: the checkpoint's stamp, refused by name when not LTX-2.5. Every input is checked first."""
    models.require("transformer", "video_encoder", "upsampler", "video_decoder", "audio_decoder", "vocoder")
    problems = dfr_problems(models, request.frames, temporal_rounds, temporal_upsampler, generation)
    run = start_run(models, contexts, request, host, PipelineKind.DISTILLED, problems=problems)
    canvas = resolve_canvas(request.frames)
    logger.info("DFR: canvas %d frames, %d keyframe slots, %d temporal round(s)", canvas.frames,
                len(canvas.slots), temporal_rounds)  # fmt: skip
    stage_1, keyframes = _base(run, canvas.slots, canvas.frames)
    stage_2, keyframes = _detail(run, stage_1, canvas.slots, keyframes, detailing_downscale)
    video, frames, fps = stage_2.video, canvas.frames, float(request.fps)
    carried = {p: keyframes[:, :, k : k + 1] for k, p in enumerate(canvas.slots)}
    for index in range(1, int(temporal_rounds) + 1):
        assert temporal_upsampler is not None
        video, frames, carried = _temporal_round(run, index, video, frames, fps, carried, stage_1.audio,
                                                 canvas.frames / request.fps, temporal_upsampler)  # fmt: skip
        fps *= 2
    out_frames = dfr_output_frames(request.frames, temporal_rounds)  # the padded tail is cut on a latent border
    return _finish(run, video[:, :, : (out_frames - 1) // 8 + 1], out_frames, fps, stage_1.audio, carried)


@dataclasses.dataclass(frozen=True)
class DFRResult(GenerationResult):
    """`GenerationResult` plus the final keyframes: pixel frame -> its slot latent (B, C, 1, H, W) (the last
    round's carried and generated slots inside the returned clip)."""

    keyframes: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)


def _finish(run: Run, video: torch.Tensor, frames: int, fps: float, audio: torch.Tensor,
            keyframes: dict[int, torch.Tensor]) -> DFRResult:  # fmt: skip
    m, r = run.models, run.request
    pixels = decode_video(m.video_decoder, video, run.host, generator=run.generator, tiling=r.tiling,
                          on_chunk=r.decode_callback)  # fmt: skip
    waveform, rate = decode_audio(m.audio_decoder, m.vocoder, audio, run.host, duration=frames / fps)  # cut / padded
    return DFRResult(pixels[0], waveform[0], rate, fps, AVLatents(video, audio, frames, fps),
                     {p: k for p, k in keyframes.items() if p < frames})
