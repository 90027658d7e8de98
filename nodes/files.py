"""Saved tensors (encoded prompts, latents) in ComfyUI's output / input folders: choices, resolution, writing."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
import torch
from safetensors.torch import load_file, save_file

__all__ = ["read_tensors", "saved_file_options", "saved_file_problem", "write_tensors"]

ROOTS = ("output", "input")


def _root(kind: str) -> str:
    return folder_paths.get_output_directory() if kind == "output" else folder_paths.get_input_directory()


def saved_file_options() -> list[str]:
    """Every ``.safetensors`` under the output and input folders, as ``output/sub/name.safetensors``."""
    options: list[str] = []
    for kind in ROOTS:
        root = Path(_root(kind))
        if root.is_dir():
            options.extend(f"{kind}/{p.relative_to(root).as_posix()}" for p in sorted(root.rglob("*.safetensors")))
    return options


def saved_file_problem(parameter: str, choice: str) -> str | None:
    if choice not in saved_file_options():
        return (f"{parameter}={choice!r}: no such .safetensors file in ComfyUI's output or input folder "
                "(expected 'output/<path>' or 'input/<path>' of a file a save node wrote).")
    return None


def resolve_saved_file(parameter: str, choice: str) -> str:
    problem = saved_file_problem(parameter, choice)
    if problem:
        raise ValueError(problem)
    kind, _, rest = choice.partition("/")
    return os.path.join(_root(kind), rest)


def write_tensors(tensors: dict[str, torch.Tensor], prefix: str, kind: str) -> tuple[str, str, str]:
    """Save ``tensors`` as ``<prefix>_NNNNN_.safetensors`` in the output folder; (path, file name, subfolder)."""
    out_dir = folder_paths.get_output_directory()
    full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
    os.makedirs(full_dir, exist_ok=True)
    filename = f"{name}_{counter:05}_.safetensors"
    path = os.path.join(full_dir, filename)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path, metadata={"aiprod_kind": kind})
    return path, filename, subfolder


def read_tensors(path: str, kind: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        found = (handle.metadata() or {}).get("aiprod_kind")
    if found != kind:
        raise ValueError(f"{path}: holds {found!r}, expected an AIPROD {kind!r} file")
    return load_file(path)
