"""Read a safetensors header (tensor table + metadata) without touching the tensor data, once per file version.

The format: 8 bytes little-endian header length N, then N bytes of UTF-8 JSON mapping tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an optional ``"__metadata__"`` dict of strings,
then the data. Reading only the header keeps inspection of a 40 GB checkpoint instant and memory-free.

A header is untrusted input, parsed in the ComfyUI server process, so it is bounded before it is parsed (size,
tensor count, JSON nesting depth) and every entry is checked (types, offsets inside the file, bytes = shape x dtype
size); any defect is a `CheckpointFormatError` naming the file and the defect. Parsed headers are cached by path
and file version (device, inode, size, mtime, ctime): the loader nodes, the loaders and the error messages that
describe a file all ask for the same header, and a changed file is parsed again.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import CheckpointFormatError

__all__ = ["DTYPE_SIZES", "FileStamp", "SafetensorsHeader", "TensorInfo", "file_stamp", "json_depth",
           "parse_json", "read_header"]

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference safetensors library refuses larger headers too
# The published single-file checkpoints hold ~5,000 tensors (~10,000 with fp8 scales), Gemma shards < 1,000.
MAX_TENSORS = 65536
MAX_JSON_DEPTH = 64  # a header nests 3 deep, a `config` ~6; deeper is hostile (json recurses in C per level)
MAX_DIMS = 16
HEADER = "its header"
REFUSED_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
CACHE_FILES = 32
CACHE_TENSORS = 4 * MAX_TENSORS  # the cache drops old headers beyond this many entries in all

# Bytes per element for the dtype names safetensors writes.
DTYPE_SIZES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8, "C64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F6_E2M3": 0.75, "F6_E3M2": 0.75, "F4": 0.5,
}
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_QUOTE = ord('"')
_BRACKET_STEPS = bytes(1 if c in b"[{" else 255 if c in b"]}" else 0 for c in range(256))  # int8 +1 / -1 / 0
_DEPTH_CHUNK = 1 << 22


class FileStamp(NamedTuple):
    """One version of a file: a change of content (or a replacement under the same name) changes it."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _stamp_of(status: os.stat_result) -> FileStamp:
    return FileStamp(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def file_stamp(path: str | os.PathLike[str]) -> FileStamp:
    """The current `FileStamp` of ``path`` (``OSError`` if it cannot be stat'ed)."""
    return _stamp_of(os.stat(path))


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


class FrozenDict(dict):
    """A dict that refuses changes: headers are shared through the cache (still a ``dict`` for json / safetensors)."""

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a parsed safetensors header is shared and read-only; copy it with dict(...) to change it")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore

    def __reduce__(self) -> tuple[type, tuple[dict]]:  # copies (copy, deepcopy, pickle) are plain dicts
        return dict, (dict(self),)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header of one safetensors file (``header_bytes``: length of its JSON part; ``stamp``: the file
    version it was read from). Headers are shared through the cache: ``metadata`` and ``tensors`` are read-only."""

    path: str
    file_size: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    header_bytes: int = 0
    stamp: FileStamp | None = field(default=None, compare=False)


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[`` / ``{`` in the JSON text ``raw`` (brackets inside strings skipped), vectorised."""
    import numpy as np

    unescaped = _ESCAPE.sub(b"", raw) if b"\\" in raw else raw  # then every quote opens or closes a string
    text = np.frombuffer(unescaped, dtype=np.uint8)
    table = np.frombuffer(_BRACKET_STEPS, dtype=np.int8)
    depth = deepest = quotes = 0
    for start in range(0, len(text), _DEPTH_CHUNK):
        chunk = text[start : start + _DEPTH_CHUNK]
        inside = (np.cumsum(chunk == _QUOTE, dtype=np.int64) + quotes) % 2 == 1
        steps = np.where(inside, 0, table[chunk])  # +1 per opening, -1 per closing bracket
        running = np.cumsum(steps, dtype=np.int64) + depth
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
        quotes += int(np.count_nonzero(chunk == _QUOTE))
    return deepest


def parse_json(path: str, raw: bytes | str, what: str) -> Any:
    """``json.loads(raw)`` for untrusted text: nesting bounded first; ``CheckpointFormatError`` naming ``what``."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if json_depth(data) > MAX_JSON_DEPTH:
        raise CheckpointFormatError(path, f"has {what} nested more than {MAX_JSON_DEPTH} levels deep.",
                                    "The file is damaged or deliberately malformed; use the official release file.")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        if what == HEADER:
            raise CheckpointFormatError(
                path, f"is not a valid safetensors file (its header is not valid JSON: {exc}).",
                "It may be another format renamed to .safetensors or a damaged download.") from exc
        raise CheckpointFormatError(path, f"has {what} that is not valid JSON ({exc}).",
                                    "The file is damaged or was written by a broken converter.") from exc


def _refuse_non_safetensors(path: str) -> None:
    if path.lower().endswith(REFUSED_SUFFIXES):
        raise CheckpointFormatError(
            path,
            "is a pickle-based checkpoint format.",
            "AIPROD loads .safetensors files only, because pickle files can run code when opened; "
            "use the .safetensors release of this model.",
        )


def _read_header_bytes(path: str, handle) -> bytes:
    file_size = os.fstat(handle.fileno()).st_size
    prefix = handle.read(HEADER_LENGTH_BYTES)
    if len(prefix) < HEADER_LENGTH_BYTES:
        raise CheckpointFormatError(
            path, f"is {file_size} bytes long, too short to be a safetensors file.",
            "The download is probably incomplete; download it again.",
        )
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > file_size - HEADER_LENGTH_BYTES:
        raise CheckpointFormatError(
            path, f"is not a valid safetensors file (header length {header_len} bytes for a {file_size}-byte file).",
            "It may be truncated, another format renamed to .safetensors, or a git-LFS pointer.",
        )
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointFormatError(
            path, f"has a {header_len}-byte header; at most {MAX_HEADER_BYTES} bytes are accepted.",
            "No model file has a header that large: the file is damaged or deliberately malformed.",
        )
    raw = handle.read(header_len)
    if len(raw) < header_len:
        raise CheckpointFormatError(path, "was truncated while its header was read.",
                                    "It is probably still being written (a download or copy in progress).")
    return raw


_INT = {int}


def _parse_entry(path: str, name: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointFormatError(path, f"has a malformed header entry for tensor {name!r} (expected an object "
                                    "with dtype, shape and data_offsets).")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    size = DTYPE_SIZES.get(dtype) if type(dtype) is str else None
    if size is None:
        raise CheckpointFormatError(path, f"stores tensor {name!r} as dtype {dtype!r}, which is not a safetensors "
                                    f"dtype (known: {', '.join(DTYPE_SIZES)}).")
    # type(...) is int: JSON gives int, float or bool; bools and floats are refused.
    if (type(shape) is not list or len(shape) > MAX_DIMS or not set(map(type, shape)) <= _INT
            or min(shape, default=0) < 0):
        raise CheckpointFormatError(path, f"has an invalid shape {shape!r} for tensor {name!r} (expected a list of "
                                    f"at most {MAX_DIMS} non-negative integers).")
    if type(offsets) is not list or len(offsets) != 2 or type(offsets[0]) is not int or type(offsets[1]) is not int:
        raise CheckpointFormatError(path, f"has invalid data offsets {offsets!r} for tensor {name!r} (expected "
                                    "[begin, end], two integers).")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise CheckpointFormatError(path, f"has invalid data offsets {offsets!r} for tensor {name!r} (expected "
                                    "0 <= begin <= end).")
    if end > data_size:
        raise CheckpointFormatError(
            path, f"is truncated: tensor {name!r} ends at byte {end} of a {data_size}-byte data section.",
            "The download is probably incomplete; download it again.",
        )
    numel = math.prod(shape)
    if numel * size != end - begin:
        raise CheckpointFormatError(
            path, f"has an inconsistent header entry for tensor {name!r}: shape {shape} of {dtype} "
            f"needs {numel * size:g} bytes, its data offsets give {end - begin}.",
            "The file is damaged or was written by a broken tool.",
        )
    return TensorInfo(dtype=dtype, shape=tuple(shape), nbytes=end - begin, begin=begin)


def _metadata(path: str, table: dict[str, Any]) -> dict[str, str]:
    raw = table.pop("__metadata__", None)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CheckpointFormatError(path, f"has a `__metadata__` entry that is a {type(raw).__name__}, not an object "
                                    "of strings.", "The file is damaged or was written by a broken tool.")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise CheckpointFormatError(
                path, f"has a `__metadata__` value for {key!r} that is a {type(value).__name__}, not a string "
                "(safetensors metadata values are strings).", "The file was written by a broken tool.")
    return raw


def _parse(path: str, raw: bytes, file_size: int, stamp: FileStamp) -> SafetensorsHeader:
    count = raw.count(b'"data_offsets"')  # an upper bound of the tensor count, before anything is parsed
    if count > MAX_TENSORS:
        raise CheckpointFormatError(
            path, f"declares about {count} tensors; at most {MAX_TENSORS} are accepted.",
            "No LTX-2 model file has that many: the file is damaged or deliberately malformed.")
    table = parse_json(path, raw, HEADER)
    if not isinstance(table, dict):
        raise CheckpointFormatError(path, "is not a valid safetensors file (its header is not a JSON object).")
    metadata = _metadata(path, table)
    if len(table) > MAX_TENSORS:
        raise CheckpointFormatError(path, f"declares {len(table)} tensors; at most {MAX_TENSORS} are accepted.")
    data_size = file_size - HEADER_LENGTH_BYTES - len(raw)
    tensors = {name: _parse_entry(path, name, entry, data_size) for name, entry in table.items()}
    return SafetensorsHeader(path=path, file_size=file_size, metadata=FrozenDict(metadata),
                             tensors=FrozenDict(tensors), header_bytes=len(raw), stamp=stamp)


class _HeaderCache:
    """The last parsed headers (and header defects) by (path, file version); bounded in files and tensors."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, FileStamp], SafetensorsHeader | CheckpointFormatError] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, FileStamp]) -> SafetensorsHeader | CheckpointFormatError | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, FileStamp], value: SafetensorsHeader | CheckpointFormatError) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > CACHE_FILES or (len(self._entries) > 1 and self._tensors() > CACHE_TENSORS):
                self._entries.popitem(last=False)

    def _tensors(self) -> int:
        return sum(len(v.tensors) for v in self._entries.values() if isinstance(v, SafetensorsHeader))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE = _HeaderCache()


def _raise_cached(error: CheckpointFormatError) -> None:
    raise CheckpointFormatError(error.path, error.problem, error.hint)


def _read(path: str) -> SafetensorsHeader:
    try:
        with open(path, "rb") as handle:
            before = _stamp_of(os.fstat(handle.fileno()))
            raw = _read_header_bytes(path, handle)
            after = _stamp_of(os.fstat(handle.fileno()))
    except PermissionError as exc:
        raise CheckpointFormatError(path, "cannot be read (permission denied).",
                                    "Check the file's permissions.") from exc
    except OSError as exc:
        raise CheckpointFormatError(path, f"cannot be read ({exc.strerror or exc}).") from exc
    if before != after:
        raise CheckpointFormatError(path, "changed while its header was read.",
                                    "It is probably still being written (a download or copy in progress).")
    try:
        header = _parse(path, raw, before.size, before)
    except CheckpointFormatError as error:
        _CACHE.put((path, before), error)  # a defect of this file version: not parsed again
        raise
    _CACHE.put((path, before), header)
    return header


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse the header of ``path`` (cached per file version); raise `CheckpointFormatError` naming the file on
    any defect."""
    path = os.fspath(path)
    _refuse_non_safetensors(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise CheckpointFormatError(path, "does not exist.") from None
    except OSError as exc:
        raise CheckpointFormatError(path, f"cannot be read ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(status.st_mode):
        raise CheckpointFormatError(path, "is a directory, expected a .safetensors file.")
    cached = _CACHE.get((path, _stamp_of(status)))
    if isinstance(cached, CheckpointFormatError):
        _raise_cached(cached)
    return cached if cached is not None else _read(path)
