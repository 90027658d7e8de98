"""Diffusion steps in the rectified-flow parameterisation x_sigma = (1 - sigma) x0 + sigma noise.

A step maps (sample, x0 prediction, sigma, sigma_next, carry) -> (next sample, carry); ``carry`` is whatever the
step keeps between steps of one stream (None for Euler, the previous velocity for gradient estimation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["DiffusionStep", "EulerAncestralStep", "EulerStep", "GradientEstimationStep", "to_velocity", "to_x0"]

CALC_DTYPE = torch.float32


def to_velocity(sample: torch.Tensor, x0: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """v = (x - x0) / sigma, computed in float32 and returned in the sample's dtype."""
    sigma = float(sigma.to(CALC_DTYPE).item()) if isinstance(sigma, torch.Tensor) else float(sigma)
    if sigma == 0:
        raise ValueError("sigma=0.0, expected a nonzero noise level for a velocity")
    return ((sample.to(CALC_DTYPE) - x0.to(CALC_DTYPE)) / sigma).to(sample.dtype)


def to_x0(sample: torch.Tensor, velocity: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x0 = x - v sigma (sigma a scalar or per token, broadcastable), float32 maths, the sample's dtype."""
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(CALC_DTYPE)
    return (sample.to(CALC_DTYPE) - velocity.to(CALC_DTYPE) * sigma).to(sample.dtype)


class DiffusionStep(Protocol):
    """Advances one stream from sigma to sigma_next given the x0 prediction."""

    def __call__(
        self,
        sample: torch.Tensor,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        carry: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass(frozen=True)
class EulerStep:
    """First-order Euler: x + v (sigma_next - sigma), v = (x - x0) / sigma."""

    def __call__(
        self,
        sample: torch.Tensor,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        carry: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        velocity = to_velocity(sample, x0, sigma)
        return (sample.to(CALC_DTYPE) + velocity.to(CALC_DTYPE) * (sigma_next - sigma)).to(sample.dtype), None


class EulerAncestralStep:
    """Ancestral (SDE) Euler in the rectified-flow parameterisation (alpha = 1 - sigma), LTX-2.5's distilled stage 1
    (ltx-core 1.2.0 ``EulerAncestralDiffusionStep``): an Euler step down to sigma_down = sigma_next (1 + (sigma_next
    / sigma - 1) eta), then renoised back up to sigma_next with the signal scaled by alpha_next / alpha_down; the
    last step (sigma_next = 0) returns x0. Noise: one ``randn`` of the sample's shape and dtype per call from
    ``generator`` (the loop calls video first, then audio, as the reference draws). The next sample is returned in
    float32: ``renoises`` tells the loop to re-apply the conditioning's clean tokens, then cast, as the reference.
    """

    renoises = True

    def __init__(self, generator: torch.Generator, eta: float = 1.0, s_noise: float = 1.0) -> None:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta={eta!r}, expected 0 <= eta <= 1")
        self.generator, self.eta, self.s_noise = generator, eta, s_noise

    def __call__(
        self,
        sample: torch.Tensor,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        carry: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        sigma_t = torch.as_tensor(sigma, dtype=CALC_DTYPE)
        next_t = torch.as_tensor(sigma_next, dtype=CALC_DTYPE)
        if float(next_t) == 0:
            return x0.to(sample.dtype), None
        down = next_t * (1.0 + (next_t / sigma_t - 1.0) * self.eta)
        ratio = down / sigma_t
        x_next = ratio * sample.to(CALC_DTYPE) + (1.0 - ratio) * x0.to(CALC_DTYPE)
        if self.eta > 0:
            alpha_next, alpha_down = 1.0 - next_t, 1.0 - down
            renoise = (next_t**2 - down**2 * alpha_next**2 / alpha_down**2).clamp(min=0) ** 0.5
            noise = torch.randn(sample.shape, generator=self.generator, dtype=sample.dtype, device=sample.device)
            x_next = (alpha_next / alpha_down) * x_next + noise.to(CALC_DTYPE) * (self.s_noise * renoise)
        return x_next, None


@dataclass(frozen=True)
class GradientEstimationStep:
    """Gradient-estimating Euler (https://openreview.net/pdf?id=o2ND9v0CeK): v' = v_prev + gamma (v - v_prev).

    The x0 prediction is re-derived from v' before an Euler step; the carry is the uncorrected velocity v of this
    step. A final step to sigma_next = 0 returns the x0 prediction itself.
    """

    gamma: float = 2.0

    def __call__(
        self,
        sample: torch.Tensor,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        carry: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if float(sigma_next) == 0:
            return x0, carry
        velocity = to_velocity(sample, x0, sigma)
        if carry is not None:
            x0 = to_x0(sample, self.gamma * (velocity - carry) + carry, sigma)
        return EulerStep()(sample, x0, sigma, sigma_next)[0], velocity
