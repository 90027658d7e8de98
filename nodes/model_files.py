"""Model-file choices for combo inputs, resolved only from ComfyUI's own folder lists.

A choice starts with the file name, so the frontend's widget shows it even when it truncates: for an input that
reads one model folder it is ComfyUI's own name (``ltx-2.3-22b-dev.safetensors``, ``sub/x.safetensors``), for
one that spans several folders the folder follows in brackets (``ltx-2.3-22b-dev.safetensors (checkpoints)``).
Values saved by older versions (``checkpoints/ltx-2.3-22b-dev.safetensors``) still resolve. Only names ComfyUI
lists are accepted, so ``../`` or absolute paths never reach the file system. ComfyUI registers no ``.gguf``
extension for ``diffusion_models`` (models/unet and models/diffusion_models); our lists add the ``.gguf`` files
found there without changing ComfyUI's own folder registry, so other packs' lists stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import folder_paths

from ..loaders.errors import CheckpointFormatError

__all__ = [
    "CONNECTOR_FOLDERS",
    "NO_CONNECTORS",
    "PROJECTION_FOLDERS",
    "connectors_options",
    "ensure_upscale_folder",
    "file_fingerprint",
    "gguf_file_names",
    "model_choice_problem",
    "model_file_options",
    "resolve_model_file",
    "resolve_text_encoder",
    "text_encoder_options",
    "text_encoder_problem",
    "text_projection_options",
    "unchanged_files",
]


GGUF_FOLDERS = ("diffusion_models",)
GGUF_EXTENSION = ".gguf"


def gguf_file_names(folder: str) -> list[str]:
    """The ``.gguf`` files under ComfyUI's paths of ``folder`` (only for `GGUF_FOLDERS`), relative names."""
    if folder not in GGUF_FOLDERS or folder not in folder_paths.folder_names_and_paths:
        return []
    names: set[str] = set()
    for root in folder_paths.get_folder_paths(folder):
        files, _ = folder_paths.recursive_search(root, excluded_dir_names=[".git"])
        names.update(f for f in files if f.lower().endswith(GGUF_EXTENSION))
    return sorted(names)


def _listed(folder: str) -> list[str]:
    names = list(folder_paths.get_filename_list(folder))
    return names + [n for n in gguf_file_names(folder) if n not in names]


def _listing(folders: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """choice -> (folder, file name) of every file ComfyUI lists in ``folders`` (plus their ``.gguf`` files)."""
    choices: dict[str, tuple[str, str]] = {}
    for folder in folders:
        for name in _listed(folder):
            choices[name if len(folders) == 1 else f"{name} ({folder})"] = (folder, name)
    return choices


def model_file_options(folders: tuple[str, ...]) -> list[str]:
    """Every file ComfyUI lists in ``folders``, as combo choices (file name first)."""
    return list(_listing(folders))


def _lookup(choice: object, folders: tuple[str, ...]) -> tuple[str, str] | None:
    if not isinstance(choice, str):
        return None
    listing = _listing(folders)
    if choice in listing:
        return listing[choice]
    folder, _, name = choice.partition("/")  # the ``folder/name`` form older versions saved
    if folder in folders and (folder, name) in listing.values():
        return folder, name
    # a bare file name saved while the input read one folder, now spanning several: the one listed file of it
    named = [entry for entry in listing.values() if entry[1] == choice]
    return named[0] if len(named) == 1 else None


def model_choice_problem(parameter: str, choice: object, folders: tuple[str, ...]) -> str | None:
    """Why ``choice`` is not a listed file for ``parameter``, or ``None``."""
    if _lookup(choice, folders) is not None:
        return None
    return (f"{parameter}={choice!r}: no such file in ComfyUI's {' / '.join(folders)} model folders. Put the file "
            "there and press 'Refresh' (only listed names are accepted).")


def resolve_model_file(parameter: str, choice: str, folders: tuple[str, ...]) -> str:
    """Absolute path of ``choice``; ``ValueError`` naming the parameter if it is not a listed file."""
    found = _lookup(choice, folders)
    if found is None:
        raise ValueError(model_choice_problem(parameter, choice, folders))
    return folder_paths.get_full_path_or_raise(*found)


UPSCALE_FOLDER = "latent_upscale_models"
TEXT_ENCODER_FOLDERS = ("text_encoders",)
# The text encoder loader's projection (`checkpoint`) and `connectors` files, and the connectors' "in the same file".
PROJECTION_FOLDERS = ("checkpoints", "text_encoders", "diffusion_models")
CONNECTOR_FOLDERS = ("diffusion_models", "checkpoints", "text_encoders")
NO_CONNECTORS = "none"


def ensure_upscale_folder() -> None:
    """ComfyUI 0.3.64 has no ``latent_upscale_models`` key: register ``models/latent_upscale_models`` for it."""
    import os

    if UPSCALE_FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, UPSCALE_FOLDER)
        folder_paths.folder_names_and_paths[UPSCALE_FOLDER] = ([path], set(folder_paths.supported_pt_extensions))


