"""Errors raised by the loaders. Each names the file and says what the user can do about it."""

from __future__ import annotations

__all__ = ["CheckpointFormatError", "LoraMismatchError", "StateDictMismatchError", "WrongComponentError"]


class CheckpointFormatError(ValueError):
    """A model file that cannot be used as given: not safetensors, truncated, or missing what we need."""

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
