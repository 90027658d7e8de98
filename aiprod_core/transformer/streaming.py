"""Low-VRAM mode: run a transformer whose blocks live in host memory, one block on the compute device at a time.

`BlockStreamer` attaches to a model with an ``nn.ModuleList`` of blocks (``AVTransformer.transformer_blocks``).
While attached, everything outside the block list and the first ``resident_blocks`` blocks sit on the device;
every other block keeps its parameters and buffers in host memory (pinned when the device is CUDA) and gets
device copies only around its own forward: a forward pre-hook points the block's tensors at the copies, a forward
hook points them back at the host tensors and drops the copies. The values are the same, so a streamed forward
is bitwise equal to the plain forward on the same device.

On CUDA the copies of the next ``prefetch`` blocks are issued ``non_blocking`` on a side stream while the current
block computes; the compute stream waits on a per-block event before it reads them, the copies are recorded on
the compute stream (``record_stream``) so the caching allocator never hands their memory out while a kernel may
still read it, and the host waits for a finished block's kernels before it allocates the next copy, so at most
``1 + prefetch`` streamed blocks hold device memory (`streaming_footprint`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["BLOCKS_ATTR", "BlockStreamer", "block_bytes", "find_blocks", "max_resident_blocks", "streaming_footprint"]

logger = logging.getLogger(__name__)

BLOCKS_ATTR = "transformer_blocks"  # where `AVTransformer` keeps its blocks
_PINNED_ATTR = "_aiprod_pinned_finalizer"


def find_blocks(model: nn.Module, blocks_attr: str = BLOCKS_ATTR) -> nn.ModuleList | None:
    """``model.<blocks_attr>`` when it is a non-empty ``nn.ModuleList`` (a model that can stream), else None."""
    blocks = getattr(model, blocks_attr, None)
    return blocks if isinstance(blocks, nn.ModuleList) and len(blocks) > 0 else None


def _tensors(modules: Iterable[nn.Module], skip: set[int] | None = None) -> list[torch.Tensor]:
    """The distinct parameter and buffer objects held directly by ``modules`` (tied ones once), in order."""
    seen = set() if skip is None else set(skip)
    found = []
    for module in modules:
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                found.append(tensor)
    return found


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _outside_modules(model: nn.Module, blocks: nn.ModuleList) -> list[nn.Module]:
    inside = {id(m) for m in blocks.modules()}
    return [m for m in model.modules() if id(m) not in inside]


def _required_blocks(model: nn.Module, blocks_attr: str) -> nn.ModuleList:
    blocks = find_blocks(model, blocks_attr)
    if blocks is None:
        raise ValueError(f"{type(model).__name__}.{blocks_attr} is not a non-empty nn.ModuleList, expected the "
                         "model's block list")
    return blocks


def block_bytes(model: nn.Module, blocks_attr: str = BLOCKS_ATTR) -> list[int]:
    """Bytes of each block's parameters and buffers (in their stored dtypes: fp8 layers count 1 byte a value)."""
    return [_nbytes(_tensors(block.modules())) for block in _required_blocks(model, blocks_attr)]


def _outside_bytes(model: nn.Module, blocks: nn.ModuleList) -> int:
    return _nbytes(_tensors(_outside_modules(model, blocks), {id(t) for t in _tensors(blocks.modules())}))


def _footprint(outside: int, sizes: list[int], resident_blocks: int, prefetch: int) -> int:
    streamed = sorted(sizes[resident_blocks:], reverse=True)
    return outside + sum(sizes[:resident_blocks]) + sum(streamed[: 1 + prefetch])


def streaming_footprint(
    model: nn.Module, resident_blocks: int = 0, prefetch: int = 1, blocks_attr: str = BLOCKS_ATTR
) -> int:
    """Weight bytes on the device while streaming: everything outside the block list, the ``resident_blocks``
    first blocks, and the ``1 + prefetch`` largest streamed blocks (the one computing and those being copied).
    Activations and the attention workspace come on top."""
    blocks = _required_blocks(model, blocks_attr)
    _check_options(resident_blocks, prefetch, len(blocks))
    return _footprint(_outside_bytes(model, blocks), block_bytes(model, blocks_attr), resident_blocks, prefetch)


def max_resident_blocks(model: nn.Module, budget: int, prefetch: int = 1, blocks_attr: str = BLOCKS_ATTR) -> int:
    """The most leading blocks that can stay on the device with `streaming_footprint` <= ``budget`` bytes
    (0 when even streaming every block exceeds it)."""
    blocks = _required_blocks(model, blocks_attr)
    _check_options(0, prefetch, len(blocks))
    outside, sizes = _outside_bytes(model, blocks), block_bytes(model, blocks_attr)
    fitting = [r for r in range(len(sizes) + 1) if _footprint(outside, sizes, r, prefetch) <= budget]
    return max(fitting, default=0)


def _check_options(resident_blocks: int, prefetch: int, num_blocks: int | None = None) -> None:
    if not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(f"prefetch={prefetch!r}, expected an integer >= 0")
    top = "" if num_blocks is None else num_blocks
    if not isinstance(resident_blocks, int) or resident_blocks < 0 or (num_blocks and resident_blocks > num_blocks):
        raise ValueError(f"resident_blocks={resident_blocks!r}, expected 0..{top} (an integer)")


