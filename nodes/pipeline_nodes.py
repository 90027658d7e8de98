"""One-node pipelines: each validates its inputs, builds the core's request and calls one of the five pipelines of
`aiprod_core.pipelines` with a `ComfyModelHost`."""

from __future__ import annotations

from typing import Any

import torch
from comfy_api.latest import io

from ..aiprod_core.pipelines import (
    GenerationRequest,
    GenerationResult,
    GuidedSampling,
    ImageCondition,
    PipelineModels,
    PromptContexts,
    ReferenceCondition,
    distilled,
    ic_lora,
    keyframe_interpolation,
    text_to_video,
    two_stage,
)
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.preprocess import DEFAULT_IMAGE_CRF
from ..aiprod_core.pipelines.validation import PipelineKind
from .latent_nodes import check_size, first_problem, reference_frames, size_inputs
from .output_nodes import check_tiling, tiling_config, tiling_inputs
from .runtime import ComfyModelHost, DecodeProgress, StepProgress
from .types import (
    AudioVAE,
    AudioVAESocket,
    ConditioningSocket,
    GuiderSettings,
    GuiderSocket,
    LatentBundle,
    LatentSocket,
    ModelSocket,
    TransformerHandle,
    UpsamplerSocket,
    VideoVAE,
    VideoVAESocket,
)

__all__ = [
    "AIPRODDistilledPipeline",
    "AIPRODICLoraPipeline",
    "AIPRODKeyframePipeline",
    "AIPRODTextToVideoPipeline",
    "AIPRODTwoStagePipeline",
    "parse_frame_indices",
]

CATEGORY = "AIPROD/pipelines"
MAX_SEED = 2**64 - 1
REFINE_STEPS = 3
DISTILLED_STEPS = 8


def _common_inputs(stage_2: bool) -> list:
    models = [
        ModelSocket.Input("model", tooltip="The transformer (stage 1)."),
        VideoVAESocket.Input("video_vae", tooltip="The video VAE."),
        AudioVAESocket.Input("audio_vae", tooltip="The audio VAE + vocoder."),
        ConditioningSocket.Input("conditioning", tooltip="Encoded prompts."),
    ]
    if stage_2:
        models.append(UpsamplerSocket.Input("upsampler", tooltip="The x2 latent upsampler."))
    return [*models, *size_inputs(*((768, 512) if stage_2 else (768, 512))),
            io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True, tooltip="Seed.")]


def _outputs() -> list:
    return [
        io.Image.Output(display_name="images", tooltip="Frames (F, H, W, 3) in 0..1."),
        io.Audio.Output(display_name="audio", tooltip="Audio covering exactly frames / fps seconds."),
        io.Float.Output(display_name="fps", tooltip="The clip's frame rate."),
        LatentSocket.Output(display_name="latent", tooltip="The final audio+video latents."),
    ]


def _steps_input(default: int = 30) -> io.Int.Input:
    return io.Int.Input("steps", default=default, min=1, max=rules.MAX_STEPS,
                        tooltip="Steps of the guided stage (LTX-2.3: 30, LTX-2: 40).")


def _image_inputs() -> list:
    return [
        io.Image.Input("image", optional=True, tooltip="Optional first-frame image (image-to-video)."),
        io.Float.Input("image_strength", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="1 keeps the first frame exactly."),
    ]


def _check(kind: PipelineKind, values: dict[str, Any]) -> str | None:
    """validate_inputs of every pipeline node: size, seed, steps, tiling (linked values are None: skipped)."""
    w, h, f, fps = (values.get(k) for k in ("width", "height", "frames", "fps"))
    checks = []
    if values.get("seed") is not None:
        checks.append(lambda: rules.check_seed(values["seed"]))
    if values.get("steps") is not None:
        checks.append(lambda: rules.check_steps(values["steps"], "steps"))
    for name in ("image_strength",):
        if values.get(name) is not None:
            checks.append(lambda n=name: rules.check_strength(values[n], n))
    tiling = check_tiling(*(values.get(k) for k in ("spatial_tile", "spatial_overlap", "temporal_tile",
                                                     "temporal_overlap")))
    return check_size(w, h, f, fps, kind.value) or first_problem(*checks) or tiling


def _images(image: torch.Tensor | None, strength: float) -> tuple[ImageCondition, ...]:
    return () if image is None else (ImageCondition(image[0].cpu(), 0, strength, DEFAULT_IMAGE_CRF),)


def _request(values: dict[str, Any], images: tuple[ImageCondition, ...], total_steps: int) -> GenerationRequest:
    tiling = tiling_config(values["spatial_tile"], values["spatial_overlap"], values["temporal_tile"],
                           values["temporal_overlap"])
    return GenerationRequest(values["width"], values["height"], values["frames"], values["fps"], values["seed"],
                             images=images, tiling=tiling, callback=StepProgress(total_steps),
                             decode_callback=DecodeProgress())


