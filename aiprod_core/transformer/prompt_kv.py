"""Text keys / values computed once per prompt.

A block's text cross-attention projects the prompt context to keys and values: ``k_norm(to_k(c))`` and
``to_v(c)``, where ``c`` is the context, modulated by the block's prompt table when the model has the
cross-attention AdaLN (LTX-2.3, LTX-2.5), and with the prompt AdaLN MLP also by each sample's sigma. The queries
never enter, so rows of a call that repeat a prompt (at the same sigma when it matters) need the keys / values
once: `PromptKV` computes them for the distinct rows only (the positive, STG and isolated passes of a guided batch
share one set) and hands each block the rows its batch needs.

When they do not depend on the timestep (LTX-2, whose context is only projected; or ``use_prompt_adaln_single``
off, the reference's key/value-cacheable option), `PromptKVCache` also keeps them between calls while the prompt
contexts stay bitwise the same, so a denoising loop computes them at its first step only. A cached value is the
tensor the same code computed from the same inputs, so reusing it is bitwise equal to recomputing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["PROMPT_CACHE_ENTRIES", "PromptKV", "PromptKVCache", "distinct_rows"]

# Prompt sets kept per stream between calls (positive + negative batched, or each alone when the planner
# splits a step): each holds every block's keys and values, 2 x S x inner values per block.
PROMPT_CACHE_ENTRIES = 4

KeysValues = tuple[torch.Tensor, torch.Tensor]
# (distinct contexts (U, S, D), their prompt AdaLN rows (U, 1, 2 D) or None) -> keys, values (U, S, inner)
Projection = Callable[[torch.Tensor, torch.Tensor | None], KeysValues]


def distinct_rows(context: torch.Tensor, sigma: torch.Tensor | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(row -> distinct-row id for every batch row, the first batch row of each distinct id).

    Rows are the same when their contexts (B, S, C) are bitwise equal and, when ``sigma`` (B,) is given, so are
    their sigmas. A batch broadcast from one row (stride 0) is one distinct row without a comparison.
    """
    batch = context.shape[0]
    if batch == 1 or (context.stride(0) == 0 and (sigma is None or sigma.stride(0) == 0)):
        return (0,) * batch, (0,)
    ids: list[int] = []
    firsts: list[int] = []
    for row in range(batch):
        for known, first in enumerate(firsts):
            same_sigma = sigma is None or bool(sigma[row] == sigma[first])
            if same_sigma and torch.equal(context[row], context[first]):
                ids.append(known)
                break
        else:
            ids.append(len(firsts))
            firsts.append(row)
    return tuple(ids), tuple(firsts)


@dataclass
class PromptKV:
    """The distinct prompt rows of one stream in one call and their keys / values, filled block by block.

    ``ids[b]``: the distinct row batch row b uses; ``context`` (U, S, D) the distinct contexts at the stream's
    width; ``timestep`` (U, 1, 2 D) their prompt AdaLN rows (None without the prompt AdaLN MLP); ``kv``: block
    index -> keys, values (U, S, inner), shared with the cache entry when the prompts are cached.
    """

    ids: tuple[int, ...]
    context: torch.Tensor
    timestep: torch.Tensor | None
    kv: dict[int, KeysValues] = field(default_factory=dict)

    def rows(self, index: torch.Tensor) -> PromptKV:
        """The same prompts for the batch rows in ``index`` (a shared-prefix plan's row subset)."""
        return PromptKV(tuple(self.ids[i] for i in index.tolist()), self.context, self.timestep, self.kv)

    def keys_values(self, block: int, project: Projection) -> KeysValues:
        """Keys, values for this call's rows: (B, S, inner), or (1, S, inner) when every row shares one prompt."""
        if block not in self.kv:
            self.kv[block] = project(self.context, self.timestep)
        keys, values = self.kv[block]
        return self.gather(keys), self.gather(values)

    def gather(self, distinct: torch.Tensor) -> torch.Tensor:
        """(U, ...) values of the distinct rows -> the batch's rows; a view when all rows share one."""
        first = self.ids[0]
        if all(i == first for i in self.ids):
            return distinct[first : first + 1]
        if self.ids == tuple(range(distinct.shape[0])):
            return distinct
        return distinct[list(self.ids)]


@dataclass
class _Entry:
    raw: torch.Tensor  # (U, S, C) the distinct contexts as given to the transformer (a private copy)
    inference: bool
    prompt: PromptKV


class PromptKVCache:
    """Timestep-independent text keys / values kept between calls, per stream, for the last few prompt sets.

    An entry is found again only for bitwise-equal contexts of the same dtype, device and shape (created in the
    same inference-mode state); a changed prompt makes a new entry and the oldest one beyond
    `PROMPT_CACHE_ENTRIES` is dropped. `clear` drops everything (the model does it when its weights move or are
    reloaded).
    """

    def __init__(self, max_entries: int = PROMPT_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, list[_Entry]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def find(self, stream: str, raw: torch.Tensor) -> PromptKV | None:
        entries = self._entries.get(stream, [])
        for position, entry in enumerate(entries):
            if (
                entry.raw.shape == raw.shape
                and entry.raw.dtype == raw.dtype
                and entry.raw.device == raw.device
                and entry.inference == torch.is_inference_mode_enabled()
                and torch.equal(entry.raw, raw)
            ):
                entries.append(entries.pop(position))  # most recently used last
                return entry.prompt
        return None

    def add(self, stream: str, raw: torch.Tensor, prompt: PromptKV) -> None:
        entries = self._entries.setdefault(stream, [])
        entries.append(_Entry(raw.clone(), torch.is_inference_mode_enabled(), prompt))
        del entries[: max(0, len(entries) - self.max_entries)]
