"""Nodes that edit an existing clip: retake (regenerate a time window) and video extension, each as a one-node
pipeline and as stage nodes (encode the clip, mark the window, sample with 'AIPROD Sampler', decode, append).

A source is a VIDEO (e.g. core 'Load Video': frames, audio and frame rate) or IMAGE frames with an fps and an
optional AUDIO. Its inputs are checked before the prompt is encoded (the conditioning input is lazy)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from comfy_api.latest import io

from ..aiprod_core.conditioning import Frozen, TemporalRegionMask
from ..aiprod_core.pipelines import (
    ExtendRequest,
    PipelineModels,
    PromptContexts,
    RetakeRequest,
    clip_rules,
    encode_source,
    extend,
    retake,
)
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.edits import append_continuation, canvas_latents, extend_problems, retake_problems
from ..aiprod_core.pipelines.validation import PipelineKind, tiling_config
from .clip_inputs import audio_clip, audio_output, source_clip, source_inputs
from .inputs import TILING, choice_input, float_input, int_input, seed_input, tiling_inputs
from .pipeline_base import guided_sampling, pipeline_models, pipeline_outputs, wrap_result
from .problems import guider_model_problems, input_problems
from .runtime import ComfyModelHost, DecodeProgress, StepProgress
from .types import (
    AudioVAE,
    AudioVAESocket,
    ConditioningSocket,
    GuiderSocket,
    LatentBundle,
    LatentSocket,
    ModelSocket,
    VideoVAE,
    VideoVAESocket,
)

__all__ = [
    "AIPRODAppendContinuation",
    "AIPRODEncodeClip",
    "AIPRODExtendPipeline",
    "AIPRODRetakePipeline",
    "AIPRODRetakeWindow",
]

CATEGORY = "AIPROD/edit"
SCHEDULES = ("distilled", "guided")  # the distilled model's 8 fixed steps (no CFG), or `steps` with a guider
DISTILLED_STEPS = 8
SOURCE_FPS = 24.0


def source_inputs_schema() -> list:
    return [
        io.Video.Input("video", optional=True, tooltip="The clip (e.g. from core 'Load Video'): its frames, audio "
                       "and frame rate. Frames 8k+1, width and height multiples of 32."),
        io.Image.Input("images", optional=True, tooltip="Or the clip as IMAGE frames (with fps and audio)."),
        io.Audio.Input("audio", optional=True, tooltip="The clip's audio (replaces a VIDEO's own track); none: the "
                       "audio is generated."),
        float_input("fps", SOURCE_FPS, "Frame rate of IMAGE frames (a VIDEO brings its own)."),
    ]


def _schedule_inputs() -> list:
    return [
        choice_input("schedule", SCHEDULES, "distilled: the distilled model's 8 fixed steps, positive prompt only; "
                     "guided: 'steps' of the LTX-2 schedule with the guider (dev models).", default="distilled"),
        int_input("steps", 30, "Steps when guided (LTX-2.3: 30, LTX-2: 40)."),
        GuiderSocket.Input("guider", optional=True, tooltip="Guidance when guided; default: ltx-pipelines'."),
    ]


def _common_inputs() -> list:
    return [
        ModelSocket.Input("model", tooltip="The transformer (distilled, or dev with schedule 'guided')."),
        VideoVAESocket.Input("video_vae", tooltip="The video VAE (encodes the clip, decodes the result)."),
        AudioVAESocket.Input("audio_vae", tooltip="The audio VAE + vocoder (its encoder codes the clip's audio)."),
        ConditioningSocket.Input("conditioning", lazy=True, tooltip="Encoded prompts (encoded only once every "
                                 "other input of this node passed its checks)."),
        *source_inputs_schema(),
    ]


def _guided_of(values: dict[str, Any]):
    if values.get("schedule") == "distilled":
        return None
    return guided_sampling(values.get("guider"), values.get("steps") or 1, values["model"])


def _edit_models(values: dict[str, Any]) -> PipelineModels:
    audio_vae: AudioVAE = values["audio_vae"]
    return replace(pipeline_models({**values, "upsampler": None}),
                   audio_encoder=None if audio_vae.encoder is None else audio_vae.encoder.get())  # fmt: skip


class _EditPipeline(io.ComfyNode):
    """What the edit pipeline nodes share: every problem raised before the prompt is encoded."""

    KIND = PipelineKind.RETAKE

    @classmethod
    def request(cls, values: dict[str, Any], total_steps: int | None = None) -> Any:
        raise NotImplementedError

    @classmethod
    def own_problems(cls, request: Any) -> list[str]:
        raise NotImplementedError

    @classmethod
    def problems(cls, values: dict[str, Any]) -> list[str]:
        problems = input_problems(values, ("seed", "steps")) + rules.tiling_problems(*(values.get(k) for k in TILING))
        if problems:
            return problems
        request = cls.request(values)
        problems = cls.own_problems(request)
        if not problems:
            problems += rules.request_problems(cls.KIND, width=request.width, height=request.height,
                                               frames=request.frames, fps=request.fps, seed=request.seed)
        if values.get("schedule") == "guided" and values.get("model") is not None and not problems:
            problems += guider_model_problems(_guided_of(values), values["model"])
        return problems

    @classmethod
    def check_lazy_status(cls, conditioning: PromptContexts | None = None, **values: Any) -> list[str]:
        if conditioning is not None:
            return []
        rules.check_problems(cls.problems(values))
        return ["conditioning"]

    @classmethod
    def _steps(cls, values: dict[str, Any]) -> int:
        return DISTILLED_STEPS if values["schedule"] == "distilled" else values["steps"]

    @classmethod
    def _contexts(cls, values: dict[str, Any]) -> PromptContexts:
        contexts: PromptContexts = values["conditioning"]
        return PromptContexts(contexts.positive) if values["schedule"] == "distilled" else contexts


def _callbacks(values: dict[str, Any], steps: int | None) -> dict[str, Any]:
    if steps is None:
        return {}
    return {"tiling": tiling_config(*(values[k] for k in TILING)), "callback": StepProgress(steps),
            "decode_callback": DecodeProgress()}


class AIPRODRetakePipeline(_EditPipeline):
    """Regenerate [start_time, end_time) of a clip; the rest is kept (up to the VAE round trip)."""

    KIND = PipelineKind.RETAKE

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODRetakePipeline",
            display_name="AIPROD Retake (regenerate a time window)",
            category=CATEGORY,
            description="Encodes the clip, regenerates only [start_time, end_time) seconds (times on latent-frame "
            "boundaries: 0, 1/fps, 9/fps, 17/fps, ...) from the prompt, and decodes it (ltx-pipelines "
            "RetakePipeline). regenerate_video / regenerate_audio off keep that stream exactly. The latents outside "
            "the window are kept bit for bit; decoded, frames and audio far from the window equal the VAE round "
            "trip of the source, and the decoders blend the new content into their neighbourhood.",
            inputs=[*_common_inputs(),
                    float_input("start_time", 1.0 / SOURCE_FPS, "Window start, seconds (a latent-frame boundary).",
                                step=0.001),
                    float_input("end_time", 9.0 / SOURCE_FPS, "Window end, seconds (a latent-frame boundary).",
                                step=0.001),
                    io.Boolean.Input("regenerate_video", default=True, tooltip="Off: the video is kept exactly."),
                    io.Boolean.Input("regenerate_audio", default=True, tooltip="Off: the audio is kept exactly."),
                    *_schedule_inputs(), seed_input(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def request(cls, values: dict[str, Any], total_steps: int | None = None) -> RetakeRequest:
        return RetakeRequest(source=source_inputs(values), seed=values["seed"], start_time=values["start_time"],
                             end_time=values["end_time"], regenerate_video=values["regenerate_video"],
                             regenerate_audio=values["regenerate_audio"],
                             **_callbacks(values, total_steps))  # fmt: skip

    @classmethod
    def own_problems(cls, request: Any) -> list[str]:
        return retake_problems(request)

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = cls.request(values, cls._steps(values))
        result = retake(_edit_models(values), cls._contexts(values), request, _guided_of(values),
                        host=ComfyModelHost())  # fmt: skip
        return wrap_result(result)


class AIPRODExtendPipeline(_EditPipeline):
    """Continue a clip by extend_frames frames; the source frames and audio come back unchanged."""

    KIND = PipelineKind.EXTEND

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODExtendPipeline",
            display_name="AIPROD Extend Video (continue a clip)",
            category=CATEGORY,
            description="Continues the clip by extend_frames frames (multiples of 8) and its audio: the last "
            "context_frames frames (8k+1; at most the clip) and their audio are encoded at the start of a canvas "
            "whose rest is generated from the prompt, and the continuation is appended to the untouched source "
            "(its frames and waveform bit for bit, the new audio from the next sample on).",
            inputs=[*_common_inputs(),
                    int_input("extend_frames", 48, "Frames to add (a multiple of 8)."),
                    io.Int.Input("context_frames", default=25, min=1, max=rules.MAX_FRAMES, step=8,
                                 tooltip="How many of the clip's last frames the continuation sees (8k+1; capped "
                                 "at the clip's length)."),
                    *_schedule_inputs(), seed_input(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def request(cls, values: dict[str, Any], total_steps: int | None = None) -> ExtendRequest:
        source = source_inputs(values)
        context = min(values["context_frames"], source.num_frames) if source is not None else 0
        return ExtendRequest(source=source, seed=values["seed"], extend_frames=values["extend_frames"],
                             context_frames=context, **_callbacks(values, total_steps))  # fmt: skip

    @classmethod
    def own_problems(cls, request: Any) -> list[str]:
        return extend_problems(request)

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = cls.request(values, cls._steps(values))
        return wrap_result(extend(_edit_models(values), cls._contexts(values), request, _guided_of(values),
                            host=ComfyModelHost()))  # fmt: skip


class AIPRODEncodeClip(io.ComfyNode):
    """Stage node: a clip -> its latents (for a retake), or an extension canvas (its last frames + room to
    generate)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODEncodeClip",
            display_name="AIPROD Encode Clip",
            category=CATEGORY,
            description="Encodes a clip's frames (video VAE) and audio (audio VAE encoder). extend_frames 0: the "
            "clip itself, for 'AIPROD Retake Window'. extend_frames > 0: an extension canvas, the last "
            "context_frames frames followed by extend_frames to generate (already marked), for 'AIPROD Sampler' "
            "and then 'AIPROD Append Continuation'.",
            inputs=[VideoVAESocket.Input("video_vae", tooltip="The video VAE."),
                    AudioVAESocket.Input("audio_vae", tooltip="The audio VAE (its encoder)."),
                    *source_inputs_schema(),
                    io.Int.Input("extend_frames", default=0, min=0, max=rules.MAX_FRAMES - 1, step=8,
                                 tooltip="0: encode the clip; > 0 (multiple of 8): an extension canvas."),
                    io.Int.Input("context_frames", default=25, min=1, max=rules.MAX_FRAMES, step=8,
                                 tooltip="Extension: the clip's last frames the canvas starts with (8k+1; capped "
                                 "at the clip's length).")],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The clip's (or the canvas') latents.")],
        )

    @classmethod
    def execute(cls, video_vae: VideoVAE, audio_vae: AudioVAE, extend_frames: int, context_frames: int,
                fps: float, video=None, images=None, audio=None) -> io.NodeOutput:
        source = source_clip(video, images, audio, fps)
        host = ComfyModelHost()
        encoder = None if audio_vae.encoder is None or source.audio is None else audio_vae.encoder.get()
        if extend_frames == 0:
            request = RetakeRequest(source=source, seed=0, start_time=0.0, end_time=source.duration)
            rules.check_problems(retake_problems(request))
            return io.NodeOutput(LatentBundle(encode_source(video_vae.encoder.get(), encoder, source, host)))
        request = ExtendRequest(source=source, seed=0, extend_frames=extend_frames,
                                context_frames=min(context_frames, source.num_frames))  # fmt: skip
        rules.check_problems(extend_problems(request))
        latents, items = canvas_latents(video_vae.encoder.get(), encoder, request, host)
        return io.NodeOutput(LatentBundle(latents, video_items=items[0], audio_items=items[1]))