def _models(values: dict[str, Any], refiner: TransformerHandle | None = None) -> PipelineModels:
    model: TransformerHandle = values["model"]
    video_vae: VideoVAE = values["video_vae"]
    audio_vae: AudioVAE = values["audio_vae"]
    upsampler = values.get("upsampler")
    return PipelineModels(
        transformer=model.module(), video_encoder=video_vae.encoder.get(), video_decoder=video_vae.decoder.get(),
        audio_decoder=audio_vae.decoder.get(), vocoder=audio_vae.vocoder.get(),
        upsampler=None if upsampler is None else upsampler.get(),
        refiner=None if refiner is None else refiner.module(), dtype=model.dtype,
    )  # fmt: skip


def _guided(guider: GuiderSettings | None, steps: int, model: TransformerHandle) -> GuidedSampling:
    if guider is None:
        return GuidedSampling(steps=steps, **_default_streams(model))
    return GuidedSampling(steps, guider.video, guider.audio)


def _default_streams(model: TransformerHandle) -> dict[str, Any]:
    defaults = GuidedSampling.defaults(ltx23=rules.generation_family(model.generation) != "2.0")
    return {"video": defaults.video, "audio": defaults.audio}


def _wrap(result: GenerationResult) -> io.NodeOutput:
    audio = {"waveform": result.waveform.unsqueeze(0).cpu(), "sample_rate": int(result.sample_rate)}
    return io.NodeOutput(result.frames.cpu(), audio, float(result.fps), LatentBundle(result.latents, denoised=True))


def _run(pipeline, *args: Any, **kwargs: Any) -> GenerationResult:
    """Pipeline errors are ``ValueError`` naming the parameter; they reach the user as an execution error."""
    return pipeline(*args, **kwargs, host=ComfyModelHost())


class AIPRODTextToVideoPipeline(io.ComfyNode):
    """Text/image-to-video in one guided stage at the target size."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTextToVideoPipeline",
            display_name="AIPROD Text/Image to Video (one stage)",
            category=CATEGORY,
            description="One guided stage at the full size (ltx-pipelines TI2VidOneStagePipeline). Width and "
            "height: multiples of 32; frames 8k+1.",
            inputs=[*_common_inputs(False), _steps_input(),
                    GuiderSocket.Input("guider", optional=True, tooltip="Guidance; default: ltx-pipelines'."),
                    *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, frames=None, fps=None, seed=None, steps=None,
                        image_strength=None, spatial_tile=None, spatial_overlap=None, temporal_tile=None,
                        temporal_overlap=None) -> bool | str:
        return _check(PipelineKind.ONE_STAGE, locals()) or True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = _request(values, _images(values.get("image"), values["image_strength"]), values["steps"])
        guided = _guided(values.get("guider"), values["steps"], values["model"])
        return _wrap(_run(text_to_video, _models(values), values["conditioning"], request, guided))


class AIPRODTwoStagePipeline(io.ComfyNode):
    """Guided half-size stage, x2 upsample, 3 distilled refinement steps by the refiner."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTwoStagePipeline",
            display_name="AIPROD Two-Stage Pipeline",
            category=CATEGORY,
            description="Guided stage at half size, x2 latent upsample, 3 refinement steps by 'refiner' (the model "
            "with the distilled LoRA). Width and height: multiples of 64; frames 8k+1.",
            inputs=[*_common_inputs(True),
                    ModelSocket.Input("refiner", tooltip="Stage-2 transformer (base model + distilled LoRA)."),
                    _steps_input(),
                    GuiderSocket.Input("guider", optional=True, tooltip="Guidance; default: ltx-pipelines'."),
                    *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, frames=None, fps=None, seed=None, steps=None,
                        image_strength=None, spatial_tile=None, spatial_overlap=None, temporal_tile=None,
                        temporal_overlap=None) -> bool | str:
        return _check(PipelineKind.TWO_STAGES, locals()) or True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = _request(values, _images(values.get("image"), values["image_strength"]),
                           values["steps"] + REFINE_STEPS)
        guided = _guided(values.get("guider"), values["steps"], values["model"])
        return _wrap(_run(two_stage, _models(values, values["refiner"]), values["conditioning"], request, guided))


