"""The HQ two-stage pipeline node: the two-stage flow with the res_2s second-order sampler (its stage nodes are
the usual ones with 'AIPROD Sampler' set to sampler res_2s)."""

from __future__ import annotations

from comfy_api.latest import io

from ..aiprod_core.pipelines import GuidedSampling, two_stage_hq
from ..aiprod_core.pipelines.validation import PipelineKind
from .inputs import int_input, tiling_inputs
from .pipeline_base import (
    CATEGORY,
    REFINE_STEPS,
    PipelineNode,
    common_inputs,
    generation_request,
    image_conditions,
    image_inputs,
    pipeline_models,
    pipeline_outputs,
    run_pipeline,
    wrap_result,
)
from .types import GuiderSettings, GuiderSocket, ModelSocket

__all__ = ["AIPRODTwoStageHQPipeline"]

HQ_STEPS = 15  # ltx-pipelines' LTX_2_3_HQ_PARAMS


def _hq_guided(guider: GuiderSettings | None, steps: int) -> GuidedSampling:
    """The guider's settings, or ltx-pipelines' HQ preset (CFG 3 / 7, STG off, rescale 0.45 / 1.0, modality 3)."""
    if guider is None:
        preset = GuidedSampling.hq_defaults()
        return GuidedSampling(steps, preset.video, preset.audio)
    return GuidedSampling(steps, guider.video, guider.audio)


class AIPRODTwoStageHQPipeline(PipelineNode):
    """Two stages with res_2s: guided half-size stage, x2 upsample, refinement, both stages second order."""

    KIND = PipelineKind.TWO_STAGES_HQ

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTwoStageHQPipeline",
            display_name="AIPROD Two-Stage HQ Pipeline (res_2s)",
            category=CATEGORY,
            description="The two-stage flow with the res_2s second-order sampler in both stages (ltx-pipelines "
            "TI2VidTwoStagesHQPipeline): 'model' = the dev model with the distilled LoRA at 0.25, 'refiner' = with "
            "it at 0.5; 15 steps; default guidance the HQ preset (STG off). Two transformer calls per step. Width "
            "and height: multiples of 64; frames 8k+1.",
            inputs=[*common_inputs(cls.KIND),
                    ModelSocket.Input("refiner", tooltip="Stage-2 transformer (dev model + distilled LoRA at 0.5)."),
                    int_input("steps", HQ_STEPS, "res_2s steps of stage 1 (ltx-pipelines' HQ: 15)."),
                    GuiderSocket.Input("guider", optional=True, tooltip="Guidance; default: ltx-pipelines' HQ "
                                       "preset (CFG 3 video / 7 audio, STG off, rescale 0.45 / 1.0)."),
                    *image_inputs(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        steps = values["steps"]
        request = generation_request(values, image_conditions(values), steps + REFINE_STEPS)
        guided = _hq_guided(values.get("guider"), steps)
        models = pipeline_models(values, values["refiner"])
        return wrap_result(run_pipeline(two_stage_hq, models, values["conditioning"], request, guided))