def _text_encoders() -> dict[str, str]:
    """choice -> name under ``text_encoders``: a folder (any file inside it listed by ComfyUI) or a single
    ``.safetensors`` file at the top level."""
    choices: dict[str, str] = {}
    for name in folder_paths.get_filename_list("text_encoders"):
        head, sep, _ = name.replace("\\", "/").partition("/")
        if sep or name.endswith(".safetensors"):
            choices.setdefault(head if sep else name, head if sep else name)
    return choices


def text_encoder_options() -> list[str]:
    """Gemma text encoders in ``text_encoders``: folders (``gemma-3-12b-it-qat-q4_0-unquantized``) and single
    ``.safetensors`` files."""
    return list(_text_encoders())


def _projection_listing() -> dict[str, tuple[str, str]]:
    """The `_listing` of `PROJECTION_FOLDERS` without files inside ``text_encoders`` sub-folders (Gemma shards)."""
    return {choice: (folder, name) for choice, (folder, name) in _listing(PROJECTION_FOLDERS).items()
            if folder != "text_encoders" or ("/" not in name.replace("\\", "/") and name.endswith(".safetensors"))}


def text_projection_options() -> list[str]:
    """Files that may hold the text projection (and connectors): LTX checkpoints, the single files at the top of
    ``text_encoders`` (Kijai's embeddings_connector / text_projection files) and transformer files."""
    return list(_projection_listing())


def connectors_options() -> list[str]:
    """``none`` (the projection's file holds the connectors) or a file that holds them: transformer files first
    (LTX-2.3 runs its connectors inside the transformer), then checkpoints and text_encoders files."""
    return [NO_CONNECTORS, *model_file_options(CONNECTOR_FOLDERS)]


def text_encoder_problem(parameter: str, choice: object) -> str | None:
    """Why ``choice`` is not a listed text encoder folder or file, or ``None``."""
    if isinstance(choice, str) and choice.removeprefix("text_encoders/") in _text_encoders():
        return None
    return (f"{parameter}={choice!r}: no such Gemma text encoder in ComfyUI's 'text_encoders' model folders "
            "(expected a folder holding the Gemma-3 files and its tokenizer, or a single .safetensors file). "
            "Put it there and press 'Refresh'.")


def resolve_text_encoder(parameter: str, choice: str) -> str:
    """Absolute path of a listed text encoder folder or file; ``ValueError`` naming the parameter otherwise."""
    import os

    problem = text_encoder_problem(parameter, choice)
    if problem:
        raise ValueError(problem)
    name = choice.removeprefix("text_encoders/")  # older versions saved the folder prefix
    for root in folder_paths.get_folder_paths("text_encoders"):
        candidate = os.path.join(root, name)
        if os.path.exists(candidate):
            return candidate
    raise ValueError(f"{parameter}={choice!r}: not found on disk any more; press 'Refresh'.")


def file_fingerprint(path: str) -> tuple[int, ...] | None:
    """(size, mtime in ns, inode) of a file, or (size, latest mtime) of a folder's files together; None when it
    cannot be read. Loader nodes return it from ``fingerprint_inputs`` so ComfyUI re-runs them when a model file is
    replaced under its name (the inode tells a replacement that kept the size and the modification time)."""
    import os

    try:
        if os.path.isdir(path):
            stats = [os.stat(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files]
            return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


Loaded = TypeVar("Loaded")


def unchanged_files(paths: tuple[str, ...], load: Callable[[], Loaded]) -> Callable[[], Loaded]:
    """``load``, first checking that ``paths`` are still the versions this loader node saw. Models load lazily,
    when a stage first needs them: a file replaced or rewritten while a prompt runs then fails the stage that would
    load it (naming the file) instead of mixing two versions of a model in one prompt; the next prompt re-runs the
    loader (its fingerprint changed) and loads the new file."""
    seen = {path: file_fingerprint(path) for path in paths}

    def checked() -> Loaded:
        for path, before in seen.items():
            if file_fingerprint(path) != before:
                raise CheckpointFormatError(path, "changed on disk after its loader node ran, while this prompt was "
                                            "running.", "Queue the prompt again: the loader then reads the new file.")
        return load()

    return checked
