"""Read a safetensors header (tensor table + metadata) without touching the tensor data.

The format: 8 bytes little-endian header length N, then N bytes of UTF-8 JSON mapping tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an optional ``"__metadata__"`` dict of strings,
then the data. Reading only the header keeps inspection of a 40 GB checkpoint instant and memory-free.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass

from .errors import CheckpointFormatError

__all__ = ["DTYPE_SIZES", "SafetensorsHeader", "TensorInfo", "read_header"]

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference safetensors library refuses larger headers too
REFUSED_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")

# Bytes per element for the dtype names safetensors writes.
DTYPE_SIZES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F4": 0.5,
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor's entry in the header: dtype name (e.g. ``"BF16"``), shape, byte length and where its bytes
    begin in the data section (after the 8-byte length and the JSON header)."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    begin: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header of one safetensors file (``header_bytes``: length of its JSON part)."""

    path: str
    file_size: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    header_bytes: int = 0


def _refuse_non_safetensors(path: str) -> None:
    if path.lower().endswith(REFUSED_SUFFIXES):
        raise CheckpointFormatError(
            path,
            "is a pickle-based checkpoint format.",
            "AIPROD loads .safetensors files only, because pickle files can run code when opened; "
            "use the .safetensors release of this model.",
        )


def _read_header_bytes(path: str) -> tuple[bytes, int]:
    if os.path.isdir(path):
        raise CheckpointFormatError(path, "is a directory, expected a .safetensors file.")
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as handle:
            prefix = handle.read(HEADER_LENGTH_BYTES)
            if len(prefix) < HEADER_LENGTH_BYTES:
                raise CheckpointFormatError(
                    path, f"is {file_size} bytes long, too short to be a safetensors file.",
                    "The download is probably incomplete; download it again.",
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or header_len > file_size - HEADER_LENGTH_BYTES:
                raise CheckpointFormatError(
                    path, f"is not a valid safetensors file (header length {header_len} bytes "
                    f"for a {file_size}-byte file).",
                    "It may be truncated, another format renamed to .safetensors, or a git-LFS pointer.",
                )
            raw = handle.read(header_len)
    except PermissionError as exc:
        raise CheckpointFormatError(path, "cannot be read (permission denied).",
                                    "Check the file's permissions.") from exc
    return raw, file_size


def _parse_entry(path: str, name: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointFormatError(path, f"has a malformed header entry for tensor {name!r}.")
    begin, end = entry["data_offsets"]
    if not 0 <= begin <= end:
        raise CheckpointFormatError(path, f"has invalid data offsets for tensor {name!r}.")
    if end > data_size:
        raise CheckpointFormatError(
            path, f"is truncated: tensor {name!r} ends at byte {end} of a {data_size}-byte data section.",
            "The download is probably incomplete; download it again.",
        )
    info = TensorInfo(dtype=str(entry["dtype"]), shape=tuple(int(d) for d in entry["shape"]), nbytes=end - begin,
                      begin=begin)
    size = DTYPE_SIZES.get(info.dtype)
    if size is not None and (min(info.shape, default=0) < 0 or info.numel * size != info.nbytes):
        raise CheckpointFormatError(
            path, f"has an inconsistent header entry for tensor {name!r}: shape {list(info.shape)} of {info.dtype} "
            f"needs {info.numel * size:g} bytes, its data offsets give {info.nbytes}.",
            "The file is damaged or was written by a broken tool.",
        )
    return info


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse the header of ``path``; raise :class:`CheckpointFormatError` naming the file on any defect."""
    path = os.fspath(path)
    _refuse_non_safetensors(path)
    if not os.path.exists(path):
        raise CheckpointFormatError(path, "does not exist.")
    raw, file_size = _read_header_bytes(path)
    try:
        table = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(
            path, "is not a valid safetensors file (its header is not JSON).",
            "It may be another format renamed to .safetensors or a damaged download.",
        ) from exc
    if not isinstance(table, dict):
        raise CheckpointFormatError(path, "is not a valid safetensors file (header is not a JSON object).")
    raw_meta = table.pop("__metadata__", None) or {}
    metadata = {str(k): str(v) for k, v in raw_meta.items()} if isinstance(raw_meta, dict) else {}
    data_size = file_size - HEADER_LENGTH_BYTES - len(raw)
    tensors = {name: _parse_entry(path, name, entry, data_size) for name, entry in table.items()}
    return SafetensorsHeader(path=path, file_size=file_size, metadata=metadata, tensors=tensors,
                             header_bytes=len(raw))
