"""A pipeline request through `validation`'s rules, plus the checks only the pipelines can make (prompt contexts
present, a negative prompt where CFG needs one), before any model work."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..sampling.guidance import CFG, STG, CFGStar, ModalityIsolation, Pass, StreamGuider
from . import validation

if TYPE_CHECKING:
    from .latents import PromptContexts

__all__ = ["check_request"]


def _check_guider(guider: StreamGuider, stream: str, num_layers: int | None) -> None:
    settings: dict[str, Any] = {"rescale": guider.rescale, "skip_step": guider.skip_step, "num_layers": num_layers}
    for term in guider.terms:
        if isinstance(term, CFG | CFGStar):
            settings["cfg"] = term.scale
        elif isinstance(term, STG):
            settings["stg"], settings["stg_blocks"] = term.scale, term.blocks
        elif isinstance(term, ModalityIsolation):
            settings["modality"] = term.scale
    validation.check_guidance(**settings, stream=stream)


def _check_contexts(contexts: PromptContexts, guided: Any, num_layers: int | None) -> None:
    positive = contexts.positive
    if positive.video is None or positive.audio is None:
        raise ValueError("positive contexts: video and audio contexts are both required")
    if guided is None:
        return
    for guider, stream in ((guided.video, "video"), (guided.audio, "audio")):
        _check_guider(guider, stream, num_layers)
        if Pass.NEGATIVE in guider.needs() and contexts.negative is None:
            raise ValueError(f"negative=None: the {stream} guider's CFG needs negative prompt contexts")


def check_request(
    request: Any,
    contexts: PromptContexts,
    kind: validation.PipelineKind,
    *,
    guided: Any = None,
    references: Sequence[Any] = (),
    downscale_factor: int = 1,
    num_layers: int | None = None,
) -> Any:
    """Validates ``request`` for pipeline ``kind``; returns it with the images' frame indices resolved
    (negative indices count from the end). ``num_layers``: the transformer's blocks, for the STG block check."""
    images = [
        validation.ImageCondition(image.frame_index, image.strength, image.crf, tuple(image.image.shape[-3:-1]))
        for image in request.images
    ]
    validated = validation.validate_request(
        kind, width=request.width, height=request.height, num_frames=request.frames, frame_rate=request.fps,
        seed=request.seed, steps=None if guided is None else guided.steps, images=images,
        reference_video_shape=tuple(references[0].video.shape) if references else None,
        reference_downscale_factor=downscale_factor,
    )  # fmt: skip
    for index, reference in enumerate(references):
        validation.check_strength(reference.strength, f"references[{index}].strength")
        validation.check_strength(reference.attention_strength, f"references[{index}].attention_strength")
        if index > 0:  # validate_request checked the first
            validation.check_reference_video(tuple(reference.video.shape), height=request.height // 2,
                                             width=request.width // 2, num_frames=request.frames,
                                             downscale_factor=downscale_factor)  # fmt: skip
    _check_contexts(contexts, guided, num_layers)
    resolved = tuple(
        dataclasses.replace(image, frame_index=index)
        for image, index in zip(request.images, validated.frame_indices, strict=True)
    )
    return dataclasses.replace(request, images=resolved)
