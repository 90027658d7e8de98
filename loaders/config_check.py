"""A component's ``config`` metadata checked against the tensors of its file, before any module is built.

The config decides how many blocks a constructor builds and how large the buffers it computes are; a hostile or
corrupt value (``transformer.num_layers = 10**9``, ``vocoder.bwe.n_fft = 65536``) would grow memory without bound
before a single tensor is read. So the loader reads the config through the core's typed config classes (sanity
bounds on every value) and then compares each value the tensors determine with what the header says: block
counts from the numbered keys, widths and channel counts from the shapes. The facts are named data per component;
each is a relation our module's own state dict satisfies (the tests check that on the built modules).

Errors are `CheckpointFormatError`s naming the file, the config key, its value and what the tensors say.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config_facts import FACTS, Count, Fact, gemma4_facts, gemma_facts
from .errors import CheckpointFormatError
from .safetensors_header import SafetensorsHeader, TensorInfo, parse_json

__all__ = ["check_config", "check_gemma4_config", "check_gemma_files", "config_metadata"]

# Shapes of these dtypes are the logical shapes (packed formats such as 4-bit weights in U8 are not).
_LOGICAL_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
CONFIG_HINT = ("Its `config` metadata was edited or copied from another model: use the official release file, or "
               "one whose metadata matches its weights.")


def config_metadata(header: SafetensorsHeader) -> dict[str, Any] | None:
    """The file's ``config`` metadata as a dict (None when absent); a `CheckpointFormatError` unless it is a JSON
    object (not a number, a list, or JSON nested too deep)."""
    raw = header.metadata.get("config")
    if raw is None:
        return None
    config = parse_json(header.path, raw, "a `config` metadata entry")
    if not isinstance(config, dict):
        raise CheckpointFormatError(header.path, f"has a `config` metadata entry that is a {type(config).__name__}, "
                                    "not a JSON object.", CONFIG_HINT)
    return config


def _indices(keys: Iterable[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m[1]) for k in keys if (m := pattern.match(k))})


def _file_prefix(keys: Mapping[str, str], module_prefix: str) -> str:
    for module_key, file_key in keys.items():
        if module_key.startswith(module_prefix):
            return file_key[: len(file_key) - len(module_key)] + module_prefix
    return module_prefix


def _mismatch(fact: Fact, keys: Mapping[str, str], tensors: Mapping[str, TensorInfo]) -> str | None:
    """What the tensors say when they contradict ``fact`` (None when they agree or do not tell)."""
    if isinstance(fact, Count):
        found = _indices(keys, fact.prefix)
        expected = found[-1] + 1 if found else 0
        if expected == fact.value:
            return None
        where = _file_prefix(keys, fact.prefix)
        evidence = f"the file has {where}0 to {where}{expected - 1}" if found else f"the file has no {where}* tensors"
        return f"{fact.key}={fact.value!r}, expected {expected!r} ({evidence})"
    file_key = keys.get(fact.tensor)
    info = tensors.get(file_key) if file_key is not None else None
    if info is None or info.dtype not in _LOGICAL_DTYPES:
        return None  # a missing tensor is reported by the key check; packed tensors have other shapes
    if len(info.shape) > fact.axis and info.shape[fact.axis] == fact.value:
        return None
    expected = info.shape[fact.axis] if len(info.shape) > fact.axis else None
    return f"{fact.key}={fact.value!r}, expected {expected!r} ({file_key} has shape {list(info.shape)})"


def _raise_first(path: str, facts: Iterable[Fact], keys: Mapping[str, str], tensors: Mapping[str, TensorInfo],
                 what: str) -> None:
    problems = [p for p in (_mismatch(f, keys, tensors) for f in facts) if p is not None]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointFormatError(path, f"has {what} that does not match its tensors: {problems[0]}{more}.",
                                    CONFIG_HINT)


def _read_config(path: str, label: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ValueError as exc:
        raise CheckpointFormatError(path, f"has a `config` the {label} cannot be built from: {exc}.",
                                    CONFIG_HINT) from exc


def _unpadded(header: SafetensorsHeader, keys: Mapping[str, str]) -> dict[str, TensorInfo]:
    """``header.tensors`` without the quantized weights whose format pads rows and columns (MXFP8, NVFP4): their
    stored extents are rounded up, so they do not state a config value exactly (the load checks them)."""
    from .quant.layers import scan_quantized_layers

    try:
        layers = scan_quantized_layers(header, keys.values()).layers.values()
    except CheckpointFormatError:
        return dict(header.tensors)  # the load names the refused format
    padded = {q.weight_key for q in layers if q.format.pad > 1}
    return {k: v for k, v in header.tensors.items() if k not in padded}


def check_config(header: SafetensorsHeader, component: str, label: str, config: dict[str, Any],
                 keys: Mapping[str, str]) -> None:
    """Raise `CheckpointFormatError` unless ``config`` is valid for ``component`` (its ``label`` in messages) and
    agrees with the tensors ``keys`` (module key -> file key) select from ``header``. Header-only: nothing is
    built."""
    facts = _read_config(header.path, label, lambda: FACTS[component](config, keys, header.tensors))
    _raise_first(header.path, facts, keys, _unpadded(header, keys), "a `config`")


def check_gemma_files(files: Any) -> None:
    """Raise `CheckpointFormatError` naming the config unless a Gemma-3 text encoder's ``config.json`` (a
    `GemmaFiles`) is within bounds and agrees with its weights' headers (layer count, vocabulary, widths)."""
    from .safetensors_header import read_header
    from .text_encoder_files import GEMMA_TEXT_MAPS

    tensors = {k: info for path in files.weights for k, info in read_header(path).tensors.items()}
    layout = next((m for m in GEMMA_TEXT_MAPS if m.is_present(tensors)), None)
    if layout is None:
        return  # the loader names the missing backbone
    facts = _read_config(files.config_source, "Gemma-3 text encoder", lambda: gemma_facts(files.config))
    _raise_first(files.config_source, facts, layout.select(tensors), tensors, "a Gemma-3 config")


def check_gemma4_config(source: str, config: Mapping[str, Any], keys: Mapping[str, str],
                        tensors: Mapping[str, TensorInfo]) -> None:
    """Raise `CheckpointFormatError` naming ``source`` (where the config came from) unless a Gemma-4 config is
    within bounds and its layer count and embedding table agree with the weights (before the meta build)."""
    facts = _read_config(source, "Gemma-4 language model", lambda: gemma4_facts(config))
    _raise_first(source, facts, keys, tensors, "a Gemma-4 config")
