"""MappedFile: tensors equal to safetensors' own reader, views of a private mapping, unaligned data, bad headers."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.mapped_file import MappedFile
from aiprod.loaders.safetensors_header import read_header


def _write_raw(path, entries: dict[str, tuple[str, list[int], bytes]]) -> None:
    """A safetensors file written by hand, tensors packed with no alignment padding."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_tensors_match_safetensors_and_writes_never_reach_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 5, generator=generator).to(torch.bfloat16),
               "b": torch.randn(7, generator=generator), "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
               "d": torch.randn(2, 2, generator=generator).to(torch.float8_e4m3fn), "e": torch.zeros(0, 4)}
    save_file(tensors, str(path))
    with MappedFile(read_header(path)) as mapped:
        loaded = {name: mapped.tensor(name) for name in tensors}
    for name, tensor in tensors.items():  # still valid after the block: the views keep the mapping alive
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert torch.equal(loaded[name].view(torch.uint8), tensor.view(torch.uint8)), name
    loaded["b"].fill_(42.0)  # copy-on-write: the file is untouched
    assert torch.equal(load_file(str(path))["b"], tensors["b"])


def test_unaligned_tensor_is_copied_and_correct(tmp_path):
    path = tmp_path / "odd.safetensors"
    values = torch.tensor([1.5, -2.25, 3.0])
    _write_raw(path, {"a": ("U8", [1], b"\x07"), "b": ("F32", [3], values.numpy().tobytes())})
    with MappedFile(read_header(path)) as mapped:
        assert torch.equal(mapped.tensor("b"), values)
        assert mapped.tensor("a").tolist() == [7]


def test_inconsistent_header_names_the_tensor(tmp_path):
    path = tmp_path / "bad.safetensors"
    _write_raw(path, {"weight": ("F32", [4, 4], b"\x00" * 32)})  # 16 floats need 64 bytes
    with pytest.raises(CheckpointFormatError, match=r"weight.*shape \[4, 4\] of F32 needs 64 bytes.*32"):
        read_header(path)


def test_file_changed_after_the_header_was_read(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(4)}, str(path))
    header = read_header(path)
    save_file({"a": torch.zeros(8)}, str(path))
    with pytest.raises(CheckpointFormatError, match="changed while it was being loaded"), MappedFile(header):
        pass


def test_release_keeps_other_tensors_readable(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {"a": torch.arange(5000, dtype=torch.float32), "b": torch.arange(3000, dtype=torch.float32)}
    save_file(tensors, str(path))
    with MappedFile(read_header(path)) as mapped:
        kept = mapped.tensor("b")
        copy = mapped.tensor("a").clone()
        mapped.release("a")
        mapped.release("b")  # dropping clean pages of a live view only means they are read again
        assert torch.equal(mapped.tensor("a"), copy)
    assert torch.equal(kept, tensors["b"]) and torch.equal(copy, tensors["a"])
