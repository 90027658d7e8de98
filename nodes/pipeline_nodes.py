"""One-node pipelines: each validates its inputs, builds the core's request and calls one of the five pipelines of
`aiprod_core.pipelines` with a `ComfyModelHost`."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..aiprod_core.pipelines import (
    ImageCondition,
    PromptContexts,
    ReferenceCondition,
    distilled,
    ic_lora,
    keyframe_interpolation,
    text_to_video,
    two_stage,
)
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.validation import PipelineKind
from .inputs import float_input, reference_frames, tiling_inputs
from .pipeline_base import (
    CATEGORY,
    DISTILLED_STEPS,
    INDICES_EXAMPLE,
    REFINE_STEPS,
    REFINER_TOOLTIP,
    PipelineNode,
    common_inputs,
    frame_index_problems,
    generation_request,
    guided_inputs,
    guided_sampling,
    image_conditions,
    image_crf,
    image_inputs,
    pipeline_models,
    pipeline_outputs,
    run_pipeline,
    wrap_result,
)
from .problems import answer
from .types import (
    ModelSocket,
    TransformerHandle,
)

__all__ = [
    "AIPRODDistilledPipeline",
    "AIPRODICLoraPipeline",
    "AIPRODKeyframePipeline",
    "AIPRODTextToVideoPipeline",
    "AIPRODTwoStagePipeline",
]

class AIPRODTextToVideoPipeline(PipelineNode):
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
            inputs=[*common_inputs(cls.KIND), *guided_inputs(), *image_inputs(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = generation_request(values, image_conditions(values), values["steps"])
        guided = guided_sampling(values.get("guider"), values["steps"], values["model"])
        models = pipeline_models(values)
        return wrap_result(run_pipeline(text_to_video, models, values["conditioning"], request, guided))



class AIPRODTwoStagePipeline(PipelineNode):
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
            inputs=[*common_inputs(cls.KIND), ModelSocket.Input("refiner", tooltip=REFINER_TOOLTIP), *guided_inputs(),
                    *image_inputs(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = generation_request(values, image_conditions(values),
                           values["steps"] + REFINE_STEPS)
        guided = guided_sampling(values.get("guider"), values["steps"], values["model"])
        models = pipeline_models(values, values["refiner"])
        return wrap_result(run_pipeline(two_stage, models, values["conditioning"], request, guided))


class AIPRODDistilledPipeline(PipelineNode):
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
            inputs=[*common_inputs(cls.KIND), *image_inputs(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = generation_request(values, image_conditions(values),
                           DISTILLED_STEPS + REFINE_STEPS)
        positive = PromptContexts(values["conditioning"].positive)
        return wrap_result(run_pipeline(distilled, pipeline_models(values), positive, request))


class AIPRODICLoraPipeline(PipelineNode):
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
            inputs=[*common_inputs(cls.KIND),
                    ModelSocket.Input("refiner",
                                      tooltip="Stage-2 transformer WITHOUT the IC-LoRA (the base distilled model): "
                                      "the IC-LoRA conditions stage 1 only."),
                    io.Image.Input("reference_frames", optional=True, tooltip="Reference video as IMAGE frames."),
                    io.Video.Input("reference_video", optional=True, tooltip="Or a VIDEO input."),
                    float_input("reference_strength", 1.0, "Conditioning strength of the reference tokens."),
                    *image_inputs(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        pixels = reference_frames(values.get("reference_frames"), values.get("reference_video"))
        references = (ReferenceCondition(pixels, values["reference_strength"]),)
        request = generation_request(values, image_conditions(values),
                           DISTILLED_STEPS + REFINE_STEPS)
        model: TransformerHandle = values["model"]
        return wrap_result(run_pipeline(ic_lora, pipeline_models(values, values["refiner"]),
                          PromptContexts(values["conditioning"].positive), request, references,
                          downscale_factor=model.reference_downscale_factor))


class AIPRODKeyframePipeline(PipelineNode):
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
            inputs=[*common_inputs(cls.KIND), ModelSocket.Input("refiner", tooltip=REFINER_TOOLTIP), *guided_inputs(),
                    io.Image.Input("images", tooltip="Keyframe images (one per batch entry)."),
                    io.String.Input("frame_indices", default="0, -1",
                                    tooltip="Pixel frame of each image, comma-separated (negative counts from the "
                                    "end). Every index must lie inside the clip."),
                    float_input("strength", 1.0, "Keyframe conditioning strength."),
                    *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def validate_inputs(cls, frame_indices: str | None = None) -> bool | str:
        """Only frame_indices is declared (ComfyUI pins a failure to every declared input)."""
        return answer(frame_index_problems(frame_indices, None) if frame_indices is not None else [])

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        images: torch.Tensor = values["images"]
        indices = rules.parse_indices(values["frame_indices"], "frame_indices", INDICES_EXAMPLE)
        conditions = tuple(ImageCondition(images[i].cpu(), index, values["strength"], image_crf(values))
                           for i, index in enumerate(indices))
        request = generation_request(values, conditions, values["steps"] + REFINE_STEPS)
        guided = guided_sampling(values.get("guider"), values["steps"], values["model"])
        models = pipeline_models(values, values["refiner"])
        return wrap_result(run_pipeline(keyframe_interpolation, models, values["conditioning"], request, guided))
