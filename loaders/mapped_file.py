"""Tensors of a safetensors file read into memory they own, using the header we already parsed.

ComfyUI keeps a loaded model for many prompts while the user may replace, re-download or truncate its file. A
tensor that is a view of a memory mapping stays tied to the file: when the file shrinks, touching a page past its
new end raises SIGBUS and kills the server; when it is rewritten in place, a private mapping's untouched pages
show the new bytes. So every tensor is read (``preadv`` into a fresh allocation, as ComfyUI's own loader ends up
with its weights copied into the model) and owns its bytes: a file changed on disk never reaches a loaded module.

- one read per tensor, in the caller's order (file order for a load), releasing the GIL while the kernel copies;
  a bf16 file loaded as bf16 holds the module once (the page cache is the kernel's, not the process's);
- the file is opened once per `MappedFile`; its version (size, mtime, inode) must be the one the header was read
  from, and is checked again after every read, so a file rewritten or truncated during a load fails it with a
  `CheckpointFormatError` instead of mixing two versions of the weights;
- reads are positional, so several threads may read through one `MappedFile` at once.

The name and the API (``MappedFile(header)``, ``.tensor(name)``, ``.release(name)``) are those of the memory-mapped
reader this replaces.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import torch

from .errors import CheckpointFormatError
from .safetensors_header import HEADER_LENGTH_BYTES, FileStamp, SafetensorsHeader

__all__ = ["TORCH_DTYPES", "MappedFile"]

# safetensors dtype names -> torch dtypes (names without a torch dtype, e.g. "F4", cannot be loaded as tensors).
TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}
RERUN_HINT = "Queue the prompt again once the file is complete: it is then read anew."


def _describe_change(then: FileStamp, now: os.stat_result) -> str:
    if now.st_ino != then.inode or now.st_dev != then.device:
        return "it was replaced by another file"
    if now.st_size != then.size:
        return f"{then.size} bytes when its header was read, {now.st_size} bytes now"
    return "it was rewritten"


class MappedFile:
    """``with MappedFile(header) as reader: reader.tensor(name)`` -> tensor ``name`` in memory of its own."""

    def __init__(self, header: SafetensorsHeader) -> None:
        self.header = header
        self._file = None
        self._lock = threading.Lock()  # serialises seek + read where the OS has no preadv

    def __enter__(self) -> MappedFile:
        path = self.header.path
        try:
            self._file = open(path, "rb", buffering=0)  # closed in __exit__
        except PermissionError as exc:
            raise CheckpointFormatError(path, "cannot be read (permission denied).",
                                        "Check the file's permissions.") from exc
        except OSError as exc:
            raise CheckpointFormatError(path, f"cannot be read ({exc.strerror or exc}).", RERUN_HINT) from exc
        try:
            self._check_unchanged("since its header was read")
        except CheckpointFormatError:
            self._close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
                 ) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _check_unchanged(self, when: str) -> None:
        """Raise unless the open file is still the version the header describes: device, inode, size and mtime
        (not ctime, which an atomic replacement changes on the old file too, whose open descriptor stays valid)."""
        now = os.fstat(self._file.fileno())
        then = self.header.stamp
        if then is None:  # a header built by hand: only the size is known
            if now.st_size == self.header.file_size:
                return
            then = FileStamp(now.st_dev, now.st_ino, self.header.file_size, now.st_mtime_ns, now.st_ctime_ns)
        same = (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == tuple(then)[:4]
        if not same:
            raise CheckpointFormatError(self.header.path, f"changed on disk {when} ({_describe_change(then, now)}).",
                                        RERUN_HINT)

    def _range(self, name: str) -> tuple[int, int]:
        info = self.header.tensors[name]
        begin = HEADER_LENGTH_BYTES + self.header.header_bytes + info.begin
        return begin, begin + info.nbytes

    def _read_into(self, target: memoryview, offset: int) -> int:
        """Fill ``target`` from byte ``offset``; the number of bytes read (less only at the end of the file)."""
        done = 0
        if hasattr(os, "preadv"):
            while done < len(target):
                count = os.preadv(self._file.fileno(), [target[done:]], offset + done)
                if count == 0:
                    break
                done += count
            return done
        with self._lock:
            self._file.seek(offset)
            while done < len(target):
                count = self._file.readinto(target[done:])
                if not count:
                    break
                done += count
        return done

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as stored (dtype and shape from the header), read into a new CPU tensor."""
        if self._file is None:
            raise RuntimeError("MappedFile.tensor() called outside its `with` block")
        info = self.header.tensors[name]
        dtype = TORCH_DTYPES.get(info.dtype)
        if dtype is None:
            raise CheckpointFormatError(self.header.path, f"stores tensor {name!r} as {info.dtype}, which cannot be "
                                        f"loaded (supported: {', '.join(TORCH_DTYPES)}).")
        begin, end = self._range(name)
        data = torch.empty(end - begin, dtype=torch.uint8)  # (nbytes,) aligned for any dtype
        if end > begin:
            done = self._read_into(memoryview(data.numpy()), begin)
            if done < end - begin:
                raise CheckpointFormatError(self.header.path, f"was truncated while it was being loaded (tensor "
                                            f"{name!r} ends at byte {end}, the file now at {begin + done}).",
                                            RERUN_HINT)
            self._check_unchanged("while it was being loaded")
        return data.view(dtype).reshape(info.shape)

    def release(self, name: str) -> None:
        """Nothing to drop: every tensor owns its memory and nothing else of the file is held (kept for callers
        written for the memory-mapped reader, which dropped a converted tensor's pages here)."""
