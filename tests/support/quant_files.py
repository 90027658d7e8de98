"""Converters: the tiny reference checkpoints -> every quantized layout users have, with our own quantizers.

Each converter quantizes the transformer blocks' Linear weights (every 2-D ``transformer_blocks.*.weight``: the
attention projections, gate logits and feed-forwards) and writes the file in one real layout, with the real key
names, dtypes, scale tensors and metadata:

- ComfyUI ``comfy_quant``: ``<layer>.comfy_quant`` (uint8 JSON) + the format's scales (float8_e4m3fn, nvfp4,
  mxfp8, int8_tensorwise, int8_tensorwise with ConvRot); or the same map in the ``_quantization_metadata`` header;
- ComfyUI's legacy fp8: a ``scaled_fp8`` marker tensor + ``<layer>.scale_weight`` / ``.scale_input``;
- Lightricks NVFP4: U8 packed weight + F8 block ``weight_scale`` + F32 ``weight_scale_2`` + ``input_scale``;
- GGUF (city96's converter's choices): ``model.diffusion_model.`` stripped, arch ``ltxv``, 1-D and small tensors
  and ``scale_shift_table`` in F32, matrices in the block type (F16 where a row is not whole blocks), written with
  the ``gguf`` package's writer; the ``config`` key-value optional.

The quantizers are written here from the formats' definitions (block sizes, scale dtypes, the cuBLAS block-scale
swizzle, ggml's block structs), not taken from comfy-kitchen or gguf, which the tests use as oracles only.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["GGUF_ENCODERS", "QUANTIZERS", "is_block_linear", "quantize_file", "write_gguf", "write_safetensors"]

PREFIX = "model.diffusion_model."
E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
F8_MAX, F4_MAX, INT8_MAX = 448.0, 6.0, 127.0
CONVROT_GROUP = 16  # a power of 4 that divides every tiny in-feature count (32 ... 256)
_ST_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float8_e4m3fn: "F8_E4M3",
             torch.float8_e5m2: "F8_E5M2", torch.float8_e8m0fnu: "F8_E8M0", torch.int8: "I8", torch.uint8: "U8"}


def is_block_linear(key: str, tensor: torch.Tensor) -> bool:
    return key.startswith(PREFIX + "transformer_blocks.") and key.endswith(".weight") and tensor.ndim == 2


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file of ``tensors`` (any dtype in `_ST_NAMES`), 8-byte aligned, sorted keys."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    chunks, offset = [], 0
    for key in sorted(tensors):
        tensor = tensors[key].detach().contiguous().cpu()
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[key] = {"dtype": _ST_NAMES[tensor.dtype], "shape": list(tensor.shape),
                       "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
    return path


# ---- block-scale swizzle (cuBLAS layout: 128 x 4 tiles, value (i * 32 + j, c) of a tile at [j][i][c]) --------

def swizzle_blocks(plain: torch.Tensor) -> torch.Tensor:
    rows, cols = plain.shape
    row_tiles, col_tiles = -(-rows // 128), -(-cols // 4)
    padded = torch.zeros(row_tiles * 128, col_tiles * 4, dtype=plain.dtype)
    padded[:rows, :cols] = plain
    tiles = padded.view(row_tiles, 4, 32, col_tiles, 4).permute(0, 3, 2, 1, 4).contiguous()
    return tiles.reshape(row_tiles * 128, col_tiles * 4)


def _pad(weight: torch.Tensor, multiple: int) -> torch.Tensor:
    rows, cols = weight.shape
    return torch.nn.functional.pad(weight, (0, -cols % multiple, 0, -rows % multiple))


# ---- safetensors formats: weight (out, in) float32 -> {suffix: tensor} ------------------------------------

def quantize_fp8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    scale = (weight.abs().amax() / F8_MAX).clamp(min=1e-12)
    return {"weight": (weight / scale).to(torch.float8_e4m3fn), "weight_scale": scale.reshape(()),
            "input_scale": torch.tensor(1.0)}


def _e2m1_codes(values: torch.Tensor) -> torch.Tensor:
    index = (values.abs().unsqueeze(-1) - E2M1_GRID).abs().argmin(-1)
    return (index | ((values < 0) & (index > 0)).long() << 3).to(torch.uint8)


def quantize_nvfp4(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    padded = _pad(weight, 16)
    rows, cols = padded.shape
    tensor_scale = (weight.abs().amax() / (F8_MAX * F4_MAX)).clamp(min=1e-12)
    blocks = padded.reshape(rows, cols // 16, 16)
    block_scale = (blocks.abs().amax(-1) / F4_MAX / tensor_scale).clamp(max=F8_MAX).to(torch.float8_e4m3fn)
    total = tensor_scale * block_scale.float()
    scaled = torch.where(total.unsqueeze(-1) > 0, blocks / total.clamp(min=1e-30).unsqueeze(-1), 0.0)
    codes = _e2m1_codes(scaled.clamp(-F4_MAX, F4_MAX).reshape(rows, cols))
    packed = (codes[:, 0::2] << 4) | codes[:, 1::2]  # the even value in the high nibble
    return {"weight": packed, "weight_scale": swizzle_blocks(block_scale.view(torch.uint8)).view(torch.float8_e4m3fn),
            "weight_scale_2": tensor_scale.reshape(()), "input_scale": torch.tensor(1.0)}


def quantize_mxfp8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    padded = _pad(weight, 32)
    rows, cols = padded.shape
    blocks = padded.reshape(rows, cols // 32, 32)
    amax = blocks.abs().amax(-1)
    exponent = torch.ceil(torch.log2((amax / F8_MAX).clamp(min=2.0 ** -126))).clamp(-127, 127)
    scale = torch.where(amax > 0, torch.exp2(exponent), 1.0)
    values = (blocks / scale.unsqueeze(-1)).clamp(-F8_MAX, F8_MAX).reshape(rows, cols).to(torch.float8_e4m3fn)
    stored = torch.where(amax > 0, exponent + 127, 0).to(torch.uint8)
    return {"weight": values, "weight_scale": swizzle_blocks(stored).view(torch.float8_e8m0fnu)}


def quantize_int8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    scale = (weight.abs().amax() / INT8_MAX).clamp(min=1e-12)
    return {"weight": (weight / scale).round().clamp(-128, 127).to(torch.int8), "weight_scale": scale.reshape(())}


def hadamard(size: int) -> torch.Tensor:
    base = torch.tensor([[1, 1, 1, -1], [1, 1, -1, 1], [1, -1, 1, 1], [-1, 1, 1, 1]], dtype=torch.float32)
    matrix = base
    while matrix.shape[0] < size:
        matrix = torch.kron(matrix, base)
    return matrix / math.sqrt(size)


def quantize_int8_convrot(weight: torch.Tensor, group: int = CONVROT_GROUP) -> dict[str, torch.Tensor]:
    rows, cols = weight.shape
    rotated = (weight.reshape(rows, cols // group, group) @ hadamard(group).T).reshape(rows, cols)
    scale = (rotated.abs().amax(-1, keepdim=True) / INT8_MAX).clamp(min=1e-12)  # (out, 1)
    return {"weight": (rotated / scale).round().clamp(-128, 127).to(torch.int8), "weight_scale": scale}


def quantize_scaled_fp8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    fp8 = quantize_fp8(weight)
    return {"weight": fp8["weight"], "scale_weight": fp8["weight_scale"], "scale_input": torch.tensor(1.0)}


# name -> (quantizer, comfy_quant JSON or None)
QUANTIZERS: dict[str, tuple[Callable[[torch.Tensor], dict[str, torch.Tensor]], dict | None]] = {
    "float8_e4m3fn": (quantize_fp8, {"format": "float8_e4m3fn"}),
    "nvfp4": (quantize_nvfp4, {"format": "nvfp4"}),
    "mxfp8": (quantize_mxfp8, {"format": "mxfp8"}),
    "int8_tensorwise": (quantize_int8, {"format": "int8_tensorwise"}),
    "int8_convrot": (quantize_int8_convrot, {"format": "int8_tensorwise", "convrot": True,
                                             "convrot_groupsize": CONVROT_GROUP}),
    "scaled_fp8": (quantize_scaled_fp8, None),
    "lightricks_fp8": (quantize_fp8, None),
    "lightricks_nvfp4": (quantize_nvfp4, None),
}


def _json_tensor(config: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(config).encode()), dtype=torch.uint8)


def quantize_file(source: Path, target: Path, kind: str, *, carrier: str = "comfy_quant",
                  transformer_only: bool = False) -> tuple[Path, dict[str, torch.Tensor]]:
    """``source`` (a tiny single file) with its block Linears quantized as ``kind`` (a `QUANTIZERS` key).

    ``carrier``: "comfy_quant" tensors or the "_quantization_metadata" header (ComfyUI formats only).
    ``transformer_only``: keep only the transformer, prefix stripped (a diffusion_models/ file). Returns the path
    and the original (bf16) tensors by file key of the written file."""
    from safetensors.torch import load_file

    from aiprod.loaders.safetensors_header import read_header

    tensors, metadata = load_file(str(source)), dict(read_header(source).metadata)
    quantizer, config = QUANTIZERS[kind]
    out: dict[str, torch.Tensor] = {}
    layers: dict[str, dict] = {}
    for key, value in tensors.items():
        if not is_block_linear(key, value):
            out[key] = value
            continue
        layer = key.removesuffix(".weight")
        out.update({f"{layer}.{suffix}" if suffix != "weight" else key: t
                    for suffix, t in quantizer(value.float()).items()})
        if config is not None and carrier == "comfy_quant":
            out[f"{layer}.comfy_quant"] = _json_tensor(config)
        layers[layer] = config
    if kind == "scaled_fp8":
        out[PREFIX + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    if config is not None and carrier == "_quantization_metadata":
        metadata["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers})
    originals = dict(tensors)
    if transformer_only:
        keep = [k for k in out if k.startswith(PREFIX)]
        out = {k.removeprefix(PREFIX): out[k] for k in keep}
        originals = {k.removeprefix(PREFIX): v for k, v in tensors.items() if k.startswith(PREFIX)}
        metadata = {k: v for k, v in metadata.items() if k != "_quantization_metadata"} | (
            {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {
                k.removeprefix(PREFIX): v for k, v in layers.items()}})}
            if carrier == "_quantization_metadata" else {})
    return write_safetensors(target, out, metadata), originals


# ---- GGUF block encoders: blocks (n, block size) float32 -> bytes (n, type size) ----------------------------

def _f16_bytes(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(n, groups, 2, width) 4-bit codes -> (n, groups * width) bytes (low nibble: the first run)."""
    return (codes[:, :, 0] | (codes[:, :, 1] << 4)).reshape(codes.shape[0], -1)


