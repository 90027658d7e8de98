"""Model-file choices for combo inputs, resolved only from ComfyUI's own folder lists.

A choice is written ``<folder>/<file name>`` (e.g. ``checkpoints/ltx-2.safetensors``) when one input
spans several model folders. Only names that ComfyUI lists are accepted, so ``../`` or absolute paths
can never reach the file system.
"""

from __future__ import annotations

import folder_paths

__all__ = ["model_choice_problem", "model_file_options", "resolve_model_file"]


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
