"""The denoising loop: one function for every sampler (`samplers`), guider and conditioning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .planner import Guidance, X0Model
from .samplers import Prediction, Res2s, Sampler, States, StreamSteps
from .state import LatentState, keep_clean_tokens
from .steps import DiffusionStep

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
    step: DiffusionStep | Sampler | None = None,
    callback: Callable[[StepReport], None] | None = None,
) -> tuple[LatentState | None, LatentState | None]:
    """Denoise both streams along ``sigmas`` (steps + 1,): each step the sampler asks for guided, clean-blended x0
    predictions (one transformer call per prediction for both streams) and moves the states; then the hook.

    ``step``: a `Sampler` (e.g. `Res2s`) or a per-stream first-order `DiffusionStep` (default Euler), which runs
    as `StreamSteps`. Stops after the step that reaches sigma 0.
    """
    sampler = _as_sampler(step)
    total = len(sigmas) - 1
    previous: Prediction = (None, None)

    def predict(states: States, sigma: torch.Tensor, index: int) -> Prediction:
        nonlocal previous
        previous = guidance.predict(model, states[0], states[1], sigma, index, previous)
        blended: list[torch.Tensor | None] = [None, None]
        for stream, state in enumerate(states):
            if state is None:
                continue
            if previous[stream] is None:
                raise ValueError(f"no prediction for stream {stream} at step {index}")
            blended[stream] = keep_clean_tokens(previous[stream], state)
        return blended[0], blended[1]

    states: States = (video, audio)
    carry: Any = None
    for index in range(total):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        states, x0, carry = sampler(predict, states, sigmas, index, carry)
        logger.debug("step %d/%d sigma %.6f -> %.6f", index + 1, total, float(sigma), float(sigma_next))
        if callback is not None:
            callback(StepReport(index, total, float(sigma), float(sigma_next), *x0, states[0], states[1]))
        if float(sigma_next) == 0:
            break
    return states


def _as_sampler(step: DiffusionStep | Sampler | None) -> Sampler:
    if step is None:
        return StreamSteps()
    if isinstance(step, StreamSteps | Res2s):
        return step
    return StreamSteps(step)  # type: ignore[arg-type]
