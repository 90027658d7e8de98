"""Standard layers that skip their random initialisation when built on the meta device (and a faster CPU Conv3d).

Every model in the core is constructed on the meta device and then receives its weights from a file
(``load_state_dict(assign=True)``). ``nn.Linear`` still runs its Kaiming initialisation on those meta tensors,
which goes through PyTorch's Python decompositions: about 0.3 ms per layer, a quarter of a second for a 24-block
transformer, all of it thrown away. These subclasses keep the state-dict keys, ``isinstance`` checks and
behaviour of their parents and only skip that work on meta tensors (a real-device construction is initialised
as usual). No global patching, so construction stays thread-safe.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv3d", "Linear", "onednn_usable"]


class Linear(nn.Linear):
    """``nn.Linear`` whose ``reset_parameters`` does nothing on the meta device."""

    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        super().reset_parameters()


def _onednn_bf16_supported() -> bool:
    """oneDNN's bf16 convolution needs AVX512-BF16-class CPUs (avx512bw/vl/dq or avx_ne_convert)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe is not None and probe())


def onednn_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` by ``weight`` may run through oneDNN: CPU float32 inference, and bfloat16
    where this CPU has oneDNN's bf16 kernels."""
    return (
        x.device.type == "cpu"
        and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _onednn_bf16_supported()))
        and weight.dtype == x.dtype
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (B, C_in, F, H, W) -> (B, C_out, F', H', W') with no initialisation on the meta device and,
    for CPU inference, oneDNN's kernel: float32 ``nn.Conv3d`` on CPU runs PyTorch's im2col ``slow_conv3d`` in this
    torch build, 3-6x slower than ``aten.mkldnn_convolution`` on the same weights (equal to float32 rounding).
    Zero padding given as numbers only; anything else takes the standard path."""

    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        super().reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros" and not isinstance(self.padding, str) and onednn_usable(x, self.weight):
            return torch.ops.aten.mkldnn_convolution(
                x.contiguous(), self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation),
                self.groups,
            )
        return super().forward(x)
