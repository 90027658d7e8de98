"""Latent nodes: empty audio+video latents, image / keyframe conditioning, IC-LoRA reference video, save / load."""

from __future__ import annotations

from dataclasses import replace

import comfy.model_management as mm
import torch
from comfy_api.latest import io, ui

from ..aiprod_core.pipelines import AVLatents, ImageCondition, ReferenceCondition, empty_latents
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.preprocess import MAX_CRF
from ..aiprod_core.pipelines.saved_latents import saved_latents_problems
from ..aiprod_core.pipelines.validation import PipelineKind, check_problems
from .files import (
    filename_prefix_problem,
    read_tensors,
    resolve_saved_file,
    saved_file_options,
    saved_file_problem,
    write_tensors,
)
from .inputs import choice_input, float_input, input_rule, int_input, reference_frames, size_inputs
from .problems import check_inputs
from .types import LatentBundle, LatentSocket

__all__ = [
    "AIPRODEmptyLatent",
    "AIPRODImageCondition",
    "AIPRODLoadLatent",
    "AIPRODReferenceVideo",
    "AIPRODSaveLatent",
    "latents_from_tensors",
]

CATEGORY = "AIPROD/latents"
LATENT_KIND = "av_latents"
# The Image Condition node's crf "auto": the sampler's model generation decides (LTX-2 / LTX-2.3: 33, LTX-2.5: 18;
# ltx-pipelines 1.2.0 resolves an unset crf from its checkpoint). Outside x264's 0..51, so a saved explicit CRF
# (the former default 33 included) stays what it was.
AUTO_CRF = -1


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
            inputs=size_inputs(PipelineKind.ONE_STAGE),
            outputs=[LatentSocket.Output(display_name="latent", tooltip="Empty audio+video latents.")],
        )

    @classmethod
    def execute(cls, width: int, height: int, frames: int, fps: float) -> io.NodeOutput:
        check_problems(rules.size_problems(width, height, frames, fps))
        return io.NodeOutput(LatentBundle(empty_latents(width, height, frames, fps, device=mm.intermediate_device())))


def image_inputs() -> list:
    return [
        io.Int.Input("frame_index", default=0, min=-rules.MAX_FRAMES, max=rules.MAX_FRAMES - 1,
                     tooltip="Pixel frame the image is placed at: 0 = first, -1 = last (negative counts from the "
                     "end). Must lie inside the clip."),
        float_input("strength", 1.0, "1 keeps the image exactly; lower values let the model change it."),
        io.Float.Input("crf", default=AUTO_CRF, min=AUTO_CRF, max=MAX_CRF, step=1.0,
                       tooltip="H.264 compression applied to the image first, as the model was trained. -1 = auto: "
                       "the sampler's model decides (LTX-2 / LTX-2.3: 33, LTX-2.5: 18); 0 = none; 1..51 = that CRF "
                       "on every model (a workflow saved with 33 keeps 33)."),
    ]


def image_crf(crf: float) -> float | None:
    """The node's ``crf`` for the core: None for ``AUTO_CRF`` (the generation's value, resolved by the sampler),
    else the CRF itself; anything else outside 0..51 is refused naming the input."""
    if crf == AUTO_CRF:
        return None
    problem = input_rule("crf").problem("crf", crf)
    if problem:
        raise ValueError(f"{problem}; or {AUTO_CRF} = auto (the model generation's CRF)")
    return crf


def add_images(bundle: LatentBundle, images: list[ImageCondition], keyframes_only: bool) -> LatentBundle:
    """The bundle with ``images`` added; frame indices checked against the clip (negative: from the end)."""
    conditions = [*bundle.images, *images]
    described = [rules.ImageCondition(c.frame_index, c.strength, c.crf, tuple(c.image.shape[:2])) for c in conditions]
    try:
        indices = rules.resolve_frame_indices(described, bundle.latents.frames)
    except ValueError as exc:  # the chained images are named images[i]; this node's input is frame_index
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
    def execute(cls, latent: LatentBundle, image: torch.Tensor, frame_index: int, strength: float, crf: float,
                as_keyframe: bool) -> io.NodeOutput:
        check_inputs(locals(), ("strength",))
        condition = ImageCondition(image[0].cpu(), frame_index, strength, image_crf(crf))
        return io.NodeOutput(add_images(latent, [condition], as_keyframe))


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
                int_input("reference_downscale_factor", 1, "From 'AIPROD IC-LoRA Loader' (the LoRA's metadata)."),
                float_input("strength", 1.0, "Conditioning strength of the reference tokens."),
                float_input("attention_strength", 1.0, "How strongly reference and generated tokens attend each "
                            "other."),
            ],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The latents with the reference video.")],
        )

    @classmethod
    def execute(cls, latent: LatentBundle, reference_downscale_factor: int, strength: float,
                attention_strength: float, frames: torch.Tensor | None = None, video=None) -> io.NodeOutput:
        check_inputs(locals(), ("reference_downscale_factor", "strength", "attention_strength"))
        pixels = reference_frames(frames, video)
        lat = latent.latents
        rules.check_reference_video(tuple(pixels.shape), height=lat.height, width=lat.width, frames=lat.frames,
                                    downscale_factor=reference_downscale_factor)
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
            inputs=[choice_input("latent_file", saved_file_options(),
                                 "A file written by 'AIPROD Save Audio+Video Latent'.")],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The latents (treated as already denoised).")],
        )

    @classmethod
    def validate_inputs(cls, latent_file: str) -> bool | str:
        return saved_file_problem("latent_file", latent_file) or True

    @classmethod
    def execute(cls, latent_file: str) -> io.NodeOutput:
        tensors = read_tensors(resolve_saved_file("latent_file", latent_file), LATENT_KIND)
        return io.NodeOutput(LatentBundle(latents_from_tensors(tensors, latent_file), denoised=True))


def latents_from_tensors(tensors: dict[str, torch.Tensor], name: str) -> AVLatents:
    """A saved latent file's tensors, checked against what the sampler and the decoders accept (`latents_problems`)
    before anything is allocated from them."""
    check_problems(saved_latents_problems(tensors, name))
    frames, fps = int(tensors["frames"]), float(tensors["fps"])
    return AVLatents(tensors["video"], tensors["audio"], frames, fps)
