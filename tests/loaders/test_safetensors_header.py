"""Hostile and malformed safetensors headers: each is a CheckpointFormatError naming the file and the defect (never a
TypeError, RecursionError or unpacking error), bounded before it is parsed; parsed headers are cached per file
version."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from aiprod.loaders import safetensors_header as sh
from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.safetensors_header import MAX_TENSORS, json_depth, read_header

GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def _write(path, header: object, data: bytes = b"\0" * 8, raw: bytes | None = None):
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _refused(path, *phrases: str) -> str:
    with pytest.raises(CheckpointFormatError) as caught:
        read_header(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    return message


@pytest.mark.parametrize(("entry", "phrase"), [
    ({**GOOD_ENTRY, "data_offsets": [0.0, 8.0]}, "invalid data offsets [0.0, 8.0] for tensor 'w'"),
    ({**GOOD_ENTRY, "data_offsets": ["0", "8"]}, "invalid data offsets ['0', '8']"),
    ({**GOOD_ENTRY, "data_offsets": [0, 4, 8]}, "invalid data offsets [0, 4, 8]"),
    ({**GOOD_ENTRY, "data_offsets": [8]}, "invalid data offsets [8]"),
    ({**GOOD_ENTRY, "data_offsets": {"begin": 0}}, "invalid data offsets {'begin': 0}"),
    ({**GOOD_ENTRY, "data_offsets": [8, 0]}, "expected 0 <= begin <= end"),
    ({**GOOD_ENTRY, "data_offsets": [True, 8]}, "invalid data offsets [True, 8]"),
    ({**GOOD_ENTRY, "shape": [-2]}, "invalid shape [-2] for tensor 'w'"),
    ({**GOOD_ENTRY, "shape": [2.0]}, "invalid shape [2.0]"),
    ({**GOOD_ENTRY, "shape": [True, 2]}, "invalid shape [True, 2]"),
    ({**GOOD_ENTRY, "shape": "2"}, "invalid shape '2'"),
    ({**GOOD_ENTRY, "shape": [1] * 17}, "at most 16 non-negative integers"),
    ({**GOOD_ENTRY, "shape": [2**40, 2**40]}, "needs 4.8357e+24 bytes, its data offsets give 8"),
    ({**GOOD_ENTRY, "dtype": "Q4"}, "stores tensor 'w' as dtype 'Q4', which is not a safetensors dtype"),
    ({**GOOD_ENTRY, "dtype": 4}, "as dtype 4"),
    ({"dtype": "F32", "shape": [2]}, "malformed header entry for tensor 'w'"),
    ([1, 2, 3], "malformed header entry for tensor 'w'"),
    ({**GOOD_ENTRY, "data_offsets": [0, 16]}, "is truncated: tensor 'w' ends at byte 16 of a 8-byte data section"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_entry_names_the_file_the_tensor_and_the_defect(tmp_path, entry, phrase):
    _refused(_write(tmp_path / "bad.safetensors", {"w": entry}), phrase)


@pytest.mark.parametrize(("metadata", "phrase"), [
    ({"config": {"transformer": {}}}, "`__metadata__` value for 'config' that is a dict, not a string"),
    ({"version": 2}, "`__metadata__` value for 'version' that is a int, not a string"),
    ({"flag": None}, "value for 'flag' that is a NoneType"),
    ([1, 2], "`__metadata__` entry that is a list, not an object of strings"),
    ("text", "`__metadata__` entry that is a str"),
])
def test_metadata_that_is_not_strings_is_refused(tmp_path, metadata, phrase):
    _refused(_write(tmp_path / "meta.safetensors", {"__metadata__": metadata, "w": GOOD_ENTRY}), phrase)


@pytest.mark.parametrize(("raw", "phrase"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels deep"),
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested more than 64 levels deep"),
    (b"[1, 2, 3]", "its header is not a JSON object"),
    (b"7", "its header is not a JSON object"),
    (b'{"w": ', "its header is not valid JSON"),
    (b'{"w": "\xff\xfe"}', "its header is not valid JSON"),
])
def test_header_that_is_not_a_flat_json_object_is_refused(tmp_path, raw, phrase):
    _refused(_write(tmp_path / "deep.safetensors", None, raw=raw), phrase)


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps({"name[[[[": {"x": "]]]]" * 100, "y": "\"[[[" * 100}}).encode()
    assert json_depth(text) == 2
    assert json_depth(b"[" * 65 + b"]" * 65) == 65


def test_too_many_tensors_are_refused_before_parsing(tmp_path):
    """The 63 MB header of 900,000 empty tensors stalled a server for minutes: refused from a byte count now."""
    table = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(MAX_TENSORS + 1)}
    _refused(_write(tmp_path / "many.safetensors", table, data=b""), f"declares about {MAX_TENSORS + 1} tensors",
             f"at most {MAX_TENSORS}")


def test_oversized_header_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    length = sh.MAX_HEADER_BYTES + 1
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", length))
        handle.truncate(8 + length + 8)  # sparse: nothing is written
    _refused(path, f"has a {length}-byte header; at most {sh.MAX_HEADER_BYTES} bytes are accepted")


def test_header_is_parsed_once_per_file_version(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(4)}, str(path))
    first = read_header(path)
    assert read_header(path) is first  # cached
    with pytest.raises(TypeError, match="read-only"):
        first.tensors["b"] = first.tensors["a"]
    assert dict(first.tensors) == {"a": first.tensors["a"]}
    save_file({"a": torch.zeros(8)}, str(path))
    second = read_header(path)
    assert second is not first and second.tensors["a"].shape == (8,)
    assert second.stamp == sh.file_stamp(path)


def test_a_defect_is_reported_again_for_the_same_version_and_forgotten_when_the_file_is_fixed(tmp_path):
    path = _write(tmp_path / "fixme.safetensors", {"w": {**GOOD_ENTRY, "dtype": "Q4"}})
    first = _refused(path, "'Q4'")
    assert _refused(path, "'Q4'") == first
    _write(path, {"w": GOOD_ENTRY})
    assert read_header(path).tensors["w"].dtype == "F32"


def test_a_missing_or_unreadable_path_names_the_file(tmp_path):
    _refused(tmp_path / "absent.safetensors", "does not exist")
    os.mkdir(tmp_path / "dir.safetensors")
    _refused(tmp_path / "dir.safetensors", "is a directory")