class AIPRODRetakeWindow(io.ComfyNode):
    """Stage node: mark the window a sampler regenerates (or freeze a stream)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODRetakeWindow",
            display_name="AIPROD Retake Window",
            category=CATEGORY,
            description="Marks [start_time, end_time) seconds of the encoded clip for regeneration (latent-frame "
            "boundaries); a stream with regenerate_* off is frozen. Sample with 'AIPROD Sampler' (distilled or "
            "ltx2 schedule), then decode.",
            inputs=[LatentSocket.Input("latent", tooltip="From 'AIPROD Encode Clip' (extend_frames 0)."),
                    float_input("start_time", 1.0 / SOURCE_FPS, "Window start, seconds.", step=0.001),
                    float_input("end_time", 9.0 / SOURCE_FPS, "Window end, seconds.", step=0.001),
                    io.Boolean.Input("regenerate_video", default=True, tooltip="Off: the video is kept exactly."),
                    io.Boolean.Input("regenerate_audio", default=True, tooltip="Off: the audio is kept exactly.")],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The latents with the window marked.")],
        )

    @classmethod
    def execute(cls, latent: LatentBundle, start_time: float, end_time: float, regenerate_video: bool,
                regenerate_audio: bool) -> io.NodeOutput:
        lat = latent.latents
        window, problems = clip_rules.window_problems(start_time, end_time, lat.frames, lat.fps)
        if not (regenerate_video or regenerate_audio):
            problems.append("regenerate_video=False, regenerate_audio=False: nothing to regenerate; turn one on")
        rules.check_problems(problems)
        region = TemporalRegionMask(window.start_time, window.end_time)
        return io.NodeOutput(replace(latent, video_items=(region if regenerate_video else Frozen(),),
                                     audio_items=(region if regenerate_audio else Frozen(),)))


class AIPRODAppendContinuation(io.ComfyNode):
    """Stage node: the source clip followed by the decoded canvas' continuation (frames and audio)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODAppendContinuation",
            display_name="AIPROD Append Continuation",
            category=CATEGORY,
            description="Appends the continuation of a decoded extension canvas to the source: the source's "
            "frames and audio unchanged, then the canvas from the end of its context on (the audio resampled to "
            "the source's rate, no gap).",
            inputs=[*source_inputs_schema(),
                    io.Image.Input("canvas_images", tooltip="The decoded canvas ('AIPROD Video Decode')."),
                    io.Audio.Input("canvas_audio", tooltip="The decoded canvas audio ('AIPROD Audio Decode')."),
                    io.Int.Input("context_frames", default=25, min=1, max=rules.MAX_FRAMES, step=8,
                                 tooltip="As given to 'AIPROD Encode Clip' (capped at the clip's length).")],
            outputs=pipeline_outputs()[:3],
        )

    @classmethod
    def execute(cls, canvas_images: torch.Tensor, canvas_audio: dict, context_frames: int, fps: float,
                video=None, images=None, audio=None) -> io.NodeOutput:
        source = source_clip(video, images, audio, fps)
        frames, waveform = append_continuation(source, canvas_images, audio_clip(canvas_audio, "canvas_audio"),
                                               min(context_frames, source.num_frames))  # fmt: skip
        return io.NodeOutput(frames, audio_output(waveform), float(source.fps))
