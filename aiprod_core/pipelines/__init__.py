"""Generation pipelines: stage functions (encoding, conditioning, sampling, upsampling, decoding) and the
pipelines composed of them (text/image-to-video, two-stage, distilled, IC-LoRA, keyframes, HQ, audio-to-video,
text-to-audio, retake, extension), over already-built modules placed by a `ModelHost`."""

from .audio_pipelines import AudioRequest, AudioResult, audio_to_video, text_to_audio, text_to_audio_defaults
from .edits import ExtendRequest, RetakeRequest, extend, retake
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
from .sources import AudioClip, SourceClip, encode_audio, encode_frames, encode_source
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
    "AudioClip",
    "AudioRequest",
    "AudioResult",
    "ExtendRequest",
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
    "RetakeRequest",
    "SourceClip",
    "audio_to_video",
    "decode_audio",
    "decode_video",
    "distilled",
    "empty_latents",
    "encode_audio",
    "encode_frames",
    "encode_source",
    "extend",
    "ic_lora",
    "image_conditionings",
    "keyframe_interpolation",
    "prompt_contexts",
    "reference_conditionings",
    "retake",
    "sample",
    "text_to_audio",
    "text_to_audio_defaults",
    "text_to_video",
    "two_stage",
    "two_stage_hq",
    "upsample",
]