def _pack_bits(codes: torch.Tensor, step: int) -> torch.Tensor:
    """(n, groups, 8 // step, width) ``step``-bit codes -> (n, groups * width) bytes (low bits: field 0)."""
    packed = torch.zeros(codes.shape[0], codes.shape[1], codes.shape[3], dtype=torch.uint8)
    for k in range(codes.shape[2]):
        packed |= codes[:, :, k] << (k * step)
    return packed.reshape(codes.shape[0], -1)


def _rounded_up_f16(values: torch.Tensor) -> torch.Tensor:
    """The smallest float16 >= each value, as float32 (so a scale never shrinks when stored)."""
    half = values.to(torch.float16)
    half = torch.where(half.float() < values, torch.nextafter(half, torch.tensor(float("inf"), dtype=half.dtype)),
                       half)
    return half.float()


def encode_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = (blocks.abs().amax(-1, keepdim=True) / 127).to(torch.float16).float()
    q = torch.where(d > 0, blocks / d.clamp(min=1e-30), 0).round().clamp(-127, 127).to(torch.int8)
    return torch.cat([_f16_bytes(d), q.view(torch.uint8)], dim=1)


def _signed_max(blocks: torch.Tensor) -> torch.Tensor:
    return torch.gather(blocks, 1, blocks.abs().argmax(-1, keepdim=True))


