"""LTX-2.5 nodes: temporal x2 latent upsample, the duration head's loader and its frame count for "auto" frames.

- `AIPRODTemporalUpsample`: the ``temporal-upscaler-x2`` file doubles the frame rate: a clip of F frames at r fps
  becomes (F - 1) x 2 + 1 frames at 2 r fps (the same duration; the audio latent is unchanged). Follow it with a
  refinement sampler (the reference's DFR pipeline refines with the distilled sigmas from 0.909375).
- `AIPRODDurationHeadLoader` / `AIPRODPredictFrames`: the optional ``ltx-2.5-duration-head`` predicts the clip's
  length from the encoded prompt; its frame count (8 k + 1, clamped to [min_seconds, max_seconds]) goes into any
  ``frames`` input (Empty Latent, the pipeline nodes): "auto" frames.
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch
from comfy_api.latest import io

from ..aiprod_core.duration_head import frames_for_seconds
from ..aiprod_core.pipelines import PromptContexts
from ..aiprod_core.upsampler.temporal import temporal_upsample, temporally_upsampled_frames
from ..loaders.component_loader import check_component, load_component
from .inputs import choice_input, float_input
from .model_files import file_fingerprint, model_choice_problem, model_file_options, resolve_model_file
from .runtime import ComfyModelHost, load_device
from .types import ConditioningSocket, LatentBundle, LatentSocket, LazyModule, UpsamplerSocket, VideoVAE, VideoVAESocket

__all__ = ["AIPRODDurationHeadLoader", "AIPRODPredictFrames", "AIPRODTemporalUpsample", "DurationHeadSocket",
           "temporal_upsample_bundle"]

DurationHeadSocket = io.Custom("AIPROD_DURATION_HEAD")
PATCH_FOLDER = "model_patches"
HEAD_FOLDERS = (PATCH_FOLDER,)
DEFAULT_MIN_SECONDS, DEFAULT_MAX_SECONDS = 1.0, 20.0  # the reference's clamp (ltx-pipelines 1.2.0)
MAX_SECONDS = 600.0


def ensure_patch_folder() -> None:
    """Register ``models/model_patches`` where the running ComfyUI has no such folder key."""
    import folder_paths

    if PATCH_FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, PATCH_FOLDER)
        folder_paths.folder_names_and_paths[PATCH_FOLDER] = ([path], set(folder_paths.supported_pt_extensions))


def _shifted_index(index: int) -> int:
    """A pixel frame index after a temporal x2 upsample: i -> 2 i, and from the end -k -> -(2 k - 1)."""
    return 2 * index if index >= 0 else 2 * index + 1


def temporal_upsample_bundle(bundle: LatentBundle, upsampler: torch.nn.Module, encoder: torch.nn.Module,
                             host: ComfyModelHost) -> LatentBundle:
    """The bundle's video latent upsampled in time (frames (F - 1) x 2 + 1, fps x 2); images keep their frames."""
    latents = bundle.latents
    stats = encoder.per_channel_statistics
    mean, std = stats.get_buffer("mean-of-means"), stats.get_buffer("std-of-means")
    with torch.no_grad(), host.use(upsampler) as model:
        dtype = next(model.parameters()).dtype
        video = latents.video.to(host.device, dtype)
        result = temporal_upsample(video, model, mean.to(host.device, dtype), std.to(host.device, dtype),
                                   latents.fps)
    upsampled = replace(latents, video=result.latent.to(latents.video.dtype),
                        frames=temporally_upsampled_frames(latents.frames), fps=result.frame_rate)
    images = tuple(replace(image, frame_index=_shifted_index(image.frame_index)) for image in bundle.images)
    # the references condition stage 1 only, as after the spatial upsample
    return replace(bundle, latents=upsampled, images=images, references=())


def _upsampler_problem(upsampler: torch.nn.Module) -> str | None:
    config = getattr(upsampler, "config", None)
    if config is None or (config.temporal_upsample and not config.spatial_upsample):
        return None
    return ("upsampler: a spatial latent upsampler (x2 / x1.5 in height and width); AIPROD Temporal Upsample needs "
            "the temporal one (ltx-2.5-temporal-upscaler-x2): use AIPROD Latent Upsample for this file")


