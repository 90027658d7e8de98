"""The reusable hook other loaders use (`quant.fit.fit_quantized_layers` + `check_keys` + `stream_tensors`): a
module with its own key layout (here Gemma-style names) loads a ComfyUI ``_fp4_mixed``-style file (nvfp4 layers,
float8 layers and dense ones, ``comfy_quant`` markers) in both modes, with the same numbers either way."""

from __future__ import annotations

import pytest
import torch
from support import quant_files as qf
from torch import nn

from aiprod.loaders.component_loader import check_keys, stream_tensors
from aiprod.loaders.key_maps import KeyMap
from aiprod.loaders.quant.fit import fit_quantized_layers
from aiprod.loaders.quant.linear import QuantLinear
from aiprod.loaders.safetensors_header import read_header

LAYOUT = KeyMap("TEST_GEMMA_MAP", renames=(("model.", ""),))


class TinyDecoder(nn.Module):
    """Two Gemma-like layers: attention projections and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict({
            "q_proj": nn.Linear(64, 64, bias=False, device="meta"),
            "o_proj": nn.Linear(64, 64, bias=False, device="meta"),
            "up_proj": nn.Linear(64, 128, bias=False, device="meta"),
            "down_proj": nn.Linear(128, 64, bias=False, device="meta"),
        }) for _ in range(2))
        self.norm = nn.RMSNorm(64, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer["o_proj"](layer["q_proj"](x))
            x = x + layer["down_proj"](torch.relu(layer["up_proj"](x)))
        return self.norm(x)


def _mixed_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    tensors, dense = {"model.norm.weight": torch.ones(64)}, {}
    for i in range(2):
        for name, shape in (("q_proj", (64, 64)), ("o_proj", (64, 64)), ("up_proj", (128, 64)),
                            ("down_proj", (64, 128))):
            key = f"model.layers.{i}.{name}"
            weight = torch.randn(shape, generator=gen) * 0.1
            kind = {"q_proj": "nvfp4", "up_proj": "nvfp4", "o_proj": "float8_e4m3fn"}.get(name)
            if kind is None:  # dense, as the mixed files keep some layers
                tensors[f"{key}.weight"] = weight.bfloat16()
                continue
            quantizer, config = qf.QUANTIZERS[kind]
            tensors.update({f"{key}.{s}": t for s, t in quantizer(weight).items()})
            tensors[f"{key}.comfy_quant"] = qf._json_tensor(config)
            dense[f"layers.{i}.{name}.weight"] = kind
    return qf.write_safetensors(tmp_path / "gemma_fp4_mixed.safetensors", tensors), dense


@pytest.mark.parametrize("mode", ["keep", "upcast"])
def test_a_module_of_another_layout_fits_a_mixed_quantized_file(tmp_path, mode):
    path, quantized = _mixed_file(tmp_path)
    header = read_header(path)
    results = {}
    for run_mode in ("upcast", mode):
        module = TinyDecoder()
        keys = LAYOUT.select(header.tensors)
        fit = fit_quantized_layers(module, header, keys, run_mode)
        assert set(fit.kept or fit.upcast) == set(quantized)
        expected = module.state_dict(keep_vars=True)
        check_keys(str(path), "tiny decoder", LAYOUT, keys, fit.shown_tensors(header.tensors, keys), expected)
        targets = {k: v.dtype if k in fit.held or not v.is_floating_point() else torch.float32
                   for k, v in expected.items()}
        module.load_state_dict(stream_tensors(header, keys, targets, torch.device("cpu"), quant=fit.upcast),
                               strict=True, assign=True)
        if run_mode == "keep":
            assert all(isinstance(module.get_submodule(k.removesuffix(".weight")), QuantLinear) for k in quantized)
            assert module.layers[0]["q_proj"].weight.dtype == torch.uint8
            assert module.layers[0]["o_proj"].weight.dtype == torch.float8_e4m3fn
        x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            results[run_mode] = module(x)
    assert torch.equal(results["upcast"], results[mode])
