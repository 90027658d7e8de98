"""ComfyUI's model folder table pointed at test directories for one test, restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["model_folders"]


@contextlib.contextmanager
def model_folders(folders: dict[str, Path]) -> Iterator[object]:
    """``{folder name: directory}`` as ComfyUI's model folders (``folder_paths``; ComfyUI must be importable, e.g.
    through the ``comfy_cpu`` fixture); yields ``folder_paths``."""
    import folder_paths

    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    for name, path in folders.items():
        folder_paths.folder_names_and_paths[name] = ([str(path)], set(folder_paths.supported_pt_extensions))
    folder_paths.filename_list_cache.clear()
    try:
        yield folder_paths
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()
