"""MappedFile: tensors equal to safetensors' own reader, each in memory of its own (never a view of the file), so a
file truncated, rewritten or replaced on disk can only fail a load that is running (with the file's name), never
reach a loaded tensor; unaligned data; bad headers; concurrent readers."""

from __future__ import annotations

import json
import os
import struct
import threading

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


def _two_tensors(path, size: int = 300_000) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    tensors = {"a": torch.randn(size, generator=generator), "b": torch.randn(size, generator=generator)}
    save_file(tensors, str(path))
    return tensors


def test_tensors_match_safetensors_and_own_their_memory(tmp_path):
    path = tmp_path / "w.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 5, generator=generator).to(torch.bfloat16),
               "b": torch.randn(7, generator=generator), "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
               "d": torch.randn(2, 2, generator=generator).to(torch.float8_e4m3fn), "e": torch.zeros(0, 4)}
    save_file(tensors, str(path))
    with MappedFile(read_header(path)) as reader:
        loaded = {name: reader.tensor(name) for name in tensors}
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert torch.equal(loaded[name].view(torch.uint8), tensor.view(torch.uint8)), name
    storages = {loaded[name].untyped_storage().data_ptr() for name in ("a", "b", "c", "d")}
    assert len(storages) == 4  # one allocation each, no shared mapping
    loaded["b"].fill_(42.0)  # the file is untouched
    assert torch.equal(load_file(str(path))["b"], tensors["b"])


def test_unaligned_tensor_is_correct(tmp_path):
    path = tmp_path / "odd.safetensors"
    values = torch.tensor([1.5, -2.25, 3.0])
    _write_raw(path, {"a": ("U8", [1], b"\x07"), "b": ("F32", [3], values.numpy().tobytes())})
    with MappedFile(read_header(path)) as reader:
        assert torch.equal(reader.tensor("b"), values)
        assert reader.tensor("a").tolist() == [7]


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
    with pytest.raises(CheckpointFormatError, match=r"w\.safetensors: changed on disk since its header was read"):
        with MappedFile(header):
            pass
    assert read_header(path).tensors["a"].shape == (8,)  # the new version is parsed anew


def test_truncated_during_a_load_fails_it_and_tensors_read_before_stay_valid(tmp_path):
    """A memory-mapped tensor whose file shrinks raises SIGBUS when touched; a tensor read before is intact."""
    path = tmp_path / "w.safetensors"
    tensors = _two_tensors(path)
    with MappedFile(read_header(path)) as reader:
        first = reader.tensor("a")
        os.truncate(path, path.stat().st_size // 2)
        with pytest.raises(CheckpointFormatError, match=r"w\.safetensors: (was truncated|changed on disk) while it "
                                                        r"was being loaded.*Queue the prompt again"):
            reader.tensor("b")
    assert torch.equal(first, tensors["a"])  # every page of it readable: no SIGBUS


def test_rewritten_in_place_during_a_load_fails_it(tmp_path):
    """Same size, new bytes, same inode (``cp new old``): the load must not mix the two versions."""
    path = tmp_path / "w.safetensors"
    _two_tensors(path)
    header = read_header(path)
    data = bytearray(path.read_bytes())
    with MappedFile(header) as reader:
        reader.tensor("a")
        data[-16:] = b"\x01" * 16
        with open(path, "r+b") as handle:  # same inode, same size
            handle.write(data)
        os.utime(path, ns=(header.stamp.mtime_ns + 10**9, header.stamp.mtime_ns + 10**9))  # coarse clocks
        with pytest.raises(CheckpointFormatError, match="changed on disk while it was being loaded.*rewritten"):
            reader.tensor("b")


def test_replaced_during_a_load_keeps_reading_the_version_it_opened(tmp_path):
    """An atomic replacement (download to a temporary, then rename) leaves the open file intact: the load completes
    with the old version, consistently; the next read of the header sees the new one."""
    path = tmp_path / "w.safetensors"
    old = _two_tensors(path)
    with MappedFile(read_header(path)) as reader:
        first = reader.tensor("a")
        replacement = tmp_path / "new.safetensors"
        save_file({"a": torch.ones(3)}, str(replacement))
        os.replace(replacement, path)
        second = reader.tensor("b")
    assert torch.equal(first, old["a"]) and torch.equal(second, old["b"])
    assert read_header(path).tensors["a"].shape == (3,)


def test_concurrent_readers_of_one_file(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {f"t{i}": torch.full((50_000,), float(i)) for i in range(16)}
    save_file(tensors, str(path))
    results: dict[str, torch.Tensor] = {}
    with MappedFile(read_header(path)) as reader:
        def read(names):
            for name in names:
                results[name] = reader.tensor(name)

        threads = [threading.Thread(target=read, args=(list(tensors)[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(torch.equal(results[name], value) for name, value in tensors.items())


def test_release_is_harmless(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {"a": torch.arange(5000, dtype=torch.float32), "b": torch.arange(3000, dtype=torch.float32)}
    save_file(tensors, str(path))
    with MappedFile(read_header(path)) as reader:
        kept = reader.tensor("b")
        reader.release("a")
        reader.release("b")
        assert torch.equal(reader.tensor("a"), tensors["a"])
    assert torch.equal(kept, tensors["b"])
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        reader.tensor("a")


_SURVIVOR = """
import os, shutil, sys, types
package = types.ModuleType("aiprod"); package.__path__ = [sys.argv[1]]; sys.modules["aiprod"] = package
import torch
from aiprod.loaders.component_loader import load_component
module = load_component(sys.argv[2], "transformer", dtype=torch.bfloat16).module  # the stored dtype: no cast
os.truncate(sys.argv[2], 0)  # a view of a file mapping would now raise SIGBUS when read
total = sum(float(t.float().sum()) for t in module.state_dict().values())
print("survived", total == total)
"""


def test_a_loaded_module_survives_its_file_being_truncated(tmp_path, tiny_set):
    """In a fresh process (a SIGBUS would kill it): load, truncate the file to nothing, read every weight."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(Path(tiny_set.ltx23).read_bytes())
    done = subprocess.run([sys.executable, "-c", _SURVIVOR, str(Path(__file__).resolve().parents[2]), str(path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip().endswith("survived True")
