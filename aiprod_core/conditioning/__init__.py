"""Conditioning: image replacement, keyframes, IC-LoRA reference videos, attention strengths, LTX-2.5's keyframe
marker (video); temporal region masks and frozen streams (video or audio)."""

from .items import (
    AttentionStrength,
    ConditioningError,
    ConditioningItem,
    ImageAtLatentIndex,
    Keyframe,
    ReferenceVideo,
    apply_conditionings,
)
from .keyframe_slots import GeneratedKeyframeSlots, PinnedKeyframe, mark_first_frame
from .regions import Frozen, TemporalRegionMask

__all__ = [
    "AttentionStrength",
    "ConditioningError",
    "ConditioningItem",
    "Frozen",
    "GeneratedKeyframeSlots",
    "ImageAtLatentIndex",
    "Keyframe",
    "PinnedKeyframe",
    "ReferenceVideo",
    "TemporalRegionMask",
    "apply_conditionings",
    "mark_first_frame",
]
