"""Read a GGUF file's header (key-values and tensor table) into the same header type as a safetensors file.

GGUF (ggml's container; version 2 and 3): magic ``GGUF``, uint32 version, uint64 tensor count, uint64 key-value
count; each key-value is a string key, a uint32 value type and the value; each tensor entry is its name, uint32
dim count, uint64 dims (fastest first: a (out, in) weight is stored as [in, out]), uint32 ggml type and uint64
data offset; the data section starts at the next multiple of ``general.alignment`` (default 32). Nothing in the
file is executed; every count, length and offset is bounded by the file's size before it is used.

The result is a `GGUFHeader` (a `SafetensorsHeader`): plain tensors (F32, F16, BF16, ...) are entries of that
dtype and logical shape; quantized ones are U8 entries of shape (rows, bytes per row), described by a `LayerQuant`
in ``quant_layers`` (format from `loaders.quant.formats.GGML_TYPES`). Key-value pairs become string metadata, so
a ``config`` string carries the model config as in a safetensors file. `MappedFile` reads the tensors.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass, field

from .errors import CheckpointFormatError
from .quant.formats import GGML_PLAIN_TYPES, GGML_TYPES
from .quant.layers import LayerQuant
from .safetensors_header import HEADER_LENGTH_BYTES, SafetensorsHeader, TensorInfo

__all__ = ["GGUFHeader", "is_gguf", "read_gguf_header"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_COUNT = 1_000_000  # tensors or key-values
MAX_STRING = 64 * 1024 * 1024
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 2
SHOWN_ARRAY_ITEMS = 64  # arrays longer than this become a summary in the metadata
# Block (values, bytes) of the ggml types we recognise but do not de-quantise (sizes from ggml).
UNSUPPORTED_SIZES = {9: (32, 36), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50),
                     20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 29: (256, 56), 34: (256, 54),
                     35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18)}
# GGUF value types: id -> struct format (8: string, 9: array).
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class GGUFHeader(SafetensorsHeader):
    """A GGUF file's header as a `SafetensorsHeader`, plus its quantized tensors and ggml types."""

    quant_layers: dict[str, LayerQuant] = field(default_factory=dict)
    ggml_types: dict[str, str] = field(default_factory=dict)  # tensor name -> ggml type name
    unsupported: dict[str, str] = field(default_factory=dict)  # tensor name -> ggml type we cannot de-quantise
    architecture: str = ""
    version: int = 3


