"""Per-sample attention perturbations for guidance: STG (skip self-attention) and modality isolation.

A forward pass takes one ``Perturbations``: a ``SamplePerturbation`` per batch element, so a single batched call
can carry e.g. the conditional and the STG-perturbed predictions side by side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["EVERY_BLOCK", "Perturbations", "SamplePerturbation", "Skip"]


class _EveryBlock:
    """Block selection containing every block index."""

    def __contains__(self, block: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "EVERY_BLOCK"


EVERY_BLOCK = _EveryBlock()
Blocks = frozenset[int] | _EveryBlock


class Skip(Enum):
    """What a perturbation removes in a block; the value names the ``SamplePerturbation`` field."""

    VIDEO_SELF_ATTENTION = "video_self_attention"  # self-attention output -> value projection (STG)
    AUDIO_SELF_ATTENTION = "audio_self_attention"
    AUDIO_TO_VIDEO = "audio_to_video"  # the video stream's attention to audio is not added
    VIDEO_TO_AUDIO = "video_to_audio"  # the audio stream's attention to video is not added


def _blocks(value: Blocks | Iterable[int]) -> Blocks:
    if isinstance(value, _EveryBlock):
        return value
    blocks = frozenset(value)
    if not all(isinstance(b, int) and b >= 0 for b in blocks):
        raise ValueError(f"blocks={sorted(blocks, key=repr)!r}, expected non-negative block indices")
    return blocks


@dataclass(frozen=True)
class SamplePerturbation:
    """The blocks in which one batch element skips each kind of attention (empty: none; ``EVERY_BLOCK``: all)."""

    video_self_attention: Blocks = field(default_factory=frozenset)
    audio_self_attention: Blocks = field(default_factory=frozenset)
    audio_to_video: Blocks = field(default_factory=frozenset)
    video_to_audio: Blocks = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for kind in Skip:
            object.__setattr__(self, kind.value, _blocks(getattr(self, kind.value)))

    @classmethod
    def stg(cls, video_blocks: Iterable[int] = (), audio_blocks: Iterable[int] = ()) -> SamplePerturbation:
        """Spatio-temporal guidance: skip the self-attention of the given video / audio blocks."""
        return cls(video_self_attention=frozenset(video_blocks), audio_self_attention=frozenset(audio_blocks))

    @classmethod
    def isolated_modalities(cls) -> SamplePerturbation:
        """Modality isolation: no audio<->video cross-attention in any block."""
        return cls(audio_to_video=EVERY_BLOCK, video_to_audio=EVERY_BLOCK)

    def skips(self, kind: Skip, block: int) -> bool:
        return block in getattr(self, kind.value)


@dataclass(frozen=True)
class Perturbations:
    """One ``SamplePerturbation`` per batch element (``len(samples)`` must equal the batch size)."""

    samples: tuple[SamplePerturbation, ...]

    @classmethod
    def none(cls, batch_size: int) -> Perturbations:
        return cls((SamplePerturbation(),) * batch_size)

    @classmethod
    def uniform(cls, sample: SamplePerturbation, batch_size: int) -> Perturbations:
        return cls((sample,) * batch_size)

    def flags(self, kind: Skip, block: int) -> tuple[bool, ...]:
        """Per batch element: whether ``kind`` is skipped in ``block``."""
        return tuple(sample.skips(kind, block) for sample in self.samples)
