"""The quantized weight formats we read, as data: storage dtypes, scale tensors, block sizes, padding.

A `QuantFormat` describes one layer's tensors in the file: the weight's storage (dtype, how many values an element
packs, the padding of its rows and columns, or GGUF's blocks of ``block_size`` values in ``type_size`` bytes) and
the scale tensors stored beside it (``<layer>.<suffix>``), each with the dtypes and the layout it may have. The
facts come from ComfyUI (``comfy/quant_ops.py`` QUANT_ALGOS, ``comfy/ops.py``), comfy-kitchen's layouts
(``comfy_kitchen/tensor/*.py``), Lightricks' NVFP4 layout (the same as comfy-kitchen's) and ggml's block sizes.

Scale layouts: ``scalar`` one value; ``rows`` one value or one per output row ([out] / [out, 1]);
``nvfp4_blocks`` / ``mxfp8_blocks`` one value per 16 / 32 weights of a row, stored in cuBLAS' swizzled block
layout, which holds ceil(rows / 128) * 128 x ceil(blocks / 4) * 4 values whatever 2-D shape the file gives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "COMFY_FORMATS",
    "GGML_TYPES",
    "LEGACY_SCALED_FP8",
    "LIGHTRICKS_FP8",
    "LIGHTRICKS_NVFP4",
    "REFUSED_COMFY_FORMATS",
    "QuantFormat",
    "ScaleSpec",
]


@dataclass(frozen=True)
class ScaleSpec:
    """One tensor stored beside a quantized weight as ``<layer>.<suffix>``."""

    suffix: str
    dtypes: tuple[str, ...]  # safetensors dtype names accepted
    layout: str  # "scalar" | "rows" | "nvfp4_blocks" | "mxfp8_blocks"
    required: bool = True
    used: bool = True  # False: kept for completeness (activation scales), not needed to de-quantise


@dataclass(frozen=True)
class QuantFormat:
    """A quantized weight format (see the module docstring). ``kernel`` names its de-quantisation."""

    name: str
    label: str
    weight_dtypes: tuple[str, ...]
    kernel: str
    scales: tuple[ScaleSpec, ...] = ()
    values_per_element: int = 1  # nvfp4: two 4-bit values per byte
    pad: int = 1  # rows and columns of the stored weight are padded up to a multiple of this
    block_size: int = 1  # GGUF: values per block of a row
    type_size: int = 0  # GGUF: bytes per block (0: not a block format)
    bits_per_weight: float = 8.0  # for reports and bounds

    def storage_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The stored tensor's shape for a weight of logical ``shape`` (GGUF: rows x bytes per row)."""
        if self.type_size:
            if shape[-1] % self.block_size:
                raise ValueError(f"row size={shape[-1]!r}, expected a multiple of {self.name} blocks of "
                                 f"{self.block_size}")
            return (*shape[:-1], shape[-1] // self.block_size * self.type_size)
        if len(shape) != 2:
            raise ValueError(f"weight shape={list(shape)!r}, expected 2 dimensions for {self.name}")
        rows, cols = (math.ceil(d / self.pad) * self.pad for d in shape)
        return rows, cols // self.values_per_element

    def padded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The logical shape the stored (padded) weight de-quantises to."""
        if self.type_size:
            return shape
        return tuple(math.ceil(d / self.pad) * self.pad for d in shape)

    def scale_numels(self, spec: ScaleSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The element counts a scale of ``spec`` may have for a weight of logical ``shape``."""
        if spec.layout == "scalar":
            return (1,)
        if spec.layout == "rows":
            return 1, shape[0]
        rows, cols = self.padded_shape(shape)
        block = 16 if spec.layout == "nvfp4_blocks" else 32
        return (math.ceil(rows / 128) * 128 * math.ceil(cols // block / 4) * 4,)


_FP8 = ("F8_E4M3", "F8_E5M2")
_INPUT_SCALE = ScaleSpec("input_scale", ("F32", "BF16", "F16"), "scalar", required=False, used=False)
_FLOAT8 = dict(kernel="per_tensor_fp8", scales=(ScaleSpec("weight_scale", ("F32", "BF16", "F16"), "scalar", False),
                                                _INPUT_SCALE))
NVFP4 = QuantFormat(
    "nvfp4", "NVFP4 (4-bit E2M1, F8 block scales per 16 + F32 tensor scale)", ("U8",), "nvfp4",
    (ScaleSpec("weight_scale", ("F8_E4M3",), "nvfp4_blocks"), ScaleSpec("weight_scale_2", ("F32",), "scalar"),
     _INPUT_SCALE), values_per_element=2, pad=16, bits_per_weight=4.5,
)
# ComfyUI's formats by the name ``comfy_quant`` / ``_quantization_metadata`` give them.
COMFY_FORMATS: dict[str, QuantFormat] = {
    fmt.name: fmt
    for fmt in (
        QuantFormat("float8_e4m3fn", "fp8 e4m3 x per-tensor scale", ("F8_E4M3", "U8"), **_FLOAT8),
        QuantFormat("float8_e5m2", "fp8 e5m2 x per-tensor scale", ("F8_E5M2", "U8"), **_FLOAT8),
        NVFP4,
        QuantFormat("mxfp8", "MXFP8 (fp8 e4m3, E8M0 block scales per 32)", ("F8_E4M3",), "mxfp8",
                    (ScaleSpec("weight_scale", ("F8_E8M0", "U8"), "mxfp8_blocks"), _INPUT_SCALE), pad=32,
                    bits_per_weight=8.25),
        QuantFormat("int8_tensorwise", "int8 x tensor / row scale (optionally ConvRot-rotated)", ("I8",), "int8",
                    (ScaleSpec("weight_scale", ("F32", "BF16", "F16"), "rows"), _INPUT_SCALE)),
    )
}
# Formats ComfyUI (or its quantization packs) write that we recognise but do not de-quantise.
REFUSED_COMFY_FORMATS = ("convrot_w4a4", "asym_w4a8_int8", "w4a8_int8", "w4a8", "awq_w4a16", "int8_blockwise",
                         "float8_e4m3fn_rowwise", "float8_e4m3fn_blockwise", "hybrid_mxfp8", "svdquant_w4a4")
# ComfyUI's older marker: a ``scaled_fp8`` tensor, then ``<layer>.scale_weight`` (+ ``.scale_input``).
LEGACY_SCALED_FP8 = QuantFormat(
    "scaled_fp8", "fp8 x per-tensor scale (legacy scaled_fp8 marker)", _FP8, "per_tensor_fp8",
    (ScaleSpec("scale_weight", ("F32", "BF16", "F16"), "scalar", False),
     ScaleSpec("scale_input", ("F32", "BF16", "F16"), "scalar", False, used=False)),
)
# Lightricks' official files, recognised by their tensors alone (no marker).
LIGHTRICKS_FP8 = QuantFormat("fp8", "fp8 (x per-tensor weight_scale when present)", _FP8, **_FLOAT8)
LIGHTRICKS_NVFP4 = NVFP4


def _ggml(name: str, block_size: int, type_size: int) -> QuantFormat:
    return QuantFormat(name, f"GGUF {name}", ("U8",), f"ggml_{name}", block_size=block_size, type_size=type_size,
                       bits_per_weight=type_size * 8 / block_size)


# ggml block types: id -> format (None: a type we recognise but do not de-quantise). F32 / F16 / BF16 tensors are
# plain tensors, not quantized layers.
GGML_TYPES: dict[int, tuple[str, QuantFormat | None]] = {
    2: ("Q4_0", _ggml("Q4_0", 32, 18)), 3: ("Q4_1", _ggml("Q4_1", 32, 20)),
    6: ("Q5_0", _ggml("Q5_0", 32, 22)), 7: ("Q5_1", _ggml("Q5_1", 32, 24)),
    8: ("Q8_0", _ggml("Q8_0", 32, 34)), 9: ("Q8_1", None),
    10: ("Q2_K", _ggml("Q2_K", 256, 84)), 11: ("Q3_K", _ggml("Q3_K", 256, 110)),
    12: ("Q4_K", _ggml("Q4_K", 256, 144)), 13: ("Q5_K", _ggml("Q5_K", 256, 176)),
    14: ("Q6_K", _ggml("Q6_K", 256, 210)), 15: ("Q8_K", None),
    16: ("IQ2_XXS", None), 17: ("IQ2_XS", None), 18: ("IQ3_XXS", None), 19: ("IQ1_S", None), 20: ("IQ4_NL", None),
    21: ("IQ3_S", None), 22: ("IQ2_S", None), 23: ("IQ4_XS", None), 29: ("IQ1_M", None), 34: ("TQ1_0", None),
    35: ("TQ2_0", None), 39: ("MXFP4", None), 40: ("NVFP4", None), 41: ("Q1_0", None),
}
# Plain ggml types: id -> (name, safetensors dtype name, bytes per value).
GGML_PLAIN_TYPES: dict[int, tuple[str, str, int]] = {
    0: ("F32", "F32", 4), 1: ("F16", "F16", 2), 30: ("BF16", "BF16", 2), 24: ("I8", "I8", 1), 25: ("I16", "I16", 2),
    26: ("I32", "I32", 4), 27: ("I64", "I64", 8), 28: ("F64", "F64", 8),
}
