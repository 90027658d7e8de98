"""Guidance terms (small frozen dataclasses returning a delta) and the per-stream guider that sums them.

Each term compares the conditional x0 prediction ``cond`` (B, T, C) with the prediction of one extra pass
(``Pass``): negative prompt (CFG), self-attention skipped in some blocks (STG), audio<->video cross-attention
off (modality isolation). A ``StreamGuider`` adds its terms' deltas to ``cond`` in order and can rescale the
result towards the conditional prediction's standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import torch

__all__ = [
    "CFG",
    "STG",
    "CFGStar",
    "GuidanceTerm",
    "ModalityIsolation",
    "Pass",
    "SigmaBinnedGuider",
    "StreamGuider",
    "rescale_to_cond_std",
]

PROJECTION_EPS = 1e-8


class Pass(Enum):
    """Transformer passes a guidance term can compare against (POSITIVE is the conditional prediction)."""

    POSITIVE = "positive"
    NEGATIVE = "negative"  # negative prompt, same latents
    PERTURBED = "perturbed"  # positive prompt, self-attention skipped in the STG blocks
    ISOLATED = "isolated"  # positive prompt, no audio<->video cross-attention


class GuidanceTerm(Protocol):
    """A delta added to the conditional prediction, from the output of the pass ``source``."""

    source: Pass

    def delta(self, cond: torch.Tensor, other: torch.Tensor) -> torch.Tensor: ...

    def enabled(self) -> bool: ...


@dataclass(frozen=True)
class CFG:
    """Classifier-free guidance: (scale - 1) (cond - uncond)."""

    scale: float
    source: Pass = field(default=Pass.NEGATIVE, init=False)

    def delta(self, cond: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return (self.scale - 1) * (cond - other)

    def enabled(self) -> bool:
        return not math.isclose(self.scale, 1.0)


def projection_coefficient(vector: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) per-sample <vector, onto> / (|onto|^2 + 1e-8), broadcastable against (B, ...)."""
    batch = vector.shape[0]
    flat, onto_flat = vector.reshape(batch, -1), onto.reshape(batch, -1)
    dot = (flat * onto_flat).sum(dim=1, keepdim=True)
    coefficient = dot / ((onto_flat**2).sum(dim=1, keepdim=True) + PROJECTION_EPS)
    return coefficient.view(batch, *([1] * (vector.ndim - 1)))


@dataclass(frozen=True)
class CFGStar:
    """CFG with the unconditional prediction first projected onto the conditional one (CFG*)."""

    scale: float
    source: Pass = field(default=Pass.NEGATIVE, init=False)

    def delta(self, cond: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return (self.scale - 1) * (cond - projection_coefficient(cond, other) * other)

    def enabled(self) -> bool:
        return not math.isclose(self.scale, 1.0)


@dataclass(frozen=True)
class STG:
    """Spatio-temporal guidance: scale (cond - perturbed), self-attention skipped in ``blocks`` (None: all)."""

    scale: float
    blocks: tuple[int, ...] | None = ()
    source: Pass = field(default=Pass.PERTURBED, init=False)

    def __post_init__(self) -> None:
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(self.blocks))

    def delta(self, cond: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.scale * (cond - other)

    def enabled(self) -> bool:
        return not math.isclose(self.scale, 0.0)


@dataclass(frozen=True)
class ModalityIsolation:
    """Modality guidance: (scale - 1) (cond - isolated), isolated = no audio<->video cross-attention."""

    scale: float
    source: Pass = field(default=Pass.ISOLATED, init=False)

    def delta(self, cond: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return (self.scale - 1) * (cond - other)

    def enabled(self) -> bool:
        return not math.isclose(self.scale, 1.0)


def rescale_to_cond_std(cond: torch.Tensor, guided: torch.Tensor, amount: float) -> torch.Tensor:
    """guided x (amount std(cond) / std(guided) + 1 - amount), std per sample over all its tokens/channels."""
    dims = tuple(range(1, cond.ndim))
    factor = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return guided * (amount * factor + (1 - amount))


@dataclass(frozen=True)
class StreamGuider:
    """Guidance of one stream (video or audio): terms summed in order, optional std rescale, skipped steps.

    ``skip_step`` k > 0 reuses the previous step's guided prediction on every step not divisible by k + 1.
    """

    terms: tuple[GuidanceTerm, ...] = ()
    rescale: float = 0.0
    skip_step: int = 0

    @classmethod
    def multimodal(
        cls,
        cfg_scale: float = 1.0,
        stg_scale: float = 0.0,
        stg_blocks: Iterable[int] | None = (),
        rescale_scale: float = 0.0,
        modality_scale: float = 1.0,
        skip_step: int = 0,
    ) -> StreamGuider:
        """The LTX-2 multimodal guider: CFG, STG on ``stg_blocks``, modality isolation, std rescale."""
        blocks = None if stg_blocks is None else tuple(stg_blocks)
        terms = (CFG(cfg_scale), STG(stg_scale, blocks), ModalityIsolation(modality_scale))
        return cls(terms=terms, rescale=rescale_scale, skip_step=skip_step)

    def active_terms(self) -> tuple[GuidanceTerm, ...]:
        return tuple(term for term in self.terms if term.enabled())

    def needs(self) -> frozenset[Pass]:
        """Passes besides POSITIVE that the enabled terms read."""
        return frozenset(term.source for term in self.active_terms())

    def stg_blocks(self) -> tuple[int, ...] | None:
        """Blocks whose self-attention the PERTURBED pass skips for this stream (None: every block)."""
        blocks: set[int] = set()
        for term in self.active_terms():
            if isinstance(term, STG):
                if term.blocks is None:
                    return None
                blocks.update(term.blocks)
        return tuple(sorted(blocks))

    def skips(self, step_index: int) -> bool:
        return self.skip_step > 0 and step_index % (self.skip_step + 1) != 0

    def for_sigma(self, sigma: float) -> StreamGuider:
        return self

    def combine(self, cond: torch.Tensor, outputs: Mapping[Pass, torch.Tensor]) -> torch.Tensor:
        """cond + sum of the enabled terms' deltas, then the optional std rescale."""
        guided = cond
        for term in self.active_terms():
            guided = guided + term.delta(cond, outputs[term.source])
        if self.rescale != 0:
            guided = rescale_to_cond_std(cond, guided, self.rescale)
        return guided


@dataclass(frozen=True)
class SigmaBinnedGuider:
    """Sigma-dependent guidance: ``bins`` of (upper sigma bound, guider); sigma falls in (next bound, bound]."""

    bins: tuple[tuple[float, StreamGuider], ...]

    def __post_init__(self) -> None:
        if not self.bins:
            raise ValueError("bins=(), expected at least one (sigma bound, guider)")
        object.__setattr__(self, "bins", tuple(sorted(self.bins, key=lambda item: item[0], reverse=True)))

    def for_sigma(self, sigma: float) -> StreamGuider:
        """The guider of the smallest bound >= sigma (the largest bound's guider above every bound)."""
        above = [guider for bound, guider in self.bins if bound >= float(sigma)]
        return above[-1] if above else self.bins[0][1]
