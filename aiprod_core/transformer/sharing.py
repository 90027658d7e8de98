"""Shared block prefixes of a batched forward pass.

Guidance batches passes that see the same inputs and differ only in their perturbations (the positive and the
STG pass): such a sample is computed with the sample it duplicates up to the first block where their
perturbations differ, and only from there on as a batch row of its own. ``SharingPlan`` finds the duplicates
(bitwise-equal inputs) and when each one has to split off; ``run_blocks`` runs the blocks that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from .blocks import StreamArgs
from .inputs import ModalityInput
from .perturbations import Perturbations, SamplePerturbation, Skip

__all__ = ["SharingPlan", "run_blocks"]

_ROW_FIELDS = ("latent", "timesteps", "positions", "context", "context_mask", "attention_mask", "keyframes_mask")


@dataclass(frozen=True)
class SharingPlan:
    """``leaders[i]``: the earlier sample whose inputs sample i repeats (None: computed from the start);
    ``split_at[i]``: the first block where sample i's perturbation differs from its leader's."""

    leaders: tuple[int | None, ...]
    split_at: tuple[int, ...]

    @classmethod
    def find(
        cls, streams: Sequence[ModalityInput | None], perturbations: Perturbations, num_blocks: int
    ) -> SharingPlan | None:
        """The plan for this call, or None when no sample repeats another's inputs."""
        batch = len(perturbations.samples)
        leaders: list[int | None] = [None] * batch
        split_at = [0] * batch
        for i in range(1, batch):
            for j in range(i):
                if leaders[j] is None and all(_same_rows(s, i, j) for s in streams if s is not None):
                    leaders[i] = j
                    split_at[i] = _first_difference(perturbations.samples[i], perturbations.samples[j], num_blocks)
                    break
        if all(leader is None or split_at[i] == 0 for i, leader in enumerate(leaders)):
            return None
        return cls(tuple(leaders), tuple(split_at))


def _same_rows(stream: ModalityInput, i: int, j: int) -> bool:
    sigma = stream.sigma_per_sample()
    if not torch.equal(sigma[i], sigma[j]):
        return False
    for name in _ROW_FIELDS:
        tensor = getattr(stream, name)
        if tensor is not None and tensor.shape[0] > 1 and not torch.equal(tensor[i], tensor[j]):
            return False
    return True


def _first_difference(a: SamplePerturbation, b: SamplePerturbation, num_blocks: int) -> int:
    for block in range(num_blocks):
        if any(a.skips(kind, block) != b.skips(kind, block) for kind in Skip):
            return block
    return num_blocks


def _take(value: object, index: torch.Tensor, batch: int) -> object:
    if isinstance(value, torch.Tensor):
        return value[index] if value.ndim and value.shape[0] == batch and batch > 1 else value
    if hasattr(value, "rows"):  # rotary tables (leading batch, or 1: shared), the prompt rows
        return value.rows(index)
    return value


def _args_rows(args: StreamArgs | None, index: torch.Tensor, batch: int) -> StreamArgs | None:
    if args is None:
        return None
    return replace(args, **{f.name: _take(getattr(args, f.name), index, batch) for f in fields(args)})


def run_blocks(
    blocks: nn.ModuleList,
    x: tuple[torch.Tensor | None, torch.Tensor | None],
    args: tuple[StreamArgs | None, StreamArgs | None],
    perturbations: Perturbations,
    plan: SharingPlan,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Run ``blocks`` over video / audio x (B, T, D) computing each shared prefix once; same result rows."""
    batch = len(plan.leaders)
    device = next(t for t in x if t is not None).device
    rows = [i for i in range(batch) if plan.leaders[i] is None or plan.split_at[i] == 0]
    video_x, audio_x = (None if t is None else t[rows] for t in x)
    for number, block in enumerate(blocks):
        joining = [i for i in range(batch) if plan.leaders[i] is not None and plan.split_at[i] == number > 0]
        if joining:
            copies = torch.tensor([rows.index(plan.leaders[i]) for i in joining], device=device)
            video_x, audio_x = (None if t is None else torch.cat([t, t[copies]]) for t in (video_x, audio_x))
            rows += joining
        if number == 0 or joining:
            index = torch.tensor(rows, device=device)
            video_args, audio_args = (_args_rows(a, index, batch) for a in args)
            active = Perturbations(tuple(perturbations.samples[i] for i in rows))
        video_x, audio_x = block(video_x, audio_x, video_args, audio_args, active)
    pending = [i for i in range(batch) if i not in rows]  # duplicates with no difference: copy the result
    if pending:
        copies = torch.tensor([rows.index(plan.leaders[i]) for i in pending], device=device)
        video_x, audio_x = (None if t is None else torch.cat([t, t[copies]]) for t in (video_x, audio_x))
        rows += pending
    order = torch.tensor(rows, device=device).argsort()
    return tuple(None if t is None else t[order] for t in (video_x, audio_x))  # type: ignore[return-value]
