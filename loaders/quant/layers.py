"""Find the quantized layers of a file and their format, from the header (and the tiny ``comfy_quant`` tensors).

Per layer (``<layer>.weight``), the first rule that applies names the format:

1. ``<layer>.comfy_quant``: a uint8 tensor holding JSON ``{"format": ..., "convrot": ..., ...}`` (ComfyUI);
2. the header metadata ``_quantization_metadata``: JSON ``{"layers": {<layer>: {"format": ...}}}`` (ComfyUI's
   older carrier of the same map);
3. a ``scaled_fp8`` marker tensor and ``<layer>.scale_weight`` (ComfyUI's legacy fp8 files);
4. Lightricks' layouts, by dtypes alone: U8 weight + F8_E4M3 ``weight_scale`` + F32 ``weight_scale_2`` is NVFP4
   (exactly one of the two scales is an error, as in Lightricks' ``_discover_nvfp4_layers``); an F8 weight is
   fp8, times a scalar ``weight_scale`` when present;
5. a GGUF tensor of a quantized block type (`loaders.gguf_file`).

A layer whose format we recognise but do not de-quantise, or an integer weight with no marker, is refused with
the file, the layer, the format and what to use instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointFormatError
from ..safetensors_header import SafetensorsHeader, TensorInfo
from .formats import (
    COMFY_FORMATS,
    LEGACY_SCALED_FP8,
    LIGHTRICKS_FP8,
    LIGHTRICKS_NVFP4,
    REFUSED_COMFY_FORMATS,
    QuantFormat,
)

__all__ = ["LayerQuant", "QuantScan", "check_layer", "logical_tensors", "scan_quantized_layers"]

COMFY_QUANT_SUFFIX = ".comfy_quant"
METADATA_KEY = "_quantization_metadata"
MARKER_NAME = "scaled_fp8"
MAX_COMFY_QUANT_BYTES = 4096  # the JSON of one layer; anything larger is not a ComfyUI marker
FP8_NAMES = ("F8_E4M3", "F8_E5M2")
INTEGER_NAMES = ("I8", "U8")
USE_INSTEAD = ("Use the bf16 / fp8 release of this model, or a ComfyUI-quantized file in float8_e4m3fn, nvfp4, "
               "mxfp8 or int8_tensorwise (optionally ConvRot), or a GGUF file (Q4_0 ... Q8_0, Q2_K ... Q6_K).")


@dataclass(frozen=True)
class LayerQuant:
    """One quantized layer: its file key prefix, format, where the format was read, and its tensors.

    ``tensors`` maps ``"weight"`` and each scale suffix present to the file key; ``extra_keys`` are file keys
    that describe the layer but are never loaded (``comfy_quant``)."""

    layer: str
    format: QuantFormat
    source: str
    tensors: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    extra_keys: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None  # logical shape when the file states it (GGUF)

    @property
    def weight_key(self) -> str:
        return self.tensors["weight"]

    @property
    def scale_keys(self) -> dict[str, str]:
        return {suffix: key for suffix, key in self.tensors.items() if suffix != "weight"}


@dataclass(frozen=True)
class QuantScan:
    """The quantized layers of a file (by file layer prefix) and the file keys that only mark formats."""

    layers: dict[str, LayerQuant]
    markers: tuple[str, ...] = ()

    def formats(self) -> dict[str, int]:
        """Format label -> layer count (for reports)."""
        counts: dict[str, int] = {}
        for quant in self.layers.values():
            counts[quant.format.name] = counts.get(quant.format.name, 0) + 1
        return counts


def _refuse(path: str, problem: str) -> CheckpointFormatError:
    return CheckpointFormatError(path, problem, USE_INSTEAD)


def _comfy_quant_configs(header: SafetensorsHeader, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    from ..mapped_file import MappedFile

    wanted = [k for k in keys if k.endswith(COMFY_QUANT_SUFFIX)]
    configs: dict[str, dict[str, Any]] = {}
    if not wanted:
        return configs
    with MappedFile(header) as mapped:
        for key in wanted:
            info = header.tensors[key]
            if info.dtype != "U8" or len(info.shape) != 1 or info.nbytes > MAX_COMFY_QUANT_BYTES:
                raise _refuse(header.path, f"has a `{key}` tensor of {info.dtype} {list(info.shape)}, expected "
                              "a short U8 tensor holding the layer's quantization JSON.")
            raw = bytes(mapped.tensor(key).tolist())
            configs[key.removesuffix(COMFY_QUANT_SUFFIX)] = _parse_config(header.path, key, raw)
    return configs


def _parse_config(path: str, where: str, raw: bytes | str) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(path, f"has a `{where}` entry that is not valid JSON.") from exc
    if not isinstance(config, dict) or not isinstance(config.get("format"), str):
        raise _refuse(path, f"has a `{where}` entry without a \"format\" name: {str(config)[:120]!r}.")
    return config


def _metadata_configs(header: SafetensorsHeader) -> dict[str, dict[str, Any]]:
    raw = header.metadata.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        table = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _refuse(header.path, f"has `{METADATA_KEY}` metadata that is not valid JSON.") from exc
    layers = table.get("layers") if isinstance(table, dict) else None
    if not isinstance(layers, dict):
        raise _refuse(header.path, f"has `{METADATA_KEY}` metadata without a \"layers\" map.")
    return {str(name): _parse_config(header.path, f"{METADATA_KEY}.layers.{name}", json.dumps(conf))
            for name, conf in layers.items()}


def _comfy_format(path: str, layer: str, config: dict[str, Any]) -> tuple[QuantFormat, dict[str, Any]]:
    name = config["format"]
    fmt = COMFY_FORMATS.get(name)
    if fmt is None:
        known = "a known ComfyUI format AIPROD does not de-quantise" if name in REFUSED_COMFY_FORMATS else \
            "an unknown format"
        raise _refuse(path, f"stores layer `{layer}` as {name!r} ({known}; supported: "
                      f"{', '.join(COMFY_FORMATS)}).")
    params: dict[str, Any] = {}
    nested = config.get("params") if isinstance(config.get("params"), dict) else {}
    if config.get("convrot", nested.get("convrot", False)):
        params = {"convrot": True, "convrot_groupsize": int(config.get("convrot_groupsize",
                                                                       nested.get("convrot_groupsize", 256)))}
    if name.startswith("float8"):
        params["storage"] = name
    return fmt, params


def _by_layout(header: SafetensorsHeader, layer: str, weight: TensorInfo, legacy: bool
               ) -> tuple[QuantFormat, str, dict[str, Any]] | None:
    tensors = header.tensors
    if legacy and f"{layer}.scale_weight" in tensors and weight.dtype in FP8_NAMES:
        return LEGACY_SCALED_FP8, "scaled_fp8 marker", {"scale_suffix": "scale_weight"}
    pair = [f"{layer}.weight_scale" in tensors, f"{layer}.weight_scale_2" in tensors]
    if weight.dtype == "U8" and all(pair):
        return LIGHTRICKS_NVFP4, "NVFP4 layout (weight_scale + weight_scale_2)", {}
    if pair[1] and not pair[0]:
        raise _refuse(header.path, f"has `{layer}.weight_scale_2` without `{layer}.weight_scale` (NVFP4 layers "
                      "pair them 1:1).")
    if weight.dtype in FP8_NAMES:
        scaled = "fp8 layout with weight_scale" if pair[0] else "fp8 layout"
        return LIGHTRICKS_FP8, scaled, {}
    if weight.dtype in INTEGER_NAMES and pair[0]:
        raise _refuse(header.path, f"stores layer `{layer}` as {weight.dtype} with a weight_scale but without a "
                      "`comfy_quant` marker, so its format (int8 / int8 ConvRot / nvfp4) cannot be known.")
    return None


def _layer_of(header: SafetensorsHeader, layer: str, fmt: QuantFormat, source: str, params: dict[str, Any],
              extra: tuple[str, ...]) -> LayerQuant:
    tensors = {"weight": f"{layer}.weight"}
    for spec in fmt.scales:
        key = f"{layer}.{spec.suffix}"
        if key in header.tensors:
            tensors[spec.suffix] = key
        elif spec.required:
            raise _refuse(header.path, f"stores layer `{layer}` as {fmt.name} ({source}) but has no `{key}`.")
    return LayerQuant(layer, fmt, source, tensors, params, extra)


def scan_quantized_layers(header: SafetensorsHeader, keys: Iterable[str] | None = None) -> QuantScan:
    """The quantized layers among ``keys`` (file keys; default: all) of a file, see the module docstring."""
    keys = list(header.tensors if keys is None else keys)
    preset = getattr(header, "quant_layers", None)  # GGUF headers know their block types already
    if preset is not None:
        chosen = set(keys)
        return QuantScan({layer: q for layer, q in preset.items() if q.weight_key in chosen})
    markers = tuple(k for k in keys if k == MARKER_NAME or k.endswith("." + MARKER_NAME))
    configs = {**_metadata_configs(header), **_comfy_quant_configs(header, keys)}
    layers: dict[str, LayerQuant] = {}
    for key in keys:
        if not key.endswith(".weight"):
            continue
        layer = key.removesuffix(".weight")
        config = configs.get(layer)
        extra = (f"{layer}{COMFY_QUANT_SUFFIX}",) if f"{layer}{COMFY_QUANT_SUFFIX}" in header.tensors else ()
        if config is not None:
            fmt, params = _comfy_format(header.path, layer, config)
            source = "comfy_quant" if extra else METADATA_KEY
        else:
            found = _by_layout(header, layer, header.tensors[key], bool(markers))
            if found is None:
                continue
            fmt, source, params = found
        layers[layer] = _layer_of(header, layer, fmt, source, params, extra)
    return QuantScan(layers, markers)


def check_layer(path: str, quant: LayerQuant, shape: tuple[int, ...], tensors: Mapping[str, TensorInfo]) -> None:
    """Raise unless the stored weight and scales of ``quant`` fit a weight of logical ``shape`` (out, in)."""
    fmt = quant.format
    weight = tensors[quant.weight_key]
    try:
        storage = fmt.storage_shape(tuple(shape))
    except ValueError as exc:
        raise _refuse(path, f"stores layer `{quant.layer}` as {fmt.name}, which cannot hold its weight "
                      f"{list(shape)}: {exc}.") from exc
    if weight.dtype not in fmt.weight_dtypes or weight.shape != storage:
        raise _refuse(path, f"stores layer `{quant.layer}` as {fmt.name} ({quant.source}) with a "
                      f"{weight.dtype} {list(weight.shape)} weight; a {list(shape)} weight in {fmt.name} is "
                      f"{' or '.join(fmt.weight_dtypes)} {list(storage)}. The file may be from another model "
                      "version or a broken conversion.")
    for spec in fmt.scales:
        key = quant.tensors.get(spec.suffix)
        if key is None:
            continue
        info = tensors[key]
        per_row = spec.layout == "rows" and math.prod(info.shape) == shape[0] != 1
        if info.dtype not in spec.dtypes or math.prod(info.shape) not in fmt.scale_numels(spec, tuple(shape)) or (
                per_row and info.shape != (shape[0], 1)):
            raise _refuse(path, f"has `{key}` as {info.dtype} {list(info.shape)}, expected {spec.layout} "
                          f"({' / '.join(spec.dtypes)}, {' or '.join(map(str, fmt.scale_numels(spec, shape)))} "
                          f"values) for a {fmt.name} weight {list(shape)}.")
    groupsize = quant.params.get("convrot_groupsize")
    if groupsize is not None and (shape[-1] % groupsize or groupsize < 4 or
                                  groupsize & (groupsize - 1) or (groupsize.bit_length() - 1) % 2):
        raise _refuse(path, f"stores layer `{quant.layer}` with convrot_groupsize={groupsize!r}, expected a "
                      f"power of 4 dividing its {shape[-1]} input features.")


def logical_tensors(header: SafetensorsHeader) -> dict[str, TensorInfo]:
    """``header.tensors`` with each quantized weight at the logical shape it de-quantises to (the format's padded
    extent for NVFP4 / MXFP8), for matching by shape (LoRAs). A file whose formats are refused is returned as is:
    its load raises the refusal."""
    import dataclasses

    try:
        scan = scan_quantized_layers(header)
    except CheckpointFormatError:
        return dict(header.tensors)
    tensors = dict(header.tensors)
    for quant in scan.layers.values():
        info = tensors[quant.weight_key]
        shape = quant.shape
        if shape is None and len(info.shape) == 2:
            shape = (info.shape[0], info.shape[1] * quant.format.values_per_element)
        if shape is not None:
            tensors[quant.weight_key] = dataclasses.replace(info, shape=tuple(shape))
    return tensors
