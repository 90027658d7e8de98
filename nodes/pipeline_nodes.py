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
from ..aiprod_core.pipelines.generations import generation_defaults
from ..aiprod_core.pipelines.validation import PipelineKind, tiling_config
from .inputs import TILING, float_input, int_input, reference_frames, seed_input, size_inputs, tiling_inputs
from .problems import answer, contexts_model_problems, guider_model_problems, input_problems
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
]

CATEGORY = "AIPROD/pipelines"
REFINE_STEPS = 3
DISTILLED_STEPS = 8


def _common_inputs(kind: PipelineKind) -> list:
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


def _outputs() -> list:
    return [
        io.Image.Output(display_name="images", tooltip="Frames (F, H, W, 3) in 0..1."),
        io.Audio.Output(display_name="audio", tooltip="Audio covering exactly frames / fps seconds."),
        io.Float.Output(display_name="fps", tooltip="The clip's frame rate."),
        LatentSocket.Output(display_name="latent", tooltip="The final audio+video latents."),
    ]


def _guided_inputs() -> list:
    return [int_input("steps", 30, "Steps of the guided stage (LTX-2.3 / LTX-2.5: 30, LTX-2: 40)."),
            GuiderSocket.Input("guider", optional=True, tooltip="Guidance; default: ltx-pipelines' for the model's "
                               "generation (STG block 28 for LTX-2.3 / LTX-2.5, 29 for LTX-2).")]


def _image_inputs() -> list:
    return [
        io.Image.Input("image", optional=True, tooltip="Optional first-frame image (image-to-video)."),
        float_input("image_strength", 1.0, "1 keeps the first frame exactly."),
    ]


_VALUES = ("seed", "steps", "image_strength", "reference_strength", "strength")


def _problems(kind: PipelineKind, values: dict[str, Any]) -> list[str]:
    """Every problem of a pipeline node's inputs, before its prompt is encoded: size and rate on the pipeline's
    grid, seed / steps / strengths, tiling, keyframe indices, and the guider's STG blocks against the model."""
    problems = rules.size_problems(*(values.get(k) for k in ("width", "height", "frames", "fps")), kind)
    problems += input_problems(values, _VALUES)
    problems += rules.tiling_problems(*(values.get(k) for k in TILING))
    if values.get("frame_indices") is not None:
        problems += _index_problems(values["frame_indices"], values.get("frames"), values.get("images"))
    model = values.get("model")
    if kind.rules.guided and model is not None and not problems:
        problems += guider_model_problems(_guided(values.get("guider"), values.get("steps") or 1, model), model)
    return problems


class _Pipeline(io.ComfyNode):
    """What every pipeline node shares: its checks run before the conditioning (lazy) is encoded."""

    KIND = PipelineKind.ONE_STAGE

    @classmethod
    def check_lazy_status(cls, conditioning: PromptContexts | None = None, **values: Any) -> list[str]:
        if conditioning is None:
            rules.check_problems(_problems(cls.KIND, values))
            return ["conditioning"]
        if not cls.KIND.rules.guided:  # positive-only pipelines: the negative contexts are not used
            conditioning = PromptContexts(conditioning.positive)
        rules.check_problems(contexts_model_problems(conditioning, values.get("model")))
        return []


def _image_crf(values: dict[str, Any]) -> int:
    """The H.264 CRF the model's generation was trained against (LTX-2 / 2.3: 33, LTX-2.5: 18)."""
    model = values.get("model")
    return generation_defaults(model.generation if model is not None else None).image_crf


def _images(values: dict[str, Any]) -> tuple[ImageCondition, ...]:
    image = values.get("image")
    if image is None:
        return ()
    return (ImageCondition(image[0].cpu(), 0, values["image_strength"], _image_crf(values)),)


def _request(values: dict[str, Any], images: tuple[ImageCondition, ...], total_steps: int) -> GenerationRequest:
    tiling = tiling_config(*(values[k] for k in TILING))
    model = values.get("model")
    stage_1 = generation_defaults(model.generation if model is not None else None).distilled_stage_1
    return GenerationRequest(values["width"], values["height"], values["frames"], values["fps"], values["seed"],
                             images=images, tiling=tiling, callback=StepProgress(total_steps),
                             decode_callback=DecodeProgress(), distilled_stage_1=stage_1)


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
    """The guider's settings, or ltx-pipelines' defaults for the model's generation."""
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


