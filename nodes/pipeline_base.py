"""What the one-node pipelines share: their common inputs and outputs, the base node class (input checks before
any model work), and the mapping of node values to the core's request, models and guidance."""

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
)
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.generations import generation_defaults
from ..aiprod_core.pipelines.validation import PipelineKind, tiling_config
from .inputs import TILING, float_input, int_input, seed_input, size_inputs
from .problems import contexts_model_problems, guider_model_problems, input_problems
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
    "CATEGORY",
    "DISTILLED_STEPS",
    "INDICES_EXAMPLE",
    "REFINER_TOOLTIP",
    "REFINE_STEPS",
    "PipelineNode",
    "common_inputs",
    "default_streams",
    "frame_index_problems",
    "generation_request",
    "guided_inputs",
    "guided_sampling",
    "image_conditions",
    "image_crf",
    "image_inputs",
    "pipeline_models",
    "pipeline_outputs",
    "pipeline_problems",
    "run_pipeline",
    "wrap_result",
]

CATEGORY = "AIPROD/pipelines"
REFINE_STEPS = 3
DISTILLED_STEPS = 8


def common_inputs(kind: PipelineKind) -> list:
    models = [
        ModelSocket.Input("model", tooltip="The transformer (stage 1)."),
        VideoVAESocket.Input("video_vae", tooltip="The video VAE."),
        AudioVAESocket.Input("audio_vae", tooltip="The audio VAE + vocoder."),
        ConditioningSocket.Input("conditioning", lazy=True, tooltip="Encoded prompts (encoded only once every "
                                 "other input of this node passed its checks)."),
    ]
    if kind.two_stage:
        models.append(UpsamplerSocket.Input("upsampler", tooltip="The x2 latent upsampler."))
    return [*models, *size_inputs(kind), seed_input()]


def pipeline_outputs() -> list:
    return [
        io.Image.Output(display_name="images", tooltip="Frames (F, H, W, 3) in 0..1."),
        io.Audio.Output(display_name="audio", tooltip="Audio covering exactly frames / fps seconds."),
        io.Float.Output(display_name="fps", tooltip="The clip's frame rate."),
        LatentSocket.Output(display_name="latent", tooltip="The final audio+video latents."),
    ]


def guided_inputs() -> list:
    return [int_input("steps", 30, "Steps of the guided stage (LTX-2.3 / LTX-2.5: 30, LTX-2: 40)."),
            GuiderSocket.Input("guider", optional=True, tooltip="Guidance; default: ltx-pipelines' for the model's "
                               "generation (STG block 28 for LTX-2.3 / LTX-2.5, 29 for LTX-2).")]


def image_inputs() -> list:
    return [
        io.Image.Input("image", optional=True, tooltip="Optional first-frame image (image-to-video)."),
        float_input("image_strength", 1.0, "1 keeps the first frame exactly."),
    ]


_VALUES = ("seed", "steps", "image_strength", "reference_strength", "strength")


def pipeline_problems(kind: PipelineKind, values: dict[str, Any]) -> list[str]:
    """Every problem of a pipeline node's inputs, before its prompt is encoded: size and rate on the pipeline's
    grid, seed / steps / strengths, tiling, keyframe indices, and the guider's STG blocks against the model."""
    problems = rules.size_problems(*(values.get(k) for k in ("width", "height", "frames", "fps")), kind)
    problems += input_problems(values, _VALUES)
    problems += rules.tiling_problems(*(values.get(k) for k in TILING))
    if values.get("frame_indices") is not None:
        problems += frame_index_problems(values["frame_indices"], values.get("frames"), values.get("images"))
    model = values.get("model")
    if kind.rules.guided and model is not None and not problems:
        problems += guider_model_problems(guided_sampling(values.get("guider"), values.get("steps") or 1, model), model)
    return problems


INDICES_EXAMPLE = "'0, -1'"


def frame_index_problems(text: object, frames: object, images: torch.Tensor | None = None) -> list[str]:
    """frame_indices: integers (strictly parsed), one per image when the images are known, inside the clip."""
    try:
        indices = rules.parse_indices(text, "frame_indices", INDICES_EXAMPLE)
    except ValueError as exc:
        return [str(exc)]
    if images is not None and len(indices) != images.shape[0]:
        return [f"frame_indices={text!r}: {len(indices)} indices for {images.shape[0]} images; give one per image"]
    if not isinstance(frames, int) or rules.value_problem("frames", frames):
        return []
    problems = rules.image_problems([rules.ImageCondition(i) for i in indices], frames)
    return [f"frame_indices={text!r}: {problem}" for problem in problems]


class PipelineNode(io.ComfyNode):
    """What every pipeline node shares: its checks run before the conditioning (lazy) is encoded."""

    KIND = PipelineKind.ONE_STAGE

    @classmethod
    def check_lazy_status(cls, conditioning: PromptContexts | None = None, **values: Any) -> list[str]:
        if conditioning is None:
            rules.check_problems(pipeline_problems(cls.KIND, values))
            return ["conditioning"]
        if not cls.KIND.rules.guided:  # positive-only pipelines: the negative contexts are not used
            conditioning = PromptContexts(conditioning.positive)
        rules.check_problems(contexts_model_problems(conditioning, values.get("model")))
        return []


def image_crf(values: dict[str, Any]) -> int:
    """The H.264 CRF the model's generation was trained against (LTX-2 / 2.3: 33, LTX-2.5: 18)."""
    model = values.get("model")
    return generation_defaults(model.generation if model is not None else None).image_crf


def image_conditions(values: dict[str, Any]) -> tuple[ImageCondition, ...]:
    image = values.get("image")
    if image is None:
        return ()
    return (ImageCondition(image[0].cpu(), 0, values["image_strength"], image_crf(values)),)


def generation_request(values: dict[str, Any], images: tuple[ImageCondition, ...],
                       total_steps: int) -> GenerationRequest:
    tiling = tiling_config(*(values[k] for k in TILING))
    model = values.get("model")
    stage_1 = generation_defaults(model.generation if model is not None else None).distilled_stage_1
    return GenerationRequest(values["width"], values["height"], values["frames"], values["fps"], values["seed"],
                             images=images, tiling=tiling, callback=StepProgress(total_steps),
                             decode_callback=DecodeProgress(), distilled_stage_1=stage_1)


def pipeline_models(values: dict[str, Any], refiner: TransformerHandle | None = None) -> PipelineModels:
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


def guided_sampling(guider: GuiderSettings | None, steps: int, model: TransformerHandle) -> GuidedSampling:
    """The guider's settings, or ltx-pipelines' defaults for the model's generation."""
    if guider is None:
        return GuidedSampling(steps=steps, **default_streams(model))
    return GuidedSampling(steps, guider.video, guider.audio)


def default_streams(model: TransformerHandle) -> dict[str, Any]:
    defaults = GuidedSampling.defaults(ltx23=rules.generation_family(model.generation) != "2.0")
    return {"video": defaults.video, "audio": defaults.audio}


def wrap_result(result: GenerationResult) -> io.NodeOutput:
    audio = {"waveform": result.waveform.unsqueeze(0).cpu(), "sample_rate": int(result.sample_rate)}
    return io.NodeOutput(result.frames.cpu(), audio, float(result.fps), LatentBundle(result.latents, denoised=True))


def run_pipeline(pipeline, *args: Any, **kwargs: Any) -> GenerationResult:
    """Pipeline errors are ``ValueError`` naming the parameter; they reach the user as an execution error."""
    return pipeline(*args, **kwargs, host=ComfyModelHost())


REFINER_TOOLTIP = "Stage-2 transformer (base model + distilled LoRA)."
