"""Errors raised by the loaders. Each names the file and says what the user can do about it."""

from __future__ import annotations

__all__ = ["CheckpointFormatError"]


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
