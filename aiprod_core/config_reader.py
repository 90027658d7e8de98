"""Typed, bounded reads of a checkpoint's ``config`` metadata: the one place every model config reads values from.

A checkpoint's config is untrusted JSON. `ConfigSection` wraps one (nested) section of it and hands out values
only after checking their type, their bounds and, for choices, that they are among the supported ones. Every
refusal is a ``ValueError(f"{key}={actual!r}, expected {expected!r}")`` naming the key the way the file spells it,
from the root of the config (``transformer.num_layers``, ``vocoder.bwe.n_fft``, ``vae.encoder_blocks[0]``).

The bounds are sanity bounds, generous multiples of the published models' values: they keep a corrupt or hostile
value (``num_layers = 10**9``) from reaching a constructor. The loader separately checks every value that the
tensors determine (block counts, widths, FFT sizes) against the file's header before anything is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["REQUIRED", "ConfigSection", "check_int", "check_ints", "reject"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # default of a key that must be present
MAX_LIST_LENGTH = 64  # longest list a config may hold (block lists, rates, kernel sizes)


def reject(key: str, actual: object, expected: object) -> ValueError:
    """The house error for an unsupported config value."""
    return ValueError(f"{key}={actual!r}, expected {expected!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_text(low: int, high: int | None) -> str:
    if high is None:
        return "a positive int" if low == 1 else "a non-negative int" if low == 0 else f"an int >= {low}"
    return f"an int in [{low}, {high}]"


def check_int(key: str, value: object, low: int = 1, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``, else `reject`."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        raise reject(key, value, _int_text(low, high))
    return value


class ConfigSection:
    """One dict of a checkpoint's config and its path from the root (``"vocoder.bwe"``; ``""`` for the root).

    Getters take the key, a default (`REQUIRED`: the key must be present; a default is returned unchecked) and
    bounds; they raise `reject` errors naming ``path.key``. A section that is absent reads as empty.
    """

    def __init__(self, values: object, path: str = "") -> None:
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise reject(path or "config", values, "a dict")
        self._values = values
        self.path = path

    def key(self, name: str) -> str:
        """The full key of ``name`` in error messages."""
        return f"{self.path}.{name}" if self.path else name

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def keys(self) -> set[str]:
        return set(self._values)

    def get(self, name: str, default: Any = None) -> Any:
        """The raw value (unchecked): for values compared against an exact expectation by the caller."""
        return self._values.get(name, default)

    def _value(self, name: str, default: Any, expected: str) -> Any:
        if name in self._values:
            return self._values[name]
        if default is REQUIRED:
            raise reject(self.key(name), None, expected)
        return default

    def section(self, name: str) -> ConfigSection:
        """The nested dict ``name`` (absent or null: empty)."""
        return ConfigSection(self._values.get(name), self.key(name))

    def pinned(self, name: str, expected: object, absent: object = None) -> None:
        """The value (``absent`` when absent) must equal ``expected``: the only value the model implements."""
        actual = self._values.get(name, absent)
        if actual != expected or isinstance(actual, bool) != isinstance(expected, bool):
            raise reject(self.key(name), actual, expected)

    def integer(self, name: str, default: Any = REQUIRED, *, low: int = 1, high: int | None = None) -> int:
        """An int in ``[low, high]`` (bools refused)."""
        value = self._value(name, default, _int_text(low, high))
        return value if name not in self._values else check_int(self.key(name), value, low, high)

    def number(self, name: str, default: Any = REQUIRED, *, low: float | None = None, high: float | None = None,
               above: float | None = None) -> float:
        """A finite int or float, ``>= low`` / ``> above`` and ``<= high`` where given; returned as float."""
        text = "a finite number" + "".join(
            f" {op} {bound}" for op, bound in ((">=", low), (">", above), ("<=", high)) if bound is not None)
        value = self._value(name, default, text)
        if name not in self._values:
            return value
        ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
        ok = ok and (low is None or value >= low) and (above is None or value > above)
        if not ok or (high is not None and value > high):
            raise reject(self.key(name), value, text)
        return float(value)

    def flag(self, name: str, default: Any = REQUIRED) -> bool:
        """A JSON boolean."""
        value = self._value(name, default, "a bool")
        if not isinstance(value, bool):
            raise reject(self.key(name), value, "a bool")
        return value

    def choice(self, name: str, default: Any, allowed: tuple[Any, ...]) -> Any:
        """One of ``allowed`` (``1`` is not ``True``)."""
        value = self._value(name, default, f"one of {allowed!r}")
        if not any(value == option and isinstance(value, bool) == isinstance(option, bool) for option in allowed):
            raise reject(self.key(name), value, allowed)
        return value

    def sequence(self, name: str, default: Any = REQUIRED, *, min_length: int = 0,
                 max_length: int = MAX_LIST_LENGTH) -> tuple[Any, ...]:
        """A JSON list of ``min_length``..``max_length`` items (items unchecked)."""
        text = f"a list of {min_length} to {max_length} items"
        value = self._value(name, default, text)
        if not isinstance(value, list | tuple) or not min_length <= len(value) <= max_length:
            raise reject(self.key(name), value, text)
        return tuple(value)

    def integers(self, name: str, default: Any = REQUIRED, *, low: int = 1, high: int | None = None,
                 length: int | None = None, min_length: int = 1, max_length: int = MAX_LIST_LENGTH
                 ) -> tuple[int, ...]:
        """A list of ``min_length``..``max_length`` (or exactly ``length``) ints in ``[low, high]``."""
        if name not in self._values and default is not REQUIRED:
            return default
        return check_ints(self.key(name), self._values.get(name), low=low, high=high, length=length,
                          min_length=min_length, max_length=max_length)


def check_ints(key: str, value: object, *, low: int = 1, high: int | None = None, length: int | None = None,
               min_length: int = 1, max_length: int = MAX_LIST_LENGTH) -> tuple[int, ...]:
    """``value`` as a tuple if it is a list of ``min_length``..``max_length`` (or ``length``) ints in
    ``[low, high]``, else `reject`."""
    count = f"{length}" if length is not None else f"{min_length} to {max_length}"
    text = f"a list of {count} ints" + (f" in [{low}, {high}]" if high is not None else f" >= {low}")
    ok = isinstance(value, list | tuple) and (
        len(value) == length if length is not None else min_length <= len(value) <= max_length)
    if not ok or not all(_is_int(v) and v >= low and (high is None or v <= high) for v in value):
        raise reject(key, value, text)
    return tuple(value)
