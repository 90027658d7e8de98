"""Noise schedules: the LTX-2 token-count-shifted schedule and the distilled models' fixed sigma tables.

A schedule is a 1-D float32 tensor of ``steps + 1`` sigmas, from 1 (pure noise) down to 0 (clean).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "DISTILLED_SIGMAS",
    "STAGE_2_DISTILLED_SIGMAS",
    "distilled_sigmas",
    "ltx2_sigmas",
    "video_token_count",
]

# The shift grows linearly with the token count between these two anchors (base_shift at 1024, max_shift at 4096).
BASE_SHIFT_TOKENS = 1024
MAX_SHIFT_TOKENS = 4096
DEFAULT_MAX_SHIFT = 2.05
DEFAULT_BASE_SHIFT = 0.95
DEFAULT_TERMINAL = 0.1

# Fixed schedule of the distilled checkpoints (8 steps) and the 3-step refinement of a two-stage pipeline's
# second (upscaled) stage, as the distilled models were tuned.
DISTILLED_SIGMAS: tuple[float, ...] = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE_2_DISTILLED_SIGMAS: tuple[float, ...] = (0.909375, 0.725, 0.421875, 0.0)


def video_token_count(latent_shape: tuple[int, ...]) -> int:
    """Tokens of a video latent (B, C, F, H, W) at patch size 1: F x H x W."""
    return math.prod(latent_shape[2:])


def distilled_sigmas(stage_2: bool = False) -> torch.Tensor:
    """The distilled sigma table (stage 2: its last three steps) as a float32 tensor."""
    return torch.tensor(STAGE_2_DISTILLED_SIGMAS if stage_2 else DISTILLED_SIGMAS, dtype=torch.float32)


def ltx2_sigmas(
    steps: int,
    tokens: int = MAX_SHIFT_TOKENS,
    max_shift: float = DEFAULT_MAX_SHIFT,
    base_shift: float = DEFAULT_BASE_SHIFT,
    stretch: bool = True,
    terminal: float = DEFAULT_TERMINAL,
) -> torch.Tensor:
    """LTX-2 schedule (steps + 1,): linear t in [1, 0] time-shifted by mu(tokens), last nonzero stretched to terminal.

    sigma = e^mu / (e^mu + 1/t - 1) with mu linear in the token count (base_shift at 1024 tokens, max_shift at
    4096); with ``stretch`` the nonzero sigmas are rescaled in (1 - sigma) so the last one equals ``terminal``.
    One step gives [1, 0] (upstream's stretch of a single nonzero sigma yields [0.1, 0] or [nan, 0]).
    """
    if steps < 1:
        raise ValueError(f"steps={steps!r}, expected >= 1")
    if stretch and not 0.0 <= terminal < 1.0:
        raise ValueError(f"terminal={terminal!r}, expected a value in [0, 1)")
    if steps == 1:
        return torch.tensor([1.0, 0.0])
    slope = (max_shift - base_shift) / (MAX_SHIFT_TOKENS - BASE_SHIFT_TOKENS)
    exp_mu = math.exp(tokens * slope + (base_shift - slope * BASE_SHIFT_TOKENS))
    t = torch.linspace(1.0, 0.0, steps + 1)  # float32
    nonzero = t != 0
    sigmas = torch.where(nonzero, exp_mu / (exp_mu + (1 / t - 1)), 0)
    if stretch:
        one_minus = 1.0 - sigmas[nonzero]
        scale = one_minus[-1] / (1.0 - terminal)
        sigmas[nonzero] = 1.0 - one_minus / scale
    return sigmas.to(torch.float32)
