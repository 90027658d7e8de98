"""Generation pipelines: stage functions (conditioning, sampling, upsampling, decoding) and the five pipelines
composed of them, over already-built modules placed by a `ModelHost`."""

from .latents import AVLatents, PromptContexts, empty_latents
from .models import LocalHost, ModelHost, OffloadingHost, PipelineModels
from .pipelines import (
    GenerationRequest,
    GenerationResult,
    GuidedSampling,
    distilled,
    ic_lora,
    keyframe_interpolation,
    text_to_video,
    two_stage,
    two_stage_hq,
)
from .stages import (
    ImageCondition,
    ReferenceCondition,
    decode_audio,
    decode_video,
    image_conditionings,
    prompt_contexts,
    reference_conditionings,
    sample,
    upsample,
)

__all__ = [
    "AVLatents",
    "GenerationRequest",
    "GenerationResult",
    "GuidedSampling",
    "ImageCondition",
    "LocalHost",
    "ModelHost",
    "OffloadingHost",
    "PipelineModels",
    "PromptContexts",
    "ReferenceCondition",
    "decode_audio",
    "decode_video",
    "distilled",
    "empty_latents",
    "ic_lora",
    "image_conditionings",
    "keyframe_interpolation",
    "prompt_contexts",
    "reference_conditionings",
    "sample",
    "text_to_video",
    "two_stage",
    "two_stage_hq",
    "upsample",
]
