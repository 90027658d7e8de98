"""Latent nodes: empty audio+video latents, image / keyframe conditioning, IC-LoRA reference video, save / load."""

from __future__ import annotations

from dataclasses import replace

import comfy.model_management as mm
import torch
from comfy_api.latest import io, ui

from ..aiprod_core.pipelines import AVLatents, ImageCondition, ReferenceCondition, empty_latents
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.preprocess import DEFAULT_IMAGE_CRF, MAX_CRF
from .files import (
    filename_prefix_problem,
    read_tensors,
    resolve_saved_file,
    saved_file_options,
    saved_file_problem,
    write_tensors,
)
from .types import LatentBundle, LatentSocket

__all__ = [
    "AIPRODEmptyLatent",
    "AIPRODImageCondition",
    "AIPRODLoadLatent",
    "AIPRODReferenceVideo",
    "AIPRODSaveLatent",
    "check_size",
    "first_problem",
]

CATEGORY = "AIPROD/latents"
LATENT_KIND = "av_latents"
MAX_FRAMES = 8 * 1024 + 1


# The core's parameter names -> the names of the nodes' inputs, so a message names what the user sets.
NODE_NAMES = {"num_frames=": "frames=", "frame_rate=": "fps=", "num_inference_steps=": "steps="}


def node_message(message: str) -> str:
    for core_name, name in NODE_NAMES.items():
        message = message.replace(core_name, name)
    return message


def first_problem(*checks) -> str | None:
    """Run validation rules (callables raising ``ValueError``); the first message (in the nodes' input names), or
    None when all pass."""
    for check in checks:
        try:
            check()
        except ValueError as exc:
            return node_message(str(exc))
    return None


def check_size(width, height, frames, fps, kind: str = "one_stage") -> str | None:
    """The size rules of `aiprod_core.pipelines.validation`, skipping values linked from other nodes (None)."""
    checks = []
    if width is not None and height is not None:
        checks.append(lambda: rules.check_resolution(width, height, kind))
    if frames is not None:
        checks.append(lambda: rules.check_num_frames(frames))
    if fps is not None:
        checks.append(lambda: rules.check_frame_rate(fps))
    if None not in (width, height, frames):
        checks.append(lambda: rules.check_budget(width, height, frames))
    return first_problem(*checks)


def size_inputs(width: int = 768, height: int = 512, frames: int = 121, fps: float = 24.0) -> list:
    return [
        io.Int.Input("width", default=width, min=32, max=rules.MAX_SIDE, step=32,
                     tooltip="Width in pixels: a multiple of 32 (64 for two-stage pipelines)."),
        io.Int.Input("height", default=height, min=32, max=rules.MAX_SIDE, step=32,
                     tooltip="Height in pixels: a multiple of 32 (64 for two-stage pipelines)."),
        io.Int.Input("frames", default=frames, min=1, max=MAX_FRAMES, step=8,
                     tooltip="Frame count: 8k+1 (9, 17, ..., 97, 121)."),
        io.Float.Input("fps", default=fps, min=rules.MIN_FRAME_RATE, max=rules.MAX_FRAME_RATE, step=0.01,
                       tooltip="Frames per second (any positive number, e.g. 23.976); sets the audio length too."),
    ]