@dataclass
class _Block:
    """A streamed block: its tensor objects and the host data they point at between forwards."""

    tensors: list[torch.Tensor]
    homes: list[torch.Tensor]


@dataclass
class _Session:
    """The state of one attachment (everything `BlockStreamer._detach` has to undo)."""

    device: torch.device
    window: int  # streamed blocks allowed to hold device memory at once (1 + prefetch)
    prefetch: int
    stream: Any = None  # torch.cuda.Stream for the copies (None: synchronous copies)
    moved: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (tensor, home) on the device
    blocks: dict[int, _Block] = field(default_factory=dict)  # streamed blocks by index
    order: list[int] = field(default_factory=list)  # streamed block indices, in forward order
    hooks: list[Any] = field(default_factory=list)
    issued: dict[int, tuple[list[torch.Tensor], Any]] = field(default_factory=dict)  # index -> (copies, ready event)
    in_flight: deque[tuple[Any, int]] = field(default_factory=deque)  # (event after a block's kernels, its bytes)


class BlockStreamer:
    """Streams a model's blocks from host memory to ``device`` around each block's forward (see the module doc).

    ``with BlockStreamer(resident_blocks=2).attached(model, "cuda"): model(...)``: inside, the model computes on
    the device with ``streaming_footprint`` bytes of weights there; on leaving (also on an exception) the hooks
    are removed and every parameter / buffer object points at its host tensor again. On CUDA, streamed blocks
    are pinned once, in place of their pageable tensors (block by block, so host memory does not double), and
    stay pinned after detaching (same Parameter objects, equal values); ``pin_memory=False`` keeps them pageable.
    """

    def __init__(self, *, resident_blocks: int = 0, prefetch: int = 1, pin_memory: bool = True,
                 blocks_attr: str = BLOCKS_ATTR) -> None:
        _check_options(resident_blocks, prefetch)
        self.resident_blocks = resident_blocks
        self.prefetch = prefetch
        self.pin_memory = pin_memory
        self.blocks_attr = blocks_attr
        self._session: _Session | None = None

    @property
    def attached_device(self) -> torch.device | None:
        """The device of the current attachment (None when detached)."""
        return None if self._session is None else self._session.device

    @property
    def device_bytes(self) -> int:
        """Bytes of weight copies on the device now (0 when detached): the parts moved for the whole attachment,
        the streamed block computing, those whose kernels may still run (CUDA) and the prefetched ones."""
        session = self._session
        if session is None:
            return 0
        moved = _nbytes(tensor for tensor, _ in session.moved)
        computing = sum(_nbytes(block.tensors) for block in session.blocks.values()
                        if block.tensors and block.tensors[0].data_ptr() != block.homes[0].data_ptr())
        pending = sum(nbytes for done, nbytes in session.in_flight if not done.query())
        return moved + computing + pending + sum(_nbytes(copies) for copies, _ in session.issued.values())

    @contextlib.contextmanager
    def attached(self, model: nn.Module, device: torch.device | str) -> Iterator[nn.Module]:
        """Stream ``model``'s blocks to ``device`` inside the ``with`` body; restores the model on leaving."""
        if self._session is not None:
            raise RuntimeError(f"BlockStreamer already attached to a model on {self._session.device}; detach first")
        blocks = _required_blocks(model, self.blocks_attr)
        _check_options(self.resident_blocks, self.prefetch, len(blocks))
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self._session = _Session(device, 1 + self.prefetch, self.prefetch)
        try:
            self._attach(model, blocks, self._session)
            yield model
        finally:
            self._detach()
            _drop_kept_keys_values(model)

    # ---------------------------------------------------------------------------------------------------------
    # Attach / detach
    # ---------------------------------------------------------------------------------------------------------

    def _attach(self, model: nn.Module, blocks: nn.ModuleList, session: _Session) -> None:
        block_ids = {id(t) for t in _tensors(blocks.modules())}
        _move(session, _tensors(_outside_modules(model, blocks), block_ids))
        for block in list(blocks)[: self.resident_blocks]:
            _move(session, _tensors(block.modules()))
        pin = self.pin_memory and session.device.type == "cuda"
        if pin and not model.__dict__.get(_PINNED_ATTR):
            # Freed pinned memory stays in torch's host cache until it is emptied: return it once the model is gone.
            model.__dict__[_PINNED_ATTR] = weakref.finalize(model, _return_pinned_memory)
        for index in range(self.resident_blocks, len(blocks)):
            tensors = _tensors(blocks[index].modules())
            _check_host(tensors, index)
            if pin:
                pin = _pin(tensors, index)
            session.blocks[index] = _Block(tensors, [t.data for t in tensors])
            session.order.append(index)
        if session.device.type == "cuda" and session.order:
            session.stream = torch.cuda.Stream(device=session.device)
        for index in session.order:
            block = blocks[index]
            session.hooks.append(block.register_forward_pre_hook(functools.partial(self._before, index)))
            session.hooks.append(block.register_forward_hook(functools.partial(self._after, index), always_call=True))
        logger.debug("streaming %d of %d blocks to %s (%d resident, prefetch %d, pinned host memory: %s)",
                     len(session.order), len(blocks), session.device, self.resident_blocks, self.prefetch, pin)

    def _detach(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        for hook in session.hooks:
            hook.remove()
        if session.stream is not None:
            session.stream.synchronize()  # copies still reading host memory / writing device memory
            torch.cuda.current_stream(session.device).synchronize()
        session.issued.clear()
        session.in_flight.clear()
        for block in session.blocks.values():
            for tensor, home in zip(block.tensors, block.homes, strict=True):
                tensor.data = home
        for tensor, home in reversed(session.moved):
            tensor.data = home

    # ---------------------------------------------------------------------------------------------------------
    # Hooks (run around each streamed block's forward)
    # ---------------------------------------------------------------------------------------------------------

    def _before(self, index: int, _module: nn.Module, _args: Any) -> None:
        session = self._live()
        _issue(session, index)  # a no-op when prefetched
        copies, ready = session.issued.pop(index)
        if ready is not None:
            compute = torch.cuda.current_stream(session.device)
            compute.wait_event(ready)
            for copy in copies:
                copy.record_stream(compute)  # its memory is not reused before the compute stream is past this block
        for tensor, copy in zip(session.blocks[index].tensors, copies, strict=True):
            tensor.data = copy

    def _after(self, index: int, _module: nn.Module, _args: Any, _output: Any) -> None:
        session = self._live()
        block = session.blocks[index]
        for tensor, home in zip(block.tensors, block.homes, strict=True):
            tensor.data = home
        if session.stream is not None:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(session.device))
            session.in_flight.append((done, _nbytes(block.homes)))
        upcoming = _upcoming(session.order, index, session.prefetch)
        for stale in [i for i in session.issued if i not in upcoming]:  # blocks called out of order
            del session.issued[stale]
        for target in upcoming:
            _issue(session, target)

    def _live(self) -> _Session:
        if self._session is None:
            raise RuntimeError("a streamed block ran while its BlockStreamer is detached")
        return self._session


