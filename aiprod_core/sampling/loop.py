"""The denoising loop: one function for every sampler, guider and conditioning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .planner import Guidance, X0Model
from .state import LatentState, keep_clean_tokens
from .steps import DiffusionStep, EulerStep

__all__ = ["StepReport", "denoise"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepReport:
    """What a step produced, for progress / preview / interruption hooks (raise from the hook to stop).

    x0_video (B, T_v, C) / x0_audio (B, T_a, C'): the guided, clean-blended predictions of this step;
    video / audio: the states after the step.
    """

    index: int
    total: int
    sigma: float
    sigma_next: float
    x0_video: torch.Tensor | None
    x0_audio: torch.Tensor | None
    video: LatentState | None
    audio: LatentState | None


def denoise(
    model: X0Model,
    sigmas: torch.Tensor,
    video: LatentState | None,
    audio: LatentState | None,
    *,
    guidance: Guidance,
    step: DiffusionStep | None = None,
    callback: Callable[[StepReport], None] | None = None,
) -> tuple[LatentState | None, LatentState | None]:
    """Denoise both streams along ``sigmas`` (steps + 1,): guided x0, clean-token blend, step, hook.

    Stops after the step that reaches sigma 0. Each stream keeps its own step carry.
    """
    step = EulerStep() if step is None else step
    total = len(sigmas) - 1
    previous: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    carries: list[torch.Tensor | None] = [None, None]
    states = [video, audio]
    for index in range(total):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        previous = guidance.predict(model, states[0], states[1], sigma, index, previous)
        blended: list[torch.Tensor | None] = [None, None]
        for stream, state in enumerate(states):
            if state is None:
                continue
            x0 = previous[stream]
            if x0 is None:
                raise ValueError(f"no prediction for stream {stream} at step {index}")
            blended[stream] = keep_clean_tokens(x0, state)
            latent, carries[stream] = step(state.latent, blended[stream], sigma, sigma_next, carries[stream])
            if getattr(step, "renoises", False) and float(sigma_next) != 0:  # noise added: clean tokens back
                latent = keep_clean_tokens(latent, state)
            latent = latent.to(state.latent.dtype)
            states[stream] = state.with_latent(latent)
        logger.debug("step %d/%d sigma %.6f -> %.6f", index + 1, total, float(sigma), float(sigma_next))
        if callback is not None:
            callback(StepReport(index, total, float(sigma), float(sigma_next), *blended, states[0], states[1]))
        if float(sigma_next) == 0:
            break
    return states[0], states[1]