def is_gguf(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(".gguf")


class _Cursor:
    """Bounded little-endian reads from the mapped header."""

    def __init__(self, path: str, data: mmap.mmap) -> None:
        self.path, self.data, self.pos = path, data, 0

    def fail(self, what: str) -> CheckpointFormatError:
        return CheckpointFormatError(self.path, f"is not a valid GGUF file ({what} at byte {self.pos}).",
                                     "It may be truncated or another format renamed to .gguf; download it again.")

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.fail("unexpected end of header")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > MAX_STRING or self.pos + length > len(self.data):
            raise self.fail(f"string of {length} bytes")
        raw = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail("string that is not UTF-8") from exc

    def value(self, kind: int, depth: int = 0):
        if kind in SCALARS:
            return self.unpack(SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9 and depth < MAX_ARRAY_DEPTH:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if count > len(self.data) - self.pos:  # every item takes at least one byte
                raise self.fail(f"array of {count} items")
            return [self.value(item_kind, depth + 1) for _ in range(count)]
        raise self.fail(f"value type {kind}")


def _as_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) > SHOWN_ARRAY_ITEMS:
        return f"<array of {len(value)} items>"
    return json.dumps(value)


def _tensor_entry(cur: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cur.string()
    dims = cur.unpack("<I")
    if not 1 <= dims <= MAX_DIMS:
        raise cur.fail(f"tensor {name!r} with {dims} dimensions")
    ne = [cur.unpack("<Q") for _ in range(dims)]
    kind, offset = cur.unpack("<I"), cur.unpack("<Q")
    return name, tuple(reversed(ne)), kind, offset  # torch order: slowest first


def _storage(cur: _Cursor, name: str, shape: tuple[int, ...], kind: int) -> tuple[str, tuple[int, ...], int]:
    """(dtype name, stored shape, bytes) of one tensor."""
    if kind in GGML_PLAIN_TYPES:
        _, dtype, size = GGML_PLAIN_TYPES[kind]
        return dtype, shape, math.prod(shape) * size
    if kind in GGML_TYPES and GGML_TYPES[kind][1] is not None:
        fmt = GGML_TYPES[kind][1]
        block, type_size = fmt.block_size, fmt.type_size
    elif kind in UNSUPPORTED_SIZES:
        block, type_size = UNSUPPORTED_SIZES[kind]
    else:
        raise cur.fail(f"tensor {name!r} of unknown ggml type {kind}")
    if shape[-1] % block:
        raise cur.fail(f"tensor {name!r} {list(shape)} whose rows are not whole {block}-value blocks")
    stored = (*shape[:-1], shape[-1] // block * type_size)
    return "U8", stored, math.prod(stored)


def _read_table(cur: _Cursor) -> tuple[int, dict[str, object], list[tuple[str, tuple[int, ...], int, int]]]:
    if bytes(cur.data[:4]) != MAGIC:
        raise cur.fail("no GGUF magic")
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in VERSIONS:
        raise CheckpointFormatError(cur.path, f"is GGUF version {version}; AIPROD reads versions 2 and 3.",
                                    "Convert it again with a current gguf tool.")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
        raise cur.fail(f"{n_tensors} tensors and {n_kv} key-values")
    values: dict[str, object] = {}
    for _ in range(n_kv):
        key = cur.string()
        values[key] = cur.value(cur.unpack("<I"))
    return version, values, [_tensor_entry(cur) for _ in range(n_tensors)]


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse the header of the GGUF file ``path``; raise `CheckpointFormatError` naming the file on any defect."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointFormatError(path, "does not exist." if not os.path.exists(path) else "is not a file.")
    file_size = os.path.getsize(path)
    if file_size < 24:
        raise CheckpointFormatError(path, f"is {file_size} bytes long, too short to be a GGUF file.",
                                    "The download is probably incomplete; download it again.")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cur = _Cursor(path, data)
        version, values, entries = _read_table(cur)
        alignment = values.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise cur.fail(f"general.alignment={alignment!r}")
        data_start = -(-cur.pos // alignment) * alignment
    return _header(path, file_size, version, values, entries, data_start, alignment)


def _header(path: str, file_size: int, version: int, values: dict[str, object],
            entries: list[tuple[str, tuple[int, ...], int, int]], data_start: int, alignment: int) -> GGUFHeader:
    cur = _Cursor(path, b"")  # for error messages only
    tensors: dict[str, TensorInfo] = {}
    quant: dict[str, LayerQuant] = {}
    types: dict[str, str] = {}
    unsupported: dict[str, str] = {}
    for name, shape, kind, offset in entries:
        dtype, stored, nbytes = _storage(cur, name, shape, kind)
        if offset % alignment or data_start + offset + nbytes > file_size:
            raise CheckpointFormatError(path, f"is truncated or damaged: tensor {name!r} at data offset {offset} "
                                        f"({nbytes} bytes) does not fit the {file_size}-byte file.",
                                        "The download is probably incomplete; download it again.")
        if name in tensors:
            raise cur.fail(f"tensor {name!r} listed twice")
        tensors[name] = TensorInfo(dtype=dtype, shape=stored, nbytes=nbytes, begin=offset)
        type_name, fmt = GGML_TYPES.get(kind, (GGML_PLAIN_TYPES.get(kind, ("?",))[0], None))
        types[name] = type_name
        if kind in GGML_PLAIN_TYPES:
            continue
        if fmt is None:
            unsupported[name] = type_name
            continue
        layer = name.removesuffix(".weight")
        quant[layer] = LayerQuant(layer, fmt, "GGUF", {"weight": name}, shape=shape)
    metadata = {key: _as_text(value) for key, value in values.items()}
    return GGUFHeader(path=path, file_size=file_size, metadata=metadata, tensors=tensors,
                      header_bytes=data_start - HEADER_LENGTH_BYTES, quant_layers=quant, ggml_types=types,
                      unsupported=unsupported, architecture=str(values.get("general.architecture", "")),
                      version=version)