def _drop_kept_keys_values(model: nn.Module) -> None:
    """Text keys / values a model kept between its calls (`AVTransformer.clear_prompt_kv`) were computed on the
    streaming device: free them with the stream, as moving a whole model does."""
    clear = getattr(model, "clear_prompt_kv", None)
    if callable(clear):
        clear()


def _upcoming(order: list[int], index: int, count: int) -> list[int]:
    """The ``count`` streamed blocks after block ``index`` in forward order, wrapping to the next forward."""
    if count == 0 or index not in order:
        return []
    start = order.index(index) + 1
    return [order[(start + k) % len(order)] for k in range(min(count, len(order)))]


def _issue(session: _Session, index: int) -> None:
    """Start copying streamed block ``index`` to the device (side stream on CUDA) unless already issued."""
    if index in session.issued:
        return
    while session.in_flight and len(session.issued) + len(session.in_flight) >= session.window:
        session.in_flight.popleft()[0].synchronize()  # that block's kernels are done: its memory can be reused
    homes = session.blocks[index].homes
    if session.stream is None:
        session.issued[index] = ([h.to(session.device, copy=True) for h in homes], None)
        return
    with torch.cuda.stream(session.stream):
        copies = [h.to(session.device, non_blocking=True, copy=True) for h in homes]
        ready = torch.cuda.Event()
        ready.record(session.stream)
    session.issued[index] = (copies, ready)


def _move(session: _Session, tensors: list[torch.Tensor]) -> None:
    """Point ``tensors`` at device copies for the whole attachment (recorded for `_detach`)."""
    for tensor in tensors:
        home = tensor.data
        tensor.data = home.to(session.device, copy=True)
        session.moved.append((tensor, home))


def _check_host(tensors: list[torch.Tensor], index: int) -> None:
    for tensor in tensors:
        if tensor.device.type != "cpu":
            raise ValueError(f"block {index} has a tensor on {tensor.device}, expected host (cpu) memory to stream "
                             "from; move the model to the CPU (or its offload device) before attaching")


def _return_pinned_memory() -> None:
    """Give the page-locked host memory torch keeps cached back to the system (a 19B model pins ~38 GB)."""
    empty = getattr(torch._C, "_host_emptyCache", None)  # no public API for this in torch 2.11
    if empty is not None:
        empty()


def _pin(tensors: list[torch.Tensor], index: int) -> bool:
    """Replace each tensor's pageable host data by a pinned copy; False (and a debug log) when pinning fails."""
    try:
        for tensor in tensors:
            if not tensor.data.is_pinned():
                with torch.inference_mode(False):  # the pinned home outlives this call: never an inference tensor
                    pinned = tensor.data.pin_memory()
                tensor.data = pinned
    except RuntimeError as error:
        logger.debug("pinning block %d failed (%s): streaming from pageable memory", index, error)
        return False
    return True
