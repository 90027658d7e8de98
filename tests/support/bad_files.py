"""Defective model files of the kinds users actually end up with, for error-path tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["BAD_FILE_NAMES", "write_bad_files", "write_component_file"]

GIT_LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 38183895872\n"
)
BAD_FILE_NAMES = {
    "not_safetensors": "bad_not_safetensors.safetensors",
    "truncated": "bad_truncated.safetensors",
    "no_metadata": "bad_no_metadata.safetensors",
    "lfs_pointer": "bad_lfs_pointer.safetensors",
    "empty": "bad_empty.safetensors",
}


def write_component_file(path: Path, keys: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None,
                         dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """A small safetensors file with the given key names and shapes (random values)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(shape, generator=generator).to(dtype) for k, shape in keys.items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_bad_files(directory: Path) -> dict[str, Path]:
    """Write one file per defect into ``directory``; return {defect: path}."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {kind: directory / name for kind, name in BAD_FILE_NAMES.items()}
    paths["not_safetensors"].write_bytes(b"<html><body>404: this is a web page saved as a model</body></html>")
    paths["lfs_pointer"].write_text(GIT_LFS_POINTER)
    paths["empty"].write_bytes(b"")
    transformer_keys = {
        "model.diffusion_model.patchify_proj.weight": (64, 128),
        "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": (64, 64),
    }
    write_component_file(paths["no_metadata"], transformer_keys)
    full = write_component_file(directory / "tmp_full.safetensors", transformer_keys,
                                metadata={"config": '{"transformer": {}}', "model_version": "2.3.0"})
    data = full.read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    full.unlink()
    return paths
