"""GGUF transformers: our reader against the gguf package's, files from city96-style conversion loaded through the
Diffusion Model Loader (listed there, and only there), within each block type's rounding, config from the GGUF
metadata or inferred from shapes (real LTX-2 / LTX-2.3 layouts), and every refusal by name."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from support import quant_files as qf

from aiprod.aiprod_core.transformer import TransformerConfig
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.gguf_config import gguf_config
from aiprod.loaders.gguf_file import read_gguf_header
from aiprod.loaders.quant.linear import QuantLinear
from aiprod.loaders.safetensors_header import TensorInfo

QTYPES = sorted(qf.GGUF_ENCODERS)


def gguf_bound(qtype: str, weight: torch.Tensor) -> torch.Tensor:
    """Per-element bound of |de-quantised - original| for the ggml type of ``weight`` (out, in)."""
    a, (rows, cols) = weight.abs(), weight.shape
    if qtype == "F32":
        return torch.zeros_like(a)
    if qtype == "F16":  # 10 mantissa bits: 2^-11 relative, subnormals below 2^-14 step 2^-24
        return 2**-11 * a + 2**-25
    block = 32 if qtype.endswith("_0") else 256
    amax = a.reshape(rows, cols // block, block).amax(-1, keepdim=True)
    # Q8_0: half a step of amax / 127 (the float16 scale adds < 2^-10 of it). Q4_0 / Q5_0: the block's signed max
    # is exactly -8 / -16 steps, the opposite side clamps at 7 / 15 steps: up to one step of amax / 8 / 16.
    # Our K-quant encoders: 6-bit sub-block scales never rounded down and 6-bit mins rounded to nearest, so half a
    # step ((max - min) / 15 or / 31 <= 2 amax / 15 or / 31, plus one scale quantum) plus half a min quantum
    # (amax / 126): 0.076 / 0.041 amax; Q6_K: half of (amax / 31 + one scale quantum) = 0.0164 amax.
    factor = {"Q8_0": 0.5 / 127 * (1 + 2**-9), "Q4_0": 1 / 8 * (1 + 2**-9), "Q5_0": 1 / 16 * (1 + 2**-9),
              "Q4_K": 0.08, "Q5_K": 0.045, "Q6_K": 0.017}[qtype]
    return (factor * amax).expand(rows, cols // block, block).reshape(rows, cols)


@pytest.fixture(scope="module")
def gguf_files(tiny_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {q: qf.write_gguf(tiny_set.ltx23, root / f"ltx-2.3-tiny-{q}.gguf", q) for q in QTYPES}


@pytest.mark.oracle
def test_reader_agrees_with_the_gguf_package(gguf_files):
    import gguf

    path, _, types = gguf_files["Q4_K"]
    ours, theirs = read_gguf_header(path), gguf.GGUFReader(str(path))
    assert ours.architecture == "ltxv" and ours.version == 3
    assert json.loads(ours.metadata["config"])["transformer"]["num_layers"] == 2
    assert set(ours.tensors) == {t.name for t in theirs.tensors} == set(types)
    from aiprod.loaders.mapped_file import MappedFile

    with MappedFile(ours) as mapped:
        for tensor in theirs.tensors:
            assert ours.ggml_types[tensor.name] == tensor.tensor_type.name == types[tensor.name]
            logical = tuple(int(d) for d in reversed(tensor.shape))
            quant = ours.quant_layers.get(tensor.name.removesuffix(".weight"))
            assert (quant.shape if quant is not None else ours.tensors[tensor.name].shape) == logical
            raw = mapped.tensor(tensor.name).reshape(-1).view(torch.uint8)
            assert torch.equal(raw, torch.from_numpy(np.array(tensor.data).reshape(-1).view(np.uint8)))


@pytest.mark.parametrize("qtype", QTYPES)
def test_gguf_transformer_loads_within_its_block_types_rounding(gguf_files, qtype):
    path, originals, types = gguf_files[qtype]
    upcast = load_component(path, "transformer", dtype=torch.float32, quantized_weights="upcast").module
    kept = load_component(path, "transformer", dtype=torch.float32, quantized_weights="keep").module
    state = upcast.state_dict()
    quantized = [k for k, t in types.items() if t == qtype and k in state]
    assert quantized and all(types[k] in ("F32", "F16") for k in state if k not in quantized)
    for key, value in state.items():
        original = originals[key].float()
        bound = gguf_bound(types[key], original) if original.ndim == 2 else torch.zeros_like(original)
        assert ((value - original).abs() <= bound + 1e-7).all(), key
    for key in quantized:
        layer = kept.get_submodule(key.removesuffix(".weight"))
        assert isinstance(layer, QuantLinear) and layer.weight.dtype == torch.uint8
        assert torch.equal(layer.dequantize(torch.float32), state[key])


def test_gguf_in_diffusion_models_is_listed_for_our_loader_only(comfy_cpu, tmp_path, gguf_files):
    import folder_paths

    from aiprod.nodes.loader_nodes import AIPRODDiffusionModelLoader

    path, _, _ = gguf_files["Q8_0"]
    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / path.name).symlink_to(path)
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(tmp_path / "unet")], {".safetensors"})
    folder_paths.filename_list_cache.clear()
    try:
        choice = path.name  # the file name first (one folder: ComfyUI's own name)
        assert choice in AIPRODDiffusionModelLoader.define_schema().inputs[0].options
        assert folder_paths.get_filename_list("diffusion_models") == []  # ComfyUI's own list is unchanged
        assert folder_paths.folder_names_and_paths["diffusion_models"][1] == {".safetensors"}
        assert choice in AIPRODDiffusionModelLoader.INPUT_TYPES()["required"]["model_file"][0]  # ComfyUI checks it
        model = AIPRODDiffusionModelLoader.execute(choice, "fp32", "keep").args[0]
        assert model.generation.startswith("LTX-2.3")
        assert isinstance(model.module().get_submodule("transformer_blocks.0.attn1.to_q"), QuantLinear)
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()


def test_gguf_without_config_names_what_is_missing(tiny_set, tmp_path):
    path, _, _ = qf.write_gguf(tiny_set.ltx23, tmp_path / "no-config.gguf", "Q8_0", with_config=False)
    with pytest.raises(CheckpointFormatError) as info:
        load_component(path, "transformer")
    message = str(info.value)
    assert message.startswith(f"{path}: has no `config` metadata, and its widths (video 64, audio 32, LTX-2.3 "
                              "tensors) match no known layout, so its transformer config cannot be inferred")
    assert "LTX-2 19B: video width 4096, audio width 2048" in message


def _real_shapes(generation: str) -> tuple[dict[str, TensorInfo], dict]:
    """The tensor table a real LTX-2 (19B) / LTX-2.3 (22B) transformer GGUF would have (shapes only)."""
    from aiprod.loaders.quant.formats import GGML_TYPES
    from aiprod.loaders.quant.layers import LayerQuant

    video, audio, heads = 4096, 2048, 32
    shapes = {"patchify_proj.weight": (video, 128), "audio_patchify_proj.weight": (audio, 128)}
    for block in range(48):
        shapes[f"transformer_blocks.{block}.attn1.to_q.weight"] = (video, video)
        if generation == "2.3":
            shapes[f"transformer_blocks.{block}.attn1.to_gate_logits.weight"] = (heads, video)
            shapes[f"transformer_blocks.{block}.audio_attn1.to_gate_logits.weight"] = (heads, audio)
    if generation == "2.0":
        shapes["caption_projection.linear_1.weight"] = (video, 3840)
    fmt = GGML_TYPES[12][1]
    quant = {k.removesuffix(".weight"): LayerQuant(k.removesuffix(".weight"), fmt, "GGUF", {"weight": k}, shape=s)
             for k, s in shapes.items() if k.endswith("to_q.weight")}
    tensors = {k: TensorInfo("F32", s, 4 * s[0] * s[1]) for k, s in shapes.items()}
    return tensors, quant


@pytest.mark.parametrize(("generation", "expected"), [
    ("2.0", {"num_layers": 48, "num_attention_heads": 32, "attention_head_dim": 128, "caption_channels": 3840,
             "apply_gated_attention": False}),
    ("2.3", {"num_layers": 48, "num_attention_heads": 32, "attention_head_dim": 128, "audio_attention_head_dim": 64,
             "apply_gated_attention": True, "cross_attention_adaln": True}),
])
def test_config_is_inferred_for_the_real_layouts(generation, expected):
    from aiprod.loaders.gguf_file import GGUFHeader

    tensors, quant = _real_shapes(generation)
    header = GGUFHeader(path="ltx.gguf", file_size=0, metadata={}, tensors=tensors, quant_layers=quant)
    config = gguf_config(header)
    built = TransformerConfig.from_metadata(config)
    assert built.inner_dim == 4096 and built.audio_inner_dim == 2048
    assert {k: getattr(built, k) for k in expected} == expected
    assert config["_inferred_from"] == ("LTX-2 19B" if generation == "2.0" else "LTX-2.3 22B")


def _gguf_with(tmp_path, name: str, qtype: int, data: np.ndarray, shape: tuple[int, ...]):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / name), arch="ltxv")
    writer.add_string("config", json.dumps({"transformer": {}}))
    writer.add_tensor("transformer_blocks.0.attn1.to_q.weight", data, raw_shape=shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tmp_path / name


def test_a_block_type_we_do_not_read_is_refused_by_name(tmp_path):
    import gguf

    path = _gguf_with(tmp_path, "iq4.gguf", gguf.GGMLQuantizationType.IQ4_NL, np.zeros((64, 36), np.uint8), (64, 36))
    expected = (r"iq4\.gguf: stores tensors as GGUF type\(s\) IQ4_NL \(e\.g\. `transformer_blocks\.0\.attn1\.to_q\."
                r"weight`\), which AIPROD does not de-quantise \(supported: Q4_0, .*Q6_K, F16, BF16, F32\)")
    with pytest.raises(CheckpointFormatError, match=expected):
        load_component(path, "transformer")
    from aiprod.loaders.detect import describe_file, format_report

    report = format_report(describe_file(path))
    assert "IQ4_NL (not supported) x1" in report and "Loads with: none: GGUF type(s) IQ4_NL" in report


@pytest.mark.parametrize(("payload", "match"), [
    (b"GGUF" + struct.pack("<I", 1) + bytes(16), r"is GGUF version 1; AIPROD reads versions 2 and 3"),
    (b"GGML" + bytes(20), r"is not a valid GGUF file \(no GGUF magic"),
    (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 0), r"is not a valid GGUF file \(1099511627776 tensors"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**50), r"string of 1125899906842624 bytes"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", 1) + b"w" + struct.pack("<I", 9),
     r"tensor 'w' with 9 dimensions"),
])
def test_hostile_headers_are_refused_before_anything_is_allocated(tmp_path, payload, match):
    path = tmp_path / "bad.gguf"
    path.write_bytes(payload + bytes(8))
    with pytest.raises(CheckpointFormatError, match=match):
        read_gguf_header(path)


def test_a_tensor_past_the_end_of_the_file_is_refused(gguf_files, tmp_path):
    path, _, _ = gguf_files["Q8_0"]
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[:-4096])
    with pytest.raises(CheckpointFormatError, match=r"truncated\.gguf: is truncated or damaged: tensor '.*' at data "
                                                    r"offset \d+ \(\d+ bytes\) does not fit"):
        read_gguf_header(truncated)


@pytest.mark.parametrize(("raw", "match"), [
    ("[" * 100_000 + "]" * 100_000, r"has a `config` key-value nested more than 64 levels deep"),
    ('{"transformer": ', r"has a `config` key-value that is not valid JSON"),
    ("[1, 2]", r"has a `config` key-value that is not a JSON object"),
])
def test_config_key_value_that_is_not_an_object_is_named(raw, match):
    """A hostile `config` string (JSON nested 100,000 deep) is a CheckpointFormatError, not a RecursionError."""
    from aiprod.loaders.gguf_file import GGUFHeader

    header = GGUFHeader(path="ltx.gguf", file_size=0, metadata={"config": raw}, tensors={}, quant_layers={})
    with pytest.raises(CheckpointFormatError, match=r"^ltx\.gguf: " + match):
        gguf_config(header)
