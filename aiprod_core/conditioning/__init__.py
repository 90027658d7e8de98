"""Video conditioning: image replacement, keyframes, IC-LoRA reference videos, attention strengths."""

from .items import (
    AttentionStrength,
    ConditioningError,
    ConditioningItem,
    ImageAtLatentIndex,
    Keyframe,
    ReferenceVideo,
    apply_conditionings,
)

__all__ = [
    "AttentionStrength",
    "ConditioningError",
    "ConditioningItem",
    "ImageAtLatentIndex",
    "Keyframe",
    "ReferenceVideo",
    "apply_conditionings",
]
