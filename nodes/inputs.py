"""Schema inputs shared by the AIPROD nodes, built from the core's rules (`aiprod_core.pipelines.validation.RULES`),
and the one map from node inputs to the core's request vocabulary.

How a bad value reaches the user, on every ComfyUI from 0.3.64 to the newest: ComfyUI files one
``custom_validation_failed`` error per parameter a node's ``validate_inputs`` declares, all with the same text, so
a check there is pinned to every declared input. The nodes therefore leave single-value rules to ComfyUI's own
checks, which report one error on the input that is wrong: numbers carry the rule's min / max (and step, which the
frontend snaps typed values to), and combos are declared with their option list as the type (`choice_input`), which
ComfyUI checks itself (0.3.64 / 0.3.75 skip V3 ``COMBO`` types). A ``validate_inputs`` declares at most one input;
rules that span inputs, or a grid that min / max cannot say (8k+1 frames, sizes sent through the API), are checked
by the node's ``execute`` (pipelines: ``check_lazy_status``) before any model work, all problems in one message.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.validation import PipelineKind

__all__ = ["CORE_NAMES", "TILING", "choice_input", "float_input", "input_rule", "int_input", "reference_frames",
           "seed_input", "size_inputs", "tiling_inputs"]

# Node input -> the core's field name, where they differ (the rest are the same words: width, frames, fps, ...).
CORE_NAMES = {
    "image_strength": "strength",
    "reference_strength": "strength",
    "attention_strength": "strength",
}
SPATIAL_TILE, SPATIAL_OVERLAP, TEMPORAL_TILE, TEMPORAL_OVERLAP = 512, 64, 64, 24  # fits 24 GB GPUs


def input_rule(name: str, kind: PipelineKind | None = None) -> rules.Rule:
    """The core rule of node input ``name`` (through `CORE_NAMES`, the one place inputs map to core fields)."""
    return rules.rule(CORE_NAMES.get(name, name), kind)


def int_input(name: str, default: int, tooltip: str, kind: PipelineKind | None = None, **extra) -> io.Int.Input:
    """An INT widget with the core rule's min / max, stepping on its grid (the frontend snaps to min + k * step)."""
    rule = input_rule(name, kind)
    low = rule.off if rule.off is not None else rule.low
    return io.Int.Input(name, default=default, min=int(low), max=int(rule.high), step=rule.multiple,
                        tooltip=tooltip, **extra)


def float_input(name: str, default: float, tooltip: str, step: float = 0.01, **extra) -> io.Float.Input:
    """A FLOAT widget with the core rule's min / max."""
    rule = input_rule(name)
    return io.Float.Input(name, default=default, min=rule.low, max=rule.high, step=step, tooltip=tooltip, **extra)


def seed_input(tooltip: str = "Seed.", default: int = 0, control: bool = True) -> io.Int.Input:
    extra = {"control_after_generate": True} if control else {}
    return int_input("seed", default, tooltip, **extra)


class _ListedCombo(io.Combo.Input):
    """A combo whose type is its option list (ComfyUI's classic combo form): ComfyUI checks a value against the
    list itself and reports one "Value not in list" error on this input; 0.3.64 and 0.3.75 never check the V3
    ``COMBO`` type, newer ComfyUI checks both forms the same way."""

    def get_io_type(self):
        return list(self.options)


def choice_input(name: str, options: list[str] | tuple[str, ...], tooltip: str, default: str | None = None,
                 optional: bool = False) -> io.Combo.Input:
    """A combo of ``options`` that ComfyUI validates itself on every version (see `_ListedCombo`)."""
    return _ListedCombo(name, options=list(options), default=default, tooltip=tooltip, optional=optional)


def size_inputs(kind: PipelineKind, width: int = 768, height: int = 512, frames: int = 121,
                fps: float = 24.0) -> list:
    """width, height (stepping on the pipeline's grid: 32 or 64), frames (8k+1) and fps."""
    multiple = kind.size_multiple
    why = "" if multiple == rules.LATENT_PIXELS else " (two-stage: the first stage runs at half size)"
    return [
        int_input("width", width, f"Width in pixels: a multiple of {multiple}{why}.", kind),
        int_input("height", height, f"Height in pixels: a multiple of {multiple}{why}.", kind),
        int_input("frames", frames, "Frame count: 8k+1 (9, 17, ..., 97, 121)."),
        float_input("fps", fps, "Frames per second (any rate from 1 to 240, e.g. 23.976); sets the audio length."),
    ]


def tiling_inputs() -> list:
    """The decode's tile sizes and overlaps (0 = that axis whole)."""
    return [
        int_input("spatial_tile", SPATIAL_TILE, "Spatial tile size in pixels (multiple of 32, >= 64; 0 = decode "
                  "whole frames)."),
        int_input("spatial_overlap", SPATIAL_OVERLAP, "Spatial tile overlap in pixels (multiple of 32, less than "
                  "the tile), blended at the seams."),
        int_input("temporal_tile", TEMPORAL_TILE, "Temporal tile size in frames (multiple of 8, >= 16; 0 = all "
                  "frames at once). Keeps memory flat with clip length."),
        int_input("temporal_overlap", TEMPORAL_OVERLAP, "Temporal tile overlap in frames (multiple of 8, less than "
                  "the tile), blended."),
    ]


TILING = ("spatial_tile", "spatial_overlap", "temporal_tile", "temporal_overlap")


def reference_frames(frames: torch.Tensor | None, video) -> torch.Tensor:
    """IC-LoRA reference frames (F, H, W, 3) from IMAGE frames or a core VIDEO input."""
    if frames is None and video is None:
        raise ValueError("reference: connect 'frames' (IMAGE) or 'video' (VIDEO)")
    if frames is None:
        frames = video.get_components().images
    return frames[..., :3].cpu()