class AIPRODTemporalUpsample(io.ComfyNode):
    """Temporal x2 latent upsample (LTX-2.5): twice the frame rate, (frames - 1) x 2 + 1 frames."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTemporalUpsample",
            display_name="AIPROD Temporal Upsample",
            category="AIPROD/sampling",
            description="Doubles the frame rate of the video latent with LTX-2.5's temporal upscaler (frames: "
            "(F - 1) x 2 + 1, fps x 2, same duration; audio unchanged). Follow with a sampler on custom sigmas "
            "(or 'distilled_stage_2') to refine.",
            inputs=[
                LatentSocket.Input("latent", tooltip="Sampled latents."),
                UpsamplerSocket.Input("upsampler", tooltip="The temporal upscaler from 'AIPROD Latent Upsampler "
                                      "Loader' (ltx-2.5-temporal-upscaler-x2)."),
                VideoVAESocket.Input("video_vae", tooltip="The video VAE (its latent statistics)."),
            ],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="Latents at twice the frame rate.")],
        )

    @classmethod
    def execute(cls, latent: LatentBundle, upsampler: LazyModule, video_vae: VideoVAE) -> io.NodeOutput:
        module = upsampler.get()
        problem = _upsampler_problem(module)
        if problem:
            raise ValueError(problem)
        return io.NodeOutput(temporal_upsample_bundle(latent, module, video_vae.encoder.get(), ComfyModelHost()))


class AIPRODDurationHeadLoader(io.ComfyNode):
    """LTX-2.5's optional duration head (models/model_patches)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        ensure_patch_folder()
        return io.Schema(
            node_id="AIPRODDurationHeadLoader",
            display_name="AIPROD Duration Head Loader",
            category="AIPROD/loaders",
            description="Loads LTX-2.5's duration head (ltx-2.5-duration-head, models/model_patches): it predicts "
            "the clip length from the encoded prompt, for 'AIPROD Predict Frames'.",
            inputs=[choice_input("duration_head", model_file_options(HEAD_FOLDERS),
                                 "The duration head file from models/model_patches.")],
            outputs=[DurationHeadSocket.Output(display_name="duration_head", tooltip="The duration head.")],
        )

    @classmethod
    def fingerprint_inputs(cls, duration_head: str | None = None, **_: object) -> object:
        if not isinstance(duration_head, str) or model_choice_problem("duration_head", duration_head, HEAD_FOLDERS):
            return duration_head
        return duration_head, file_fingerprint(resolve_model_file("duration_head", duration_head, HEAD_FOLDERS))

    @classmethod
    def execute(cls, duration_head: str) -> io.NodeOutput:
        ensure_patch_folder()
        path = resolve_model_file("duration_head", duration_head, HEAD_FOLDERS)
        check_component(path, "duration_head")  # keys, shapes, config: named here, before any weight is read
        return io.NodeOutput(LazyModule(
            lambda: load_component(path, "duration_head", dtype=torch.float32, device=load_device()).module,
            f"duration head {path}"))


def _seconds_input(name: str, default: float, tooltip: str) -> io.Float.Input:
    return io.Float.Input(name, default=default, min=0.0, max=MAX_SECONDS, step=0.5, tooltip=tooltip)


class AIPRODPredictFrames(io.ComfyNode):
    """"auto" frames: the clip length the duration head predicts for the prompt, as a frame count."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODPredictFrames",
            display_name="AIPROD Predict Frames",
            category="AIPROD/latent",
            description="Predicts the clip length from the encoded prompt with LTX-2.5's duration head and gives "
            "it as frames (8 k + 1 at the fps, clamped to min_seconds .. max_seconds). Connect 'frames' to the "
            "frames input of a pipeline node or of Empty Latent for automatic length.",
            inputs=[
                DurationHeadSocket.Input("duration_head", tooltip="From 'AIPROD Duration Head Loader'."),
                ConditioningSocket.Input("conditioning", tooltip="The encoded prompt (its connector outputs)."),
                float_input("fps", 24.0, "Frame rate of the clip the frames are for.", step=1.0),
                _seconds_input("min_seconds", DEFAULT_MIN_SECONDS, "Shortest clip (the reference's: 1 s)."),
                _seconds_input("max_seconds", DEFAULT_MAX_SECONDS, "Longest clip (the reference's: 20 s)."),
            ],
            outputs=[io.Int.Output(display_name="frames", tooltip="Predicted frame count (8 k + 1)."),
                     io.Float.Output(display_name="seconds", tooltip="The predicted length before snapping.")],
        )

    @classmethod
    def execute(cls, duration_head: LazyModule, conditioning: PromptContexts, fps: float, min_seconds: float,
                max_seconds: float) -> io.NodeOutput:
        if not 0 <= min_seconds < max_seconds:
            raise ValueError(f"min_seconds={min_seconds!r}, max_seconds={max_seconds!r}: expected 0 <= min < max")
        head = duration_head.get()
        device = next(head.parameters()).device
        prompt = conditioning.positive
        video, audio = (None if t is None else t[:1].to(device) for t in (prompt.video, prompt.audio))
        with torch.no_grad():
            seconds = float(head(video, audio)[0])
        return io.NodeOutput(frames_for_seconds(seconds, fps, min_seconds, max_seconds), seconds)