class AIPRODEmptyLatent(io.ComfyNode):
    """Zero audio+video latents for a clip of width x height x frames at fps."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODEmptyLatent",
            display_name="AIPROD Empty Audio+Video Latent",
            category=CATEGORY,
            description="Video latent (1, 128, 1 + (frames - 1) / 8, height / 32, width / 32) and an audio latent "
            "of the same duration (frames / fps seconds).",
            inputs=size_inputs(),
            outputs=[LatentSocket.Output(display_name="latent", tooltip="Empty audio+video latents.")],
        )

    @classmethod
    def validate_inputs(cls, width: int, height: int, frames: int, fps: float) -> bool | str:
        return check_size(width, height, frames, fps) or True

    @classmethod
    def execute(cls, width: int, height: int, frames: int, fps: float) -> io.NodeOutput:
        problem = check_size(width, height, frames, fps)
        if problem:
            raise ValueError(problem)
        return io.NodeOutput(LatentBundle(empty_latents(width, height, frames, fps, device=mm.intermediate_device())))


def image_inputs() -> list:
    return [
        io.Int.Input("frame_index", default=0, min=-MAX_FRAMES, max=MAX_FRAMES - 1,
                     tooltip="Pixel frame the image is placed at: 0 = first, -1 = last (negative counts from the "
                     "end). Must lie inside the clip."),
        io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="1 keeps the image exactly; lower values let the model change it."),
        io.Float.Input("crf", default=DEFAULT_IMAGE_CRF, min=0.0, max=MAX_CRF, step=1.0,
                       tooltip="H.264 compression applied to the image first, as the model was trained (0 = none)."),
    ]


def check_image_settings(strength, crf) -> str | None:
    checks = []
    if strength is not None:
        checks.append(lambda: rules.check_strength(strength))
    if crf is not None and not 0 <= crf <= MAX_CRF:
        return f"crf={crf!r}: must be in [0, {MAX_CRF}] (0 = no compression)"
    return first_problem(*checks)


def add_images(bundle: LatentBundle, images: list[ImageCondition], keyframes_only: bool) -> LatentBundle:
    """The bundle with ``images`` added; frame indices checked against the clip (negative: from the end)."""
    conditions = [*bundle.images, *images]
    described = [rules.ImageCondition(c.frame_index, c.strength, c.crf, tuple(c.image.shape[:2])) for c in conditions]
    try:
        indices = rules.resolve_frame_indices(described, bundle.latents.frames)
    except ValueError as exc:
        raise ValueError(f"frame_index: {exc}") from exc
    resolved = tuple(replace(c, frame_index=i) for c, i in zip(conditions, indices, strict=True))
    return replace(bundle, images=resolved, keyframes_only=bundle.keyframes_only or keyframes_only)


class AIPRODImageCondition(io.ComfyNode):
    """Places an image at a frame of the clip (image-to-video at frame 0, keyframes elsewhere)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODImageCondition",
            display_name="AIPROD Image / Keyframe Condition",
            category=CATEGORY,
            description="Conditions the clip on an image at a frame index: frame 0 replaces the first latent frame "
            "(image-to-video); other frames are appended keyframes. Chain the node for several images. The image "
            "is encoded by the sampler at the latent's size (again after an upsample).",
            inputs=[
                LatentSocket.Input("latent", tooltip="The latents to condition."),
                io.Image.Input("image", tooltip="The image (the first of a batch is used); any size: it is resized "
                               "and centre-cropped to the clip."),
                *image_inputs(),
                io.Boolean.Input("as_keyframe", default=False,
                                 tooltip="On: frame 0 is appended as a keyframe too (keyframe interpolation)."),
            ],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The latents with the image condition.")],
        )

    @classmethod
    def validate_inputs(cls, strength: float, crf: float) -> bool | str:
        return check_image_settings(strength, crf) or True

    @classmethod
    def execute(cls, latent: LatentBundle, image: torch.Tensor, frame_index: int, strength: float, crf: float,
                as_keyframe: bool) -> io.NodeOutput:
        condition = ImageCondition(image[0].cpu(), frame_index, strength, crf)
        return io.NodeOutput(add_images(latent, [condition], as_keyframe))


def reference_frames(frames: torch.Tensor | None, video) -> torch.Tensor:
    """IC-LoRA reference frames (F, H, W, 3) from IMAGE frames or a core VIDEO input."""
    if frames is None and video is None:
        raise ValueError("reference: connect 'frames' (IMAGE) or 'video' (VIDEO)")
    if frames is None:
        frames = video.get_components().images
    return frames[..., :3].cpu()


