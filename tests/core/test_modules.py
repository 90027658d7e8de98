"""aiprod_core.modules: meta construction skips initialisation; CPU Conv3d takes oneDNN and equals PyTorch's own."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from aiprod.aiprod_core.modules import Conv3d, Linear
from aiprod.aiprod_core.video_vae.layers import CausalConv3d

pytestmark = pytest.mark.filterwarnings("ignore:Warning. Profiler clears events:UserWarning")


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def test_linear_on_meta_and_on_cpu():
    meta = Linear(8, 4, device="meta")
    assert meta.weight.is_meta and isinstance(meta, torch.nn.Linear)
    torch.manual_seed(0)
    real = Linear(64, 32)
    bound = 1 / 8  # kaiming_uniform(a=sqrt(5)) on fan_in 64: U(-1/sqrt(64), 1/sqrt(64))
    assert 0 < real.weight.abs().max() <= bound and real.weight.std() > bound / 4  # initialised as usual
    assert set(meta.state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("stride", "padding"), [(1, 1), ((1, 2, 2), (0, 1, 1))])
def test_conv3d_onednn_matches_pytorch(dtype, stride, padding):
    torch.manual_seed(0)
    conv = Conv3d(6, 5, 3, stride=stride, padding=padding).to(dtype)
    x = torch.randn(2, 6, 4, 9, 10, dtype=dtype)
    expected = torch.nn.functional.conv3d(x.float(), conv.weight.float(), conv.bias.float(), stride, padding)
    with torch.inference_mode():
        ops = _ops(lambda: conv(x))
        got = conv(x)
    onednn_expected = dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert ("aten::mkldnn_convolution" in ops) == onednn_expected  # bf16 needs the CPU's oneDNN bf16 kernels
    if onednn_expected:
        assert "aten::slow_conv3d_forward" not in ops
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert (got.float() - expected).abs().max() <= tolerance * max(1.0, expected.abs().max().item())
    with torch.no_grad():  # autograd-capable path unchanged when weights require grad
        assert torch.allclose(conv(x.float().to(dtype)).float(), got.float(), atol=tolerance * 10)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_causal_conv3d_onednn_route_equals_standard_route(padding_mode):
    torch.manual_seed(1)
    layer = CausalConv3d(4, 6, 3, padding_mode=padding_mode)
    x = torch.randn(1, 4, 5, 7, 8)
    reference = layer(x, causal=False)  # grad enabled, weights require grad: nn.Conv3d's own path
    with torch.inference_mode():
        ops = _ops(lambda: layer(x, causal=False))
        fast = layer(x, causal=False)
    assert "aten::mkldnn_convolution" in ops
    assert (fast - reference).abs().max() <= 1e-5 * max(1.0, reference.abs().max().item())
