"""Conditioning: image replacement, keyframes, IC-LoRA reference videos, attention strengths (video); temporal
region masks and frozen streams (video or audio)."""

from .items import (
    AttentionStrength,
    ConditioningError,
    ConditioningItem,
    ImageAtLatentIndex,
    Keyframe,
    ReferenceVideo,
    apply_conditionings,
)
from .keyframe_slots import GeneratedKeyframeSlots, PinnedKeyframe
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
]