class AIPRODReferenceVideo(io.ComfyNode):
    """Adds an IC-LoRA reference (control) video to the latents."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODReferenceVideo",
            display_name="AIPROD IC-LoRA Reference Video",
            category=CATEGORY,
            description="The control video of an IC-LoRA, encoded at 1 / reference_downscale_factor of the "
            "latent's size; its tokens guide the generation and are cropped from the result automatically.",
            inputs=[
                LatentSocket.Input("latent", tooltip="The latents to condition (stage-1 size)."),
                io.Image.Input("frames", optional=True, tooltip="Reference frames (IMAGE batch = frames)."),
                io.Video.Input("video", optional=True, tooltip="Or a VIDEO (e.g. from Load Video); frames used."),
                io.Int.Input("reference_downscale_factor", default=1, min=1, max=8,
                             tooltip="From 'AIPROD IC-LoRA Loader' (the LoRA's metadata)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Conditioning strength of the reference tokens."),
                io.Float.Input("attention_strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How strongly reference and generated tokens attend each other."),
            ],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The latents with the reference video.")],
        )

    @classmethod
    def validate_inputs(cls, reference_downscale_factor: int, strength: float,
                        attention_strength: float) -> bool | str:
        checks = []
        if reference_downscale_factor is not None and reference_downscale_factor < 1:
            return f"reference_downscale_factor={reference_downscale_factor!r}: must be an integer >= 1"
        for name, value in (("strength", strength), ("attention_strength", attention_strength)):
            if value is not None:
                checks.append(lambda v=value, n=name: rules.check_strength(v, n))
        return first_problem(*checks) or True

    @classmethod
    def execute(cls, latent: LatentBundle, reference_downscale_factor: int, strength: float,
                attention_strength: float, frames: torch.Tensor | None = None, video=None) -> io.NodeOutput:
        pixels = reference_frames(frames, video)
        lat = latent.latents
        rules.check_reference_video(tuple(pixels.shape), height=lat.height, width=lat.width, num_frames=lat.frames,
                                    downscale_factor=reference_downscale_factor)  # fmt: skip
        reference = ReferenceCondition(pixels, strength, attention_strength)
        return io.NodeOutput(replace(latent, references=(*latent.references, reference),
                                     downscale_factor=reference_downscale_factor))


class AIPRODSaveLatent(io.ComfyNode):
    """Writes audio+video latents to a .safetensors file in the output folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODSaveLatent",
            display_name="AIPROD Save Audio+Video Latent",
            category=CATEGORY,
            description="Saves the video and audio latents with their frame count and fps (conditioning images "
            "are not saved).",
            inputs=[
                LatentSocket.Input("latent", tooltip="Latents to save."),
                io.String.Input("filename_prefix", default="aiprod/latent",
                                tooltip="File name prefix under the output folder."),
            ],
            outputs=[io.String.Output(display_name="file",
                                      tooltip="The saved file as an 'AIPROD Load Latent' choice.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str) -> bool | str:
        return filename_prefix_problem(filename_prefix) or True

    @classmethod
    def execute(cls, latent: LatentBundle, filename_prefix: str) -> io.NodeOutput:
        lat = latent.latents
        tensors = {"video": lat.video, "audio": lat.audio, "frames": torch.tensor(lat.frames),
                   "fps": torch.tensor(lat.fps, dtype=torch.float64)}
        choice = write_tensors(tensors, filename_prefix, LATENT_KIND)
        return io.NodeOutput(choice, ui=ui.PreviewText(choice))


class AIPRODLoadLatent(io.ComfyNode):
    """Reads latents that 'AIPROD Save Audio+Video Latent' wrote."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODLoadLatent",
            display_name="AIPROD Load Audio+Video Latent",
            category=CATEGORY,
            description="Loads audio+video latents from a .safetensors file in the output or input folder.",
            inputs=[io.Combo.Input("latent_file", options=saved_file_options(),
                                   tooltip="A file written by 'AIPROD Save Audio+Video Latent'.")],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The latents (treated as already denoised).")],
        )

    @classmethod
    def validate_inputs(cls, latent_file: str) -> bool | str:
        return saved_file_problem("latent_file", latent_file) or True

    @classmethod
    def execute(cls, latent_file: str) -> io.NodeOutput:
        tensors = read_tensors(resolve_saved_file("latent_file", latent_file), LATENT_KIND)
        latents = AVLatents(tensors["video"], tensors["audio"], int(tensors["frames"]), float(tensors["fps"]))
        return io.NodeOutput(LatentBundle(latents, denoised=True))
