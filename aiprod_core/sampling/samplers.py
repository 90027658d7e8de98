"""Samplers: one step of the schedule for both streams, in k-diffusion's shape.

Every sampler has one signature, ``sampler(predict, states, sigmas, index, carry) -> (states, x0, carry)``:
``predict(states, sigma, step_index)`` is the loop's guided, clean-blended x0 of both streams at ``sigma`` (one
transformer call for the two streams together), ``states`` the (video, audio) `LatentState` pair (either may be
None: the stream is absent), ``carry`` whatever the sampler keeps between the steps of one loop (None at the
first step). It returns the states after the step, the x0 prediction of ``sigmas[index]`` (for previews) and its
carry. Frozen streams (``LatentState.frozen``) are never moved.

- `StreamSteps`: one prediction per step, then a per-stream first-order `DiffusionStep` (Euler, gradient
  estimation).
- `Res2s`: res_2s, the two-stage exponential Runge-Kutta sampler of ltx-pipelines' HQ pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .state import LatentState, keep_clean_tokens
from .steps import DiffusionStep, EulerStep

__all__ = ["Predict", "Res2s", "Sampler", "StreamSteps", "res2s_coefficients"]

States = tuple[LatentState | None, LatentState | None]
Prediction = tuple[torch.Tensor | None, torch.Tensor | None]
Predict = Callable[[States, torch.Tensor, int], Prediction]


class Sampler(Protocol):
    """Advances both streams by the step ``sigmas[index] -> sigmas[index + 1]``."""

    def __call__(
        self, predict: Predict, states: States, sigmas: torch.Tensor, index: int, carry: Any
    ) -> tuple[States, Prediction, Any]: ...


def _moved(state: LatentState | None, latent: torch.Tensor | None) -> LatentState | None:
    """The state with its new latent; a frozen (or absent) stream stays as it was."""
    if state is None or latent is None or state.frozen:
        return state
    return state.with_latent(latent.to(state.latent.dtype))


@dataclass(frozen=True)
class StreamSteps:
    """First-order sampling: one guided prediction per step, each stream advanced by ``step`` with its own carry."""

    step: DiffusionStep = field(default_factory=EulerStep)

    def __call__(
        self, predict: Predict, states: States, sigmas: torch.Tensor, index: int, carry: Any
    ) -> tuple[States, Prediction, Any]:
        carries = list(carry) if carry is not None else [None, None]
        x0 = predict(states, sigmas[index], index)
        moved: list[LatentState | None] = []
        for stream, state in enumerate(states):
            if state is None or state.frozen or x0[stream] is None:
                moved.append(state)
                continue
            latent, carries[stream] = self.step(state.latent, x0[stream], sigmas[index], sigmas[index + 1],
                                                carries[stream])  # fmt: skip
            if getattr(self.step, "renoises", False) and float(sigmas[index + 1]) != 0:  # noise added: clean back
                latent = keep_clean_tokens(latent, state)
            moved.append(state.with_latent(latent.to(state.latent.dtype)))
        return (moved[0], moved[1]), x0, tuple(carries)


def _phi(order: int, z: float) -> float:
    """phi_j(z) = (e^z - sum_{k<j} z^k / k!) / z^j (phi_j(0) = 1 / j!)."""
    if abs(z) < 1e-10:
        return 1.0 / math.factorial(order)
    return (math.exp(z) - sum(z**k / math.factorial(k) for k in range(order))) / z**order


def res2s_coefficients(h: float, c2: float = 0.5) -> tuple[float, float, float]:
    """(a21, b1, b2) of res_2s for a step of h = log(sigma / sigma_next): a21 = c2 phi1(-c2 h),
    b2 = phi2(-h) / c2, b1 = phi1(-h) - b2."""
    b2 = _phi(2, -h) / c2
    return c2 * _phi(1, -h * c2), _phi(1, -h) - b2, b2


def _fresh_noise(like: torch.Tensor, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise of ``like``'s shape, standardised over the whole tensor, then per sample over (T, C)."""
    noise = torch.randn(like.shape, generator=generator, dtype=dtype, device=generator.device)
    noise = (noise - noise.mean()) / noise.std()
    noise = noise - noise.mean(dim=(-2, -1), keepdim=True)
    return (noise / noise.std(dim=(-2, -1), keepdim=True)).to(like.device)


def _blend(x: torch.Tensor, state: LatentState) -> torch.Tensor:
    """x on the generated tokens, the clean values where the denoise mask is 0 (the loop's clean-token blend)."""
    mask = state.denoise_mask
    return (x * mask + state.clean_latent.float() * (1 - mask)).to(x.dtype)


