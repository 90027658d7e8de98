"""De-quantisation numerics: ours equals comfy-kitchen's eager backend (nvfp4, mxfp8, int8 tensorwise, ConvRot,
per-tensor fp8) and the gguf package (every GGUF block type we read) bit for bit.

comfy-kitchen is driven as ComfyUI drives it (a ``QuantizedTensor`` of the layout with the layer's Params, then
``dequantize()``), on data quantized both by comfy-kitchen itself and by our test converters. Shapes that are not
multiples of the formats' tiles exercise padding and the block-scale swizzle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import quant_files as qf

from aiprod.loaders.quant.formats import COMFY_FORMATS
from aiprod.loaders.quant.ggml import GGML_KERNELS, dequantize_ggml
from aiprod.loaders.quant.kernels import dequantize, unswizzle_blocks

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(64, 128), (48, 96), (4, 64), (200, 160)]  # (out, in): tile-aligned, padded rows / cols, tiny rows


def _weight(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.2


def _kitchen(layout: str, qdata: torch.Tensor, shape, dtype, **params) -> torch.Tensor:
    from comfy_kitchen.tensor import QuantizedTensor, get_layout_class

    cls = get_layout_class(layout)
    return QuantizedTensor(qdata, layout, cls.Params(orig_dtype=dtype, orig_shape=tuple(shape), **params)).dequantize()


def _ours(fmt: str, tensors: dict[str, torch.Tensor], shape, dtype, params=None) -> torch.Tensor:
    scales = {k: v for k, v in tensors.items() if k != "weight"}
    return dequantize(COMFY_FORMATS[fmt].kernel, tensors["weight"], scales, params or {}, tuple(shape), dtype)


def test_unswizzle_inverts_comfy_kitchens_block_layout():
    from comfy_kitchen.float_utils import to_blocked

    for rows, cols in ((128, 4), (200, 9), (16, 3), (300, 40)):
        plain = torch.randint(0, 255, (rows, cols), dtype=torch.uint8)
        assert torch.equal(unswizzle_blocks(to_blocked(plain, flatten=False), rows, cols), plain)
        assert torch.equal(unswizzle_blocks(to_blocked(plain, flatten=True), rows, cols), plain)  # any 2-D shape
        assert torch.equal(qf.swizzle_blocks(plain), to_blocked(plain, flatten=False))  # the converter's swizzle


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fp8_equals_comfy_kitchen(shape, dtype):
    from comfy_kitchen.tensor import QuantizedTensor

    w = _weight(shape)
    qt = QuantizedTensor.from_float(w.to(dtype), "TensorCoreFP8Layout")
    ours = _ours("float8_e4m3fn", {"weight": qt._qdata, "weight_scale": qt._params.scale}, shape, dtype)
    assert torch.equal(ours, qt.dequantize())
    mine = qf.quantize_fp8(w)
    expected = _kitchen("TensorCoreFP8Layout", mine["weight"], shape, dtype, scale=mine["weight_scale"])
    assert torch.equal(_ours("float8_e4m3fn", mine, shape, dtype), expected)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nvfp4_equals_comfy_kitchen(shape, dtype):
    from comfy_kitchen.tensor import QuantizedTensor

    w = _weight(shape, 1)
    qt = QuantizedTensor.from_float(w, "TensorCoreNVFP4Layout")
    qt._params = type(qt._params)(scale=qt._params.scale, orig_dtype=dtype, orig_shape=tuple(shape),
                                  block_scale=qt._params.block_scale)
    stored = {"weight": qt._qdata, "weight_scale": qt._params.block_scale, "weight_scale_2": qt._params.scale}
    assert torch.equal(_ours("nvfp4", stored, shape, dtype), qt.dequantize())
    mine = qf.quantize_nvfp4(w)
    expected = _kitchen("TensorCoreNVFP4Layout", mine["weight"], shape, dtype, scale=mine["weight_scale_2"],
                        block_scale=mine["weight_scale"])
    assert torch.equal(_ours("nvfp4", mine, shape, dtype), expected)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mxfp8_equals_comfy_kitchen(shape, dtype):
    from comfy_kitchen.tensor import QuantizedTensor

    w = _weight(shape, 2)
    qt = QuantizedTensor.from_float(w, "TensorCoreMXFP8Layout")
    qt._params = type(qt._params)(scale=qt._params.scale, orig_dtype=dtype, orig_shape=tuple(shape))
    stored = {"weight": qt._qdata, "weight_scale": qt._params.scale.view(torch.uint8)}
    assert torch.equal(_ours("mxfp8", stored, shape, dtype), qt.dequantize())
    mine = qf.quantize_mxfp8(w)
    expected = _kitchen("TensorCoreMXFP8Layout", mine["weight"], shape, dtype, scale=mine["weight_scale"])
    assert torch.equal(_ours("mxfp8", mine, shape, dtype), expected)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("convrot", [False, True], ids=["tensorwise", "convrot"])
def test_int8_equals_comfy_kitchen(convrot, dtype):
    from comfy_kitchen.tensor import QuantizedTensor

    shape = (96, 256)
    w = _weight(shape, 3).to(dtype)
    options = {"per_channel": True, "convrot": True, "convrot_groupsize": 64} if convrot else {}
    qt = QuantizedTensor.from_float(w, "TensorWiseINT8Layout", **options)
    params = {"convrot": True, "convrot_groupsize": 64} if convrot else {}
    stored = {"weight": qt._qdata, "weight_scale": qt._params.scale}
    assert torch.equal(_ours("int8_tensorwise", stored, shape, dtype, params), qt.dequantize())
    mine = qf.quantize_int8_convrot(w.float()) if convrot else qf.quantize_int8(w.float())
    params = {"convrot": True, "convrot_groupsize": qf.CONVROT_GROUP} if convrot else {}
    expected = _kitchen("TensorWiseINT8Layout", mine["weight"], shape, dtype, scale=mine["weight_scale"], **params)
    assert torch.equal(_ours("int8_tensorwise", mine, shape, dtype, params), expected)


def _random_blocks(name: str, count: int, seed: int) -> torch.Tensor:
    """Random block bytes with every float16 field a finite value (random bytes elsewhere: all bit patterns)."""
    _, type_size, _ = GGML_KERNELS[name]
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (count, type_size), dtype=torch.uint8, generator=gen)
    halves = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "Q2_K": (80, 82),
              "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}[name]
    for start in halves:
        value = (torch.rand(count, generator=gen) * 0.02 - 0.01).to(torch.float16)
        blocks[:, start:start + 2] = value.reshape(-1, 1).view(torch.uint8)
    return blocks


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(GGML_KERNELS))
def test_ggml_block_types_equal_the_gguf_package(name):
    import gguf

    block_size, type_size, _ = GGML_KERNELS[name]
    blocks = _random_blocks(name, 64, seed=len(name))
    rows = 8
    data = blocks.reshape(rows, -1)  # 8 rows of 8 blocks
    shape = (rows, data.shape[1] // type_size * block_size)
    expected = gguf.quants.dequantize(data.numpy(), getattr(gguf.GGMLQuantizationType, name))
    ours = dequantize_ggml(name, data, shape, torch.float32)
    assert ours.shape == expected.shape == shape
    assert torch.equal(ours, torch.from_numpy(np.ascontiguousarray(expected)))
    assert torch.equal(dequantize_ggml(name, data, shape, torch.bfloat16), ours.to(torch.bfloat16))


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(qf.GGUF_ENCODERS))
def test_our_gguf_encoders_decode_like_the_gguf_package(name):
    """The converter's blocks are valid ggml blocks: the gguf package reads back what we read back."""
    import gguf

    block, encoder = qf.GGUF_ENCODERS[name]
    w = _weight((6, 512), 4)
    encoded = encoder(w.reshape(-1, block)).reshape(6, -1)
    expected = gguf.quants.dequantize(encoded.numpy(), getattr(gguf.GGMLQuantizationType, name))
    assert torch.equal(dequantize_ggml(name, encoded, (6, 512), torch.float32), torch.from_numpy(expected))


@pytest.mark.oracle
@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp8"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_the_comfy_kitchen_branch_gives_our_values(monkeypatch, fmt, shape):
    """The branch that hands a weight to comfy-kitchen's kernels (taken on CUDA) forced on the CPU, where its
    dispatcher runs the eager backend: the arguments we pass (tensor / block scales, their dtypes and swizzled
    layout, the output dtype) give bit for bit what our own arithmetic gives. No GPU is needed to catch a wrong
    argument; the CUDA kernels' own numerics are comfy-kitchen's."""
    from aiprod.loaders.quant import kernels

    stored = {"nvfp4": qf.quantize_nvfp4, "mxfp8": qf.quantize_mxfp8}[fmt](_weight(shape, 4))
    ours = _ours(fmt, stored, shape, torch.bfloat16)
    monkeypatch.setattr(kernels, "_fast_kernels_for", lambda weight: True)
    assert kernels._kitchen() is not None
    assert torch.equal(_ours(fmt, stored, shape, torch.bfloat16), ours)