def encode_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    d = (_signed_max(blocks) / -8).to(torch.float16).float()
    q = (torch.where(d != 0, blocks / d, 0).round() + 8).clamp(0, 15).to(torch.uint8)
    return torch.cat([_f16_bytes(d), _pack_nibbles(q.reshape(-1, 1, 2, 16))], dim=1)


def encode_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    d = (_signed_max(blocks) / -16).to(torch.float16).float()
    q = (torch.where(d != 0, blocks / d, 0).round() + 16).clamp(0, 31).to(torch.uint8)
    high = _pack_bits((q >> 4).reshape(-1, 4, 8, 1), 1)
    return torch.cat([_f16_bytes(d), high, _pack_nibbles((q & 0x0F).reshape(-1, 1, 2, 16))], dim=1)


def _k_scales(sc: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """Eight 6-bit scales and mins per block -> the 12 packed bytes of Q4_K / Q5_K."""
    low, high = sc[:, :4], sc[:, 4:]
    mlow, mhigh = mins[:, :4], mins[:, 4:]
    first = low | ((high >> 4) << 6)
    second = mlow | ((mhigh >> 4) << 6)
    third = (high & 0x0F) | ((mhigh & 0x0F) << 4)
    return torch.cat([first, second, third], dim=1).to(torch.uint8)


def _k_affine(blocks: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(header bytes: d, dmin, 12 scale bytes; codes (n, 8, 32)) of a Q4_K / Q5_K block."""
    x = blocks.reshape(-1, 8, 32)
    low = x.amin(-1).clamp(max=0)
    scale, minimum = (x.amax(-1) - low) / levels, -low
    d = _rounded_up_f16(scale.amax(-1, keepdim=True) / 63)
    dmin = (minimum.amax(-1, keepdim=True) / 63).to(torch.float16).float()
    sc = torch.where(d > 0, torch.ceil(scale / d.clamp(min=1e-30)), 0).clamp(0, 63)
    mi = torch.where(dmin > 0, (minimum / dmin.clamp(min=1e-30)).round(), 0).clamp(0, 63)
    step, offset = (d * sc).unsqueeze(-1), (dmin * mi).unsqueeze(-1)
    q = torch.where(step > 0, (x + offset) / step.clamp(min=1e-30), 0).round().clamp(0, levels).to(torch.uint8)
    head = torch.cat([_f16_bytes(d), _f16_bytes(dmin), _k_scales(sc.to(torch.uint8), mi.to(torch.uint8))], dim=1)
    return head, q


def encode_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    head, q = _k_affine(blocks, 15)
    return torch.cat([head, _pack_nibbles(q.reshape(-1, 4, 2, 32))], dim=1)


def encode_q5_k(blocks: torch.Tensor) -> torch.Tensor:
    head, q = _k_affine(blocks, 31)
    high = _pack_bits((q >> 4).reshape(-1, 1, 8, 32), 1)
    return torch.cat([head, high, _pack_nibbles((q & 0x0F).reshape(-1, 4, 2, 32))], dim=1)


def encode_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    x = blocks.reshape(-1, 16, 16)
    scale = x.abs().amax(-1) / 31
    d = _rounded_up_f16(scale.amax(-1, keepdim=True) / 127)
    sc = torch.where(d > 0, torch.ceil(scale / d.clamp(min=1e-30)), 0).clamp(0, 127)
    step = (d * sc).unsqueeze(-1)
    q = (torch.where(step > 0, x / step.clamp(min=1e-30), 0).round().clamp(-31, 31) + 32).to(torch.uint8)
    q = q.reshape(-1, 256)
    ql = _pack_nibbles((q & 0x0F).reshape(-1, 2, 2, 64))
    qh = _pack_bits((q >> 4).reshape(-1, 2, 4, 32), 2)
    return torch.cat([ql, qh, sc.to(torch.int8).view(torch.uint8), _f16_bytes(d)], dim=1)


# ggml type name -> (block size, encoder)
GGUF_ENCODERS: dict[str, tuple[int, Callable[[torch.Tensor], torch.Tensor]]] = {
    "Q8_0": (32, encode_q8_0), "Q4_0": (32, encode_q4_0), "Q5_0": (32, encode_q5_0),
    "Q4_K": (256, encode_q4_k), "Q5_K": (256, encode_q5_k), "Q6_K": (256, encode_q6_k),
}
GGUF_KEEP_F32 = ("scale_shift_table",)  # city96's keys_hiprec for ltxv
GGUF_SMALL = 1024  # tensors of at most this many values stay F32 (city96's QUANTIZATION_THRESHOLD)


def write_gguf(source: Path, target: Path, qtype: str, *, with_config: bool = True,
               config: dict | None = None) -> tuple[Path, dict[str, torch.Tensor], dict[str, str]]:
    """A GGUF of ``source``'s transformer (``model.diffusion_model.`` stripped) in ``qtype``.

    Returns the path, the original tensors by GGUF name, and the ggml type written for each name."""
    import gguf
    from safetensors.torch import load_file

    from aiprod.loaders.safetensors_header import read_header

    tensors = {k.removeprefix(PREFIX): v for k, v in load_file(str(source)).items() if k.startswith(PREFIX)}
    writer = gguf.GGUFWriter(str(target), arch="ltxv")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if with_config:
        metadata = read_header(source).metadata
        writer.add_string("config", json.dumps(config) if config is not None else metadata["config"])
        writer.add_string("model_version", metadata.get("model_version", ""))
    block, encoder = GGUF_ENCODERS[qtype]
    types: dict[str, str] = {}
    for name, value in sorted(tensors.items()):
        data = value.float()
        if data.ndim == 1 or data.numel() <= GGUF_SMALL or any(k in name for k in GGUF_KEEP_F32):
            writer.add_tensor(name, data.numpy().astype(np.float32))
            types[name] = "F32"
        elif data.shape[-1] % block:
            writer.add_tensor(name, data.numpy().astype(np.float16))
            types[name] = "F16"
        else:
            encoded = encoder(data.reshape(-1, block)).reshape(*data.shape[:-1], -1)
            writer.add_tensor(name, encoded.numpy(), raw_dtype=getattr(gguf.GGMLQuantizationType, qtype))
            types[name] = qtype
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target, tensors, types