class AIPRODTextToVideoPipeline(_Pipeline):
    """Text/image-to-video in one guided stage at the target size."""

    KIND = PipelineKind.ONE_STAGE

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTextToVideoPipeline",
            display_name="AIPROD Text/Image to Video (one stage)",
            category=CATEGORY,
            description="One guided stage at the full size (ltx-pipelines TI2VidOneStagePipeline). Width and "
            "height: multiples of 32; frames 8k+1.",
            inputs=[*_common_inputs(cls.KIND), *_guided_inputs(), *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = _request(values, _images(values), values["steps"])
        guided = _guided(values.get("guider"), values["steps"], values["model"])
        return _wrap(_run(text_to_video, _models(values), values["conditioning"], request, guided))


_REFINER = "Stage-2 transformer (base model + distilled LoRA)."


class AIPRODTwoStagePipeline(_Pipeline):
    """Guided half-size stage, x2 upsample, 3 distilled refinement steps by the refiner."""

    KIND = PipelineKind.TWO_STAGES

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTwoStagePipeline",
            display_name="AIPROD Two-Stage Pipeline",
            category=CATEGORY,
            description="Guided stage at half size, x2 latent upsample, 3 refinement steps by 'refiner' (the model "
            "with the distilled LoRA). Width and height: multiples of 64; frames 8k+1.",
            inputs=[*_common_inputs(cls.KIND), ModelSocket.Input("refiner", tooltip=_REFINER), *_guided_inputs(),
                    *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = _request(values, _images(values),
                           values["steps"] + REFINE_STEPS)
        guided = _guided(values.get("guider"), values["steps"], values["model"])
        return _wrap(_run(two_stage, _models(values, values["refiner"]), values["conditioning"], request, guided))


class AIPRODDistilledPipeline(_Pipeline):
    """The distilled model: 8 fixed steps at half size, x2 upsample, 3 fixed steps."""

    KIND = PipelineKind.DISTILLED

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODDistilledPipeline",
            display_name="AIPROD Distilled Pipeline",
            category=CATEGORY,
            description="The distilled checkpoint: 8 steps at half size, x2 upsample, 3 refinement steps, positive "
            "prompt only (ltx-pipelines DistilledPipeline). Width and height: multiples of 64; frames 8k+1.",
            inputs=[*_common_inputs(cls.KIND), *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = _request(values, _images(values),
                           DISTILLED_STEPS + REFINE_STEPS)
        return _wrap(_run(distilled, _models(values), PromptContexts(values["conditioning"].positive), request))


class AIPRODICLoraPipeline(_Pipeline):
    """IC-LoRA: stage 1 with the reference (control) video, stage 2 by the base model."""

    KIND = PipelineKind.IC_LORA

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODICLoraPipeline",
            display_name="AIPROD IC-LoRA Pipeline",
            category=CATEGORY,
            description="Stage 1 by the model with the IC-LoRA (8 distilled steps) conditioned on the reference "
            "video at 1 / the LoRA's reference_downscale_factor (read from its metadata), x2 upsample, stage 2 by "
            "'refiner' (3 steps). Reference tokens are cropped from the result.",
            inputs=[*_common_inputs(cls.KIND),
                    ModelSocket.Input("refiner",
                                      tooltip="Stage-2 transformer WITHOUT the IC-LoRA (the base distilled model): "
                                      "the IC-LoRA conditions stage 1 only."),
                    io.Image.Input("reference_frames", optional=True, tooltip="Reference video as IMAGE frames."),
                    io.Video.Input("reference_video", optional=True, tooltip="Or a VIDEO input."),
                    float_input("reference_strength", 1.0, "Conditioning strength of the reference tokens."),
                    *_image_inputs(), *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        pixels = reference_frames(values.get("reference_frames"), values.get("reference_video"))
        references = (ReferenceCondition(pixels, values["reference_strength"]),)
        request = _request(values, _images(values),
                           DISTILLED_STEPS + REFINE_STEPS)
        model: TransformerHandle = values["model"]
        return _wrap(_run(ic_lora, _models(values, values["refiner"]),
                          PromptContexts(values["conditioning"].positive), request, references,
                          downscale_factor=model.reference_downscale_factor))


_INDICES_EXAMPLE = "'0, -1'"


def _index_problems(text: object, frames: object, images: torch.Tensor | None = None) -> list[str]:
    """frame_indices: integers (strictly parsed), one per image when the images are known, inside the clip."""
    try:
        indices = rules.parse_indices(text, "frame_indices", _INDICES_EXAMPLE)
    except ValueError as exc:
        return [str(exc)]
    if images is not None and len(indices) != images.shape[0]:
        return [f"frame_indices={text!r}: {len(indices)} indices for {images.shape[0]} images; give one per image"]
    if not isinstance(frames, int) or rules.value_problem("frames", frames):
        return []
    problems = rules.image_problems([rules.ImageCondition(i) for i in indices], frames)
    return [f"frame_indices={text!r}: {problem}" for problem in problems]


class AIPRODKeyframePipeline(_Pipeline):
    """Keyframe interpolation: every image a keyframe at its frame index, through the two-stage flow."""

    KIND = PipelineKind.KEYFRAME_INTERPOLATION

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODKeyframePipeline",
            display_name="AIPROD Keyframe Interpolation Pipeline",
            category=CATEGORY,
            description="Each image of the batch is a keyframe at the matching entry of frame_indices (negative = "
            "from the end, -1 = last frame); guided half-size stage, x2 upsample, refinement by 'refiner'.",
            inputs=[*_common_inputs(cls.KIND), ModelSocket.Input("refiner", tooltip=_REFINER), *_guided_inputs(),
                    io.Image.Input("images", tooltip="Keyframe images (one per batch entry)."),
                    io.String.Input("frame_indices", default="0, -1",
                                    tooltip="Pixel frame of each image, comma-separated (negative counts from the "
                                    "end). Every index must lie inside the clip."),
                    float_input("strength", 1.0, "Keyframe conditioning strength."),
                    *tiling_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, frame_indices: str | None = None) -> bool | str:
        """Only frame_indices is declared (ComfyUI pins a failure to every declared input)."""
        return answer(_index_problems(frame_indices, None) if frame_indices is not None else [])

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        images: torch.Tensor = values["images"]
        indices = rules.parse_indices(values["frame_indices"], "frame_indices", _INDICES_EXAMPLE)
        conditions = tuple(ImageCondition(images[i].cpu(), index, values["strength"], _image_crf(values))
                           for i, index in enumerate(indices))
        request = _request(values, conditions, values["steps"] + REFINE_STEPS)
        guided = _guided(values.get("guider"), values["steps"], values["model"])
        return _wrap(_run(keyframe_interpolation, _models(values, values["refiner"]), values["conditioning"],
                          request, guided))
