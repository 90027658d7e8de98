"""Saved tensors (encoded prompts, latents) in ComfyUI's output / input folders: choices, resolution, writing."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import folder_paths
import torch
from safetensors.torch import load_file, save_file

__all__ = ["filename_prefix_problem", "read_tensors", "saved_file_options", "saved_file_problem", "write_tensors"]

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


def filename_prefix_problem(prefix: str | None) -> str | None:
    """Why ``prefix`` cannot name a file under the output folder, or None (also None for a linked value).

    Refused before any generation runs: empty names (they would make hidden files), NUL bytes, absolute paths
    and anything that climbs out of the output folder with ``..``.
    """
    if prefix is None:
        return None
    rule = "a relative name under the output folder, e.g. 'aiprod/video'"
    if not prefix.strip() or "\0" in prefix:
        return f"filename_prefix={prefix!r}: must be {rule} (not empty, no NUL bytes)"
    normalised = os.path.normpath(prefix.replace("\\", "/"))
    if os.path.isabs(prefix) or prefix.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", prefix) \
            or normalised == ".." or normalised.startswith("../"):
        return f"filename_prefix={prefix!r}: must be {rule} (no absolute paths, no '..')"
    return None


def write_tensors(tensors: dict[str, torch.Tensor], prefix: str, kind: str) -> str:
    """Save ``tensors`` as ``<prefix>_NNNNN_.safetensors`` in the output folder; return the file as the
    ``output/<subfolder>/<name>`` choice the Load nodes list.

    Atomic: written to a hidden ``.partial`` file beside the target and renamed over it when complete, so a
    full disk never leaves a truncated file that Load Latent / Load Prompt would list.
    """
    problem = filename_prefix_problem(prefix)
    if problem:
        raise ValueError(problem)
    out_dir = folder_paths.get_output_directory()
    full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
    os.makedirs(full_dir, exist_ok=True)
    filename = f"{name}_{counter:05}_.safetensors"
    path = os.path.join(full_dir, filename)
    partial = os.path.join(full_dir, f".{filename}.partial")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, partial,
                  metadata={"aiprod_kind": kind})
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
    return "output/" + "/".join(p for p in (subfolder, filename) if p)


def read_tensors(path: str, kind: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        found = (handle.metadata() or {}).get("aiprod_kind")
    if found != kind:
        raise ValueError(f"{path}: holds {found!r}, expected an AIPROD {kind!r} file")
    return load_file(path)
