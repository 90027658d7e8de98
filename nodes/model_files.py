"""Model-file choices for combo inputs, resolved only from ComfyUI's own folder lists.

A choice is written ``<folder>/<file name>`` (e.g. ``checkpoints/ltx-2.safetensors``) when one input
spans several model folders. Only names that ComfyUI lists are accepted, so ``../`` or absolute paths
can never reach the file system.
"""

from __future__ import annotations

import folder_paths

__all__ = [
    "CONNECTOR_FOLDERS",
    "NO_CONNECTORS",
    "PROJECTION_FOLDERS",
    "connectors_options",
    "ensure_upscale_folder",
    "file_fingerprint",
    "model_choice_problem",
    "model_file_options",
    "resolve_model_file",
    "resolve_text_encoder",
    "text_encoder_options",
    "text_encoder_problem",
    "text_projection_options",
]


def model_file_options(folders: tuple[str, ...]) -> list[str]:
    """Every file ComfyUI lists in ``folders``, as ``folder/name`` choices."""
    options: list[str] = []
    for folder in folders:
        options.extend(f"{folder}/{name}" for name in folder_paths.get_filename_list(folder))
    return options


def model_choice_problem(parameter: str, choice: str, folders: tuple[str, ...]) -> str | None:
    """Why ``choice`` is not an acceptable file for ``parameter``, or ``None`` if it is listed.

    Nodes call this from ``validate_inputs`` because ComfyUI 0.3.75 does not check V3 combo values
    against their options, so an unlisted name would otherwise reach ``execute``.
    """
    folder, _, name = choice.partition("/")
    if folder not in folders or not name:
        return (f"{parameter}={choice!r} is not a model choice; expected '<folder>/<file>' with folder one of "
                f"{', '.join(folders)}.")
    if name not in folder_paths.get_filename_list(folder):
        return (f"{parameter}={choice!r}: no file {name!r} in ComfyUI's {folder!r} model folders. "
                "Put the file there and press 'Refresh' (only listed names are accepted).")
    return None


def resolve_model_file(parameter: str, choice: str, folders: tuple[str, ...]) -> str:
    """Absolute path of ``choice``; ``ValueError`` naming the parameter if it is not a listed file."""
    problem = model_choice_problem(parameter, choice, folders)
    if problem:
        raise ValueError(problem)
    folder, _, name = choice.partition("/")
    return folder_paths.get_full_path_or_raise(folder, name)


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


def text_encoder_options() -> list[str]:
    """Gemma text encoders in ``text_encoders``: a folder (``text_encoders/<folder>``, any file inside it listed by
    ComfyUI) or a single ``.safetensors`` file at the top level."""
    options: list[str] = []
    for name in folder_paths.get_filename_list("text_encoders"):
        head, sep, _ = name.replace("\\", "/").partition("/")
        choice = f"text_encoders/{head}" if sep else f"text_encoders/{name}"
        if (sep or name.endswith(".safetensors")) and choice not in options:
            options.append(choice)
    return options


def text_projection_options() -> list[str]:
    """Files that may hold the text projection (and connectors): LTX checkpoints, the single files at the top of
    ``text_encoders`` (Kijai's embeddings_connector / text_projection files) and transformer files."""
    options = model_file_options(("checkpoints",))
    options += [f"text_encoders/{name}" for name in folder_paths.get_filename_list("text_encoders")
                if "/" not in name.replace("\\", "/") and name.endswith(".safetensors")]
    return options + model_file_options(("diffusion_models",))


def connectors_options() -> list[str]:
    """``none`` (the projection's file holds the connectors) or a file that holds them: transformer files first
    (LTX-2.3 runs its connectors inside the transformer), then checkpoints and text_encoders files."""
    return [NO_CONNECTORS, *model_file_options(CONNECTOR_FOLDERS)]


def text_encoder_problem(parameter: str, choice: str) -> str | None:
    """Why ``choice`` is not a listed text encoder folder or file, or ``None``."""
    if choice not in text_encoder_options():
        return (f"{parameter}={choice!r}: no such Gemma text encoder in ComfyUI's 'text_encoders' model folders "
                "(expected a folder holding the Gemma-3 files and its tokenizer, or a single .safetensors file). "
                "Put it there and press 'Refresh'.")
    return None


def resolve_text_encoder(parameter: str, choice: str) -> str:
    """Absolute path of a listed text encoder folder or file; ``ValueError`` naming the parameter otherwise."""
    import os

    problem = text_encoder_problem(parameter, choice)
    if problem:
        raise ValueError(problem)
    name = choice.partition("/")[2]
    for root in folder_paths.get_folder_paths("text_encoders"):
        candidate = os.path.join(root, name)
        if os.path.exists(candidate):
            return candidate
    raise ValueError(problem or f"{parameter}={choice!r}: not found on disk any more; press 'Refresh'.")


def file_fingerprint(path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or of a folder's files together; None when it cannot be read. Loader nodes
    return it from ``fingerprint_inputs`` so ComfyUI re-runs them when a model file is replaced under its name."""
    import os

    try:
        if os.path.isdir(path):
            stats = [os.stat(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files]
            return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
