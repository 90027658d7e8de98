"""Tensors of a safetensors file as views of one private memory mapping, using the header we already parsed.

``safetensors.safe_open`` would parse the header a second time (in Rust, kept for the handle's life) and make a
Python call per tensor; a load reads every tensor of a 20-40 GB file, so we map the file once ourselves:

- the mapping is private (copy-on-write): an in-place write to a view (LoRA fusion) copies the touched page and
  never reaches the file;
- a tensor is a view of the mapping (no copy; pages are read on first use) and keeps the mapping alive for as
  long as it lives;
- `MappedFile.release` drops the pages of a tensor that has been converted into memory of its own, so a cast load
  (bf16 file -> float32 module) holds the module plus, at any time, only the source tensor being converted.
"""

from __future__ import annotations

import mmap
import os
from types import TracebackType

import torch

from .errors import CheckpointFormatError
from .safetensors_header import HEADER_LENGTH_BYTES, SafetensorsHeader

__all__ = ["TORCH_DTYPES", "MappedFile"]

# safetensors dtype names -> torch dtypes (names without a torch dtype, e.g. "F4", cannot be loaded as tensors).
TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}
PAGE = mmap.PAGESIZE
_DONT_NEED = getattr(mmap, "MADV_DONTNEED", None)  # Unix only


class MappedFile:
    """``with MappedFile(header) as mapped: mapped.tensor(name)`` -> a view of the file (see the module doc)."""

    def __init__(self, header: SafetensorsHeader) -> None:
        self.header = header
        self._map: mmap.mmap | None = None
        self._bytes: torch.Tensor | None = None  # the whole mapping as uint8 (N,)

    def __enter__(self) -> MappedFile:
        size = os.path.getsize(self.header.path)
        if size != self.header.file_size:
            raise CheckpointFormatError(self.header.path, f"changed while it was being loaded ({self.header.file_size}"
                                        f" bytes when its header was read, {size} bytes now).")
        with open(self.header.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
                 ) -> None:
        # The views handed out keep the mapping alive (it is unmapped when the last one is freed), so it is
        # only dropped here, never closed.
        self._bytes = None
        self._map = None

    def _range(self, name: str) -> tuple[int, int]:
        info = self.header.tensors[name]
        begin = HEADER_LENGTH_BYTES + self.header.header_bytes + info.begin
        return begin, begin + info.nbytes

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as stored (dtype and shape from the header), a view of the mapping where aligned."""
        if self._bytes is None:
            raise RuntimeError("MappedFile.tensor() called outside its `with` block")
        info = self.header.tensors[name]
        dtype = TORCH_DTYPES.get(info.dtype)
        if dtype is None:
            raise CheckpointFormatError(self.header.path, f"stores tensor {name!r} as {info.dtype}, which cannot be "
                                        f"loaded (supported: {', '.join(TORCH_DTYPES)}).")
        begin, end = self._range(name)
        raw = self._bytes[begin:end]
        if begin % dtype.itemsize:  # unaligned data (rare, hand-written files): copy so the dtype view is legal
            raw = raw.clone()
        return raw.view(dtype).reshape(info.shape)

    def release(self, name: str) -> None:
        """Drop the resident pages lying wholly inside tensor ``name`` (call only once no view of it is kept and it
        was not written to: the pages are re-read from the file if anything touches them again)."""
        if self._map is None or _DONT_NEED is None:  # no madvise (Windows): the pages go when the mapping does
            return
        begin, end = self._range(name)
        first, last = -(-begin // PAGE) * PAGE, end // PAGE * PAGE
        if last > first:
            self._map.madvise(_DONT_NEED, first, last - first)