class AIPRODDistilledPipeline(io.ComfyNode):
    """The distilled model: 8 fixed steps at half size, x2 upsample, 3 fixed steps."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODDistilledPipeline",
            display_name="AIPROD Distilled Pipeline",
            category=CATEGORY,
            description="The distilled checkpoint: 8 steps at half size, x2 upsample, 3 refinement steps, positive "
            "prompt only (ltx-pipelines DistilledPipeline). Width and height: multiples of 64; frames 8k+1.",
            inputs=[*_common_inputs(True), *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, frames=None, fps=None, seed=None,
                        image_strength=None, spatial_tile=None, spatial_overlap=None, temporal_tile=None,
                        temporal_overlap=None) -> bool | str:
        return _check(PipelineKind.DISTILLED, locals()) or True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = _request(values, _images(values.get("image"), values["image_strength"]),
                           DISTILLED_STEPS + REFINE_STEPS)
        return _wrap(_run(distilled, _models(values), PromptContexts(values["conditioning"].positive), request))


class AIPRODICLoraPipeline(io.ComfyNode):
    """IC-LoRA: stage 1 with the reference (control) video, stage 2 by the base model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODICLoraPipeline",
            display_name="AIPROD IC-LoRA Pipeline",
            category=CATEGORY,
            description="Stage 1 by the model with the IC-LoRA (8 distilled steps) conditioned on the reference "
            "video at 1 / the LoRA's reference_downscale_factor (read from its metadata), x2 upsample, stage 2 by "
            "'refiner' (3 steps). Reference tokens are cropped from the result.",
            inputs=[*_common_inputs(True),
                    ModelSocket.Input("refiner",
                                      tooltip="Stage-2 transformer WITHOUT the IC-LoRA (the base distilled model): "
                                      "the IC-LoRA conditions stage 1 only."),
                    io.Image.Input("reference_frames", optional=True, tooltip="Reference video as IMAGE frames."),
                    io.Video.Input("reference_video", optional=True, tooltip="Or a VIDEO input."),
                    io.Float.Input("reference_strength", default=1.0, min=0.0, max=1.0, step=0.01,
                                   tooltip="Conditioning strength of the reference tokens."),
                    *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, frames=None, fps=None, seed=None, reference_strength=None,
                        image_strength=None, spatial_tile=None, spatial_overlap=None, temporal_tile=None,
                        temporal_overlap=None) -> bool | str:
        values = locals()
        problem = _check(PipelineKind.IC_LORA, values)
        if problem is None and values.get("reference_strength") is not None:
            problem = first_problem(lambda: rules.check_strength(values["reference_strength"], "reference_strength"))
        return problem or True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        pixels = reference_frames(values.get("reference_frames"), values.get("reference_video"))
        references = (ReferenceCondition(pixels, values["reference_strength"]),)
        request = _request(values, _images(values.get("image"), values["image_strength"]),
                           DISTILLED_STEPS + REFINE_STEPS)
        model: TransformerHandle = values["model"]
        return _wrap(_run(ic_lora, _models(values, values["refiner"]),
                          PromptContexts(values["conditioning"].positive), request, references,
                          downscale_factor=model.reference_downscale_factor))


def parse_frame_indices(text: str, count: int | None = None) -> tuple[int, ...]:
    """'0, -1' -> (0, -1); ``count``: how many images they must place."""
    try:
        indices = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as exc:
        raise ValueError(f"frame_indices={text!r}: expected comma-separated integers such as '0, -1'") from exc
    if count is not None and len(indices) != count:
        raise ValueError(f"frame_indices={text!r}: {len(indices)} indices for {count} images; give one per image")
    return indices


class AIPRODKeyframePipeline(io.ComfyNode):
    """Keyframe interpolation: every image a keyframe at its frame index, through the two-stage flow."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODKeyframePipeline",
            display_name="AIPROD Keyframe Interpolation Pipeline",
            category=CATEGORY,
            description="Each image of the batch is a keyframe at the matching entry of frame_indices (negative = "
            "from the end, -1 = last frame); guided half-size stage, x2 upsample, refinement by 'refiner'.",
            inputs=[*_common_inputs(True),
                    ModelSocket.Input("refiner", tooltip="Stage-2 transformer (base model + distilled LoRA)."),
                    _steps_input(),
                    GuiderSocket.Input("guider", optional=True, tooltip="Guidance; default: ltx-pipelines'."),
                    io.Image.Input("images", tooltip="Keyframe images (one per batch entry)."),
                    io.String.Input("frame_indices", default="0, -1",
                                    tooltip="Pixel frame of each image, comma-separated (negative counts from the "
                                    "end). Every index must lie inside the clip."),
                    io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                                   tooltip="Keyframe conditioning strength."),
                    *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, frames=None, fps=None, seed=None, steps=None,
                        frame_indices=None, strength=None, spatial_tile=None, spatial_overlap=None, temporal_tile=None,
                        temporal_overlap=None) -> bool | str:
        values = locals()
        problem = _check(PipelineKind.KEYFRAME_INTERPOLATION, values)
        text, frames = values.get("frame_indices"), values.get("frames")
        if problem is None and text is not None:
            problem = first_problem(lambda: _check_indices(text, frames))
        if problem is None and values.get("strength") is not None:
            problem = first_problem(lambda: rules.check_strength(values["strength"], "strength"))
        return problem or True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        images: torch.Tensor = values["images"]
        indices = parse_frame_indices(values["frame_indices"], images.shape[0])
        _check_indices(values["frame_indices"], values["frames"])
        conditions = tuple(ImageCondition(images[i].cpu(), index, values["strength"], DEFAULT_IMAGE_CRF)
                           for i, index in enumerate(indices))
        request = _request(values, conditions, values["steps"] + REFINE_STEPS)
        guided = _guided(values.get("guider"), values["steps"], values["model"])
        return _wrap(_run(keyframe_interpolation, _models(values, values["refiner"]), values["conditioning"],
                          request, guided))


def _check_indices(text: str, frames: int | None) -> None:
    indices = parse_frame_indices(text)
    if frames is None:
        return
    try:
        rules.resolve_frame_indices([rules.ImageCondition(i) for i in indices], frames)
    except ValueError as exc:
        raise ValueError(f"frame_indices={text!r}: {exc}") from exc
