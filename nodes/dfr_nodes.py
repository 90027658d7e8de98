"""The DFR pipeline node (LTX-2.5 only): generated keyframe slots at half size, a full-size re-render with the
optional detailing IC-LoRA, and 0-2 temporal x2 rounds with the temporal upscaler (`aiprod_core.pipelines.dfr`)."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ..aiprod_core.pipelines import PromptContexts
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.dfr import DFR_ROUNDS, dfr, dfr_output_frames
from ..aiprod_core.pipelines.dfr_layout import round_tiles
from ..aiprod_core.pipelines.validation import PipelineKind
from .inputs import tiling_inputs
from .pipeline_base import (
    CATEGORY,
    DISTILLED_STEPS,
    REFINE_STEPS,
    PipelineNode,
    common_inputs,
    generation_request,
    image_conditions,
    image_inputs,
    pipeline_models,
    pipeline_outputs,
    pipeline_problems,
    run_pipeline,
    wrap_result,
)
from .problems import contexts_model_problems
from .types import ModelSocket, TransformerHandle, UpsamplerSocket

__all__ = ["AIPRODDFRPipeline"]

TEMPORAL_ROUND_STEPS = 4  # the distilled table from its 5th sigma


def _generation_problems(model: TransformerHandle | None, name: str) -> list[str]:
    """An LTX-2 / LTX-2.3 model is refused by name (DFR's keyframe slots need LTX-2.5's keyframe embedding)."""
    family = rules.generation_family(model.generation) if model is not None else None
    if family is None or family == "2.5":
        return []
    return [f"{name}: generation={model.generation!r} (LTX-{family}); DFR needs an LTX-2.5 model "  # type: ignore[union-attr]
            "(ltx-2.5-22b-distilled), whose keyframe embedding fills the generated keyframe slots"]


def _dfr_node_problems(values: dict[str, Any]) -> list[str]:
    problems = pipeline_problems(PipelineKind.DISTILLED, values)
    problems += _generation_problems(values.get("model"), "model")
    problems += _generation_problems(values.get("detailing_model"), "detailing_model")
    if values.get("frames") == 1:
        problems.append("frames=1, expected at least 9 (8k + 1 with k >= 1): DFR places keyframes every 24 or 32 "
                        "frames")
    rounds = values.get("temporal_rounds", 0)
    if rounds not in DFR_ROUNDS:
        problems.append(f"temporal_rounds={rounds!r}, expected one of {list(DFR_ROUNDS)} (x1, x2, x4 fps)")
    elif rounds and values.get("temporal_upsampler") is None:
        problems.append(f"temporal_upsampler: not connected; temporal_rounds={rounds} needs LTX-2.5's temporal "
                        "upscaler x2 (AIPROD Latent Upsampler Loader: ltx-2.5-latent-temporal-upscaler-x2)")
    return problems


class AIPRODDFRPipeline(PipelineNode):
    """DFR on the LTX-2.5 distilled model: keyframe slots, detailing re-render, temporal x2 / x4."""

    KIND = PipelineKind.DISTILLED

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODDFRPipeline",
            display_name="AIPROD DFR Pipeline (LTX-2.5)",
            category=CATEGORY,
            description="ltx-pipelines DFRPipeline on the LTX-2.5 distilled model: stage 1 at half size generates "
            "the video and keyframe slots (single frames every 24 or 32 frames), stage 2 re-renders at full size "
            "(with the detailing IC-LoRA when 'detailing_model' is connected), then 0-2 temporal rounds double the "
            "frame rate with the temporal upscaler. Output: (frames - 1) x 2^rounds + 1 frames at fps x 2^rounds. "
            "Width and height: multiples of 64; frames 8k+1 (at least 9).",
            inputs=[*common_inputs(cls.KIND),
                    ModelSocket.Input("detailing_model", optional=True,
                                      tooltip="Optional: the model with the LTX-2.5 detailing IC-LoRA (AIPROD "
                                      "IC-LoRA Loader, strength 0.5 as the reference) for the full-size pass; "
                                      "without it 'model' re-renders alone."),
                    UpsamplerSocket.Input("temporal_upsampler", optional=True,
                                          tooltip="LTX-2.5's temporal upscaler x2, needed when temporal_rounds > 0."),
                    io.Int.Input("temporal_rounds", default=0, min=0, max=max(DFR_ROUNDS),
                                 tooltip="Temporal x2 rounds: 0 (fps as given), 1 (x2), 2 (x4)."),
                    *image_inputs(), *tiling_inputs()],
            outputs=pipeline_outputs(),
        )

    @classmethod
    def check_lazy_status(cls, conditioning: PromptContexts | None = None, **values: Any) -> list[str]:
        if conditioning is None:
            rules.check_problems(_dfr_node_problems(values))
            return ["conditioning"]
        rules.check_problems(contexts_model_problems(PromptContexts(conditioning.positive), values.get("model")))
        return []

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        rules.check_problems(_dfr_node_problems(values))
        rounds = values["temporal_rounds"]
        tiles = sum(len(t) for t in round_tiles(values["frames"], rounds))
        total = DISTILLED_STEPS + REFINE_STEPS + TEMPORAL_ROUND_STEPS * tiles
        request = generation_request(values, image_conditions(values), total)
        detailing: TransformerHandle | None = values.get("detailing_model")
        models = pipeline_models(values, detailing)
        temporal = values.get("temporal_upsampler")
        temporal_module = None if temporal is None else temporal.get()
        result = run_pipeline(dfr, models, PromptContexts(values["conditioning"].positive), request,
                      temporal_rounds=rounds, temporal_upsampler=temporal_module,
                      detailing_downscale=None if detailing is None else detailing.reference_downscale_factor,
                      generation=values["model"].generation)  # fmt: skip
        assert result.frames.shape[0] == dfr_output_frames(values["frames"], rounds)
        return wrap_result(result)
