"""Errors raised by the loaders. Each names the file and says what the user can do about it.

ComfyUI reports an exception's type as ``module.qualname`` (the error report, the server log). It loads this pack
from a path, so our modules are named after the file system (``/.../custom_nodes/aiprod.loaders.errors``) and a
type read ``/.../custom_nodes/aiprod.loaders.errors.WrongComponentError``. These classes (and their subclasses in
other modules) say ``AIPROD.WrongComponentError`` instead.
"""

from __future__ import annotations

__all__ = ["PUBLIC_MODULE", "CheckpointFormatError", "LoraMismatchError", "StateDictMismatchError",
           "WrongComponentError"]

PUBLIC_MODULE = "AIPROD"  # the module name our errors show (the pack's name in its node titles)


class CheckpointFormatError(ValueError):
    """A model file that cannot be used as given: not safetensors, truncated, or missing what we need."""

    __module__ = PUBLIC_MODULE

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.__module__ = PUBLIC_MODULE

    def __init__(self, path: str, problem: str, hint: str = "") -> None:
        self.path = path
        self.problem = problem
        self.hint = hint
        message = f"{path}: {problem}"
        if hint:
            message += f" {hint}"
        super().__init__(message)


class WrongComponentError(CheckpointFormatError):
    """The file does not hold the component asked for (e.g. a VAE file given to the transformer loader)."""


class StateDictMismatchError(CheckpointFormatError):
    """The file's tensors do not fit the module its config describes: missing / unexpected keys, wrong shapes."""

    def __init__(self, path: str, problem: str, hint: str = "", *, missing: tuple[str, ...] = (),
                 unexpected: tuple[str, ...] = (), mismatched: tuple[tuple[str, tuple, tuple], ...] = ()) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched  # (module key, expected shape, shape in the file)
        super().__init__(path, problem, hint)


class LoraMismatchError(CheckpointFormatError):
    """A LoRA that does not fit the model: another architecture, or keys that match nothing."""

    def __init__(self, path: str, problem: str, hint: str = "", *, unmatched: tuple[str, ...] = ()) -> None:
        self.unmatched = unmatched
        super().__init__(path, problem, hint)