def _sde(state: LatentState, start: torch.Tensor, target: torch.Tensor, sigmas: tuple[float, float],
         noise: torch.Tensor, eta: float) -> torch.Tensor:  # fmt: skip
    """Re-noise the deterministic move ``start`` (at sigma) -> ``target`` (at sigma_next): the line through both
    gives (x0, eps); x = alpha (x0 + sigma_down eps) + sigma_up noise with sigma_up = eta sigma_next, kept
    variance-preserving. eta 0 keeps ``target``. Clean tokens are blended back."""
    sigma, sigma_next = sigmas
    sigma_up = min(sigma_next * eta, sigma_next * 0.9999)
    if sigma_up == 0 or sigma_next == 0:
        return _blend(target, state)
    residual = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    alpha = (1.0 - sigma_next) + residual
    eps = (start - target) / (sigma - sigma_next)
    x0 = start - sigma * eps
    return _blend(alpha * (x0 + residual / alpha * eps) + sigma_up * noise, state)


@dataclass
class _Res2sCarry:
    step_noise: torch.Generator
    substep_noise: torch.Generator


@dataclass(frozen=True)
class Res2s:
    """res_2s: 2-stage exponential Runge-Kutta (midpoint c2 = 1/2, RES4LYF) in log sigma with SDE re-noising.

    A step h = log(sigma / sigma_next) from x with prediction D1 goes to the midpoint sigma_m = sqrt(sigma
    sigma_next), x_m = x + h a21 (D1 - x), re-noised with ``substep_eta``; with ``bongmath`` (h < 0.5, sigma >
    0.03) the anchor is moved so that x_m is exactly its midpoint again, x = (x_m - h a21 D1) / (1 - h a21)
    (the fixed point the reference iterates to). With D2 = predict(x_m, sigma_m):
    x_next = x + h (b1 (D1 - x) + b2 (D2 - x)), re-noised with ``eta``. A last step to sigma 0 goes to
    ``final_sigma`` and ends on the prediction there. Two predictions per step (three on the last one).

    The SDE noise comes from two generators of its own, seeded ``noise_seed`` (steps) and ``noise_seed`` + 10000
    (substeps) at the first step of each loop, in float64 (float32 where the device has no float64), as
    ltx-pipelines' ``res2s_audio_video_denoising_loop`` (whose seed -1 is the default here).
    """

    eta: float = 0.5
    substep_eta: float = 0.5
    noise_seed: int = -1
    bongmath: bool = True
    final_sigma: float = 0.0011

    def __call__(
        self, predict: Predict, states: States, sigmas: torch.Tensor, index: int, carry: Any
    ) -> tuple[States, Prediction, Any]:
        device = next(s for s in states if s is not None).latent.device
        hp = torch.float32 if device.type == "mps" else torch.float64
        if carry is None:
            carry = _Res2sCarry(torch.Generator(device=device).manual_seed(self.noise_seed),
                                torch.Generator(device=device).manual_seed(self.noise_seed + 10000))  # fmt: skip
        last = float(sigmas[index + 1]) == 0
        final = torch.tensor(self.final_sigma, dtype=sigmas.dtype)  # the schedule's precision, as upstream
        sigma, sigma_next = float(sigmas[index]), float(final if last else sigmas[index + 1])
        h = math.log(sigma / sigma_next)
        a21, b1, b2 = res2s_coefficients(h)
        sub_sigma = math.sqrt(sigma * sigma_next)
        x0 = predict(states, sigmas[index], index)
        anchor = [None if s is None else s.latent.to(hp) for s in states]
        d1 = [None if x is None else x.to(hp) for x in x0]
        mid: list[torch.Tensor | None] = [None, None]
        for i, state in enumerate(states):
            if state is None or d1[i] is None:
                continue
            x_mid = anchor[i] + h * a21 * (d1[i] - anchor[i])
            noise = _fresh_noise(state.latent, carry.substep_noise, hp)
            mid[i] = _sde(state, anchor[i], x_mid, (sigma, sub_sigma), noise, self.substep_eta)
            if self.bongmath and h < 0.5 and sigma > 0.03:
                anchor[i] = (mid[i] - h * a21 * d1[i]) / (1 - h * a21)
        mid_states = (_moved(states[0], mid[0]), _moved(states[1], mid[1]))
        d2 = predict(mid_states, torch.tensor(sub_sigma, dtype=sigmas.dtype), 0)
        moved: list[torch.Tensor | None] = [None, None]
        for i, state in enumerate(states):
            if state is None or d1[i] is None or d2[i] is None:
                continue
            x_next = anchor[i] + h * (b1 * (d1[i] - anchor[i]) + b2 * (d2[i].to(hp) - anchor[i]))
            noise = _fresh_noise(state.latent, carry.step_noise, hp)
            moved[i] = _sde(state, anchor[i], x_next, (sigma, sigma_next), noise, self.eta)
        result = (_moved(states[0], moved[0]), _moved(states[1], moved[1]))
        if last:
            x0_final = predict(result, final, index + 1)
            result = (_moved(result[0], x0_final[0]), _moved(result[1], x0_final[1]))
        return result, x0, carry
