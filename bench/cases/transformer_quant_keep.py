"""One transformer forward with quantized weights kept (``quantized_weights="keep"``) vs the dense forward.

"ours": every Linear of the transformer blocks held quantized in a `QuantLinear` (variant ``int8``: ComfyUI's
int8_tensorwise, int8 + a scalar scale; ``fp8``: float8_e4m3fn + a scalar scale), de-quantised for its own
matmul; "ref": the same weights de-quantised once into plain Linears (the ``upcast`` result). Same sizes, inputs
and warm-up as `transformer_forward`. The worker reports time and peak RSS; ``weights_mb`` is the module's
parameter + buffer bytes (what a GPU would hold for it), and ``bf16_weights_mb`` what the dense module holds in
bf16.

Computed in float32 (the rest of the model float32 on both sides): this CPU has no bf16 matmul instructions (no
AVX-512 BF16); a bf16 GEMM of the case's shapes ran 4-5x slower than the float32 one (in-process A/B, 868 x 512 @
512 x 2048: 1.1-1.3 s vs 0.22-0.26 s for 20 calls), which would time the bf16 emulation, not the quantized layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .transformer_forward import _streams, ours_model

VARIANTS = ("int8", "fp8")


def _quantized(weight: torch.Tensor, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(stored weight, scalar scale) in ComfyUI's int8_tensorwise / float8_e4m3fn layouts."""
    limit = 127.0 if variant == "int8" else torch.finfo(torch.float8_e4m3fn).max
    scale = weight.abs().amax().float() / limit
    if variant == "int8":
        return (weight / scale).round().clamp(-128, 127).to(torch.int8), scale
    return (weight / scale).to(torch.float8_e4m3fn), scale


def models(variant: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(kept, dense): the transformer with its block Linears quantized, kept vs de-quantised to bf16."""
    from aiprod.loaders.quant.formats import COMFY_FORMATS
    from aiprod.loaders.quant.linear import LayerSpec, QuantLinear, swap_in_quant_linears

    fmt = COMFY_FORMATS["int8_tensorwise" if variant == "int8" else "float8_e4m3fn"]
    dense = ours_model()
    names = [n for n, m in dense.named_modules() if n.startswith("transformer_blocks.") and
             isinstance(m, torch.nn.Linear)]
    stored = {n: _quantized(dense.get_submodule(n).weight.float(), variant) for n in names}
    kept = ours_model()
    specs = {n: LayerSpec(fmt, (q.dtype, tuple(q.shape)), {"weight_scale": (torch.float32, ())})
             for n, (q, _) in stored.items()}
    swap_in_quant_linears(kept, {n: s for n, s in specs.items()})
    for name, (q, scale) in stored.items():
        layer: QuantLinear = kept.get_submodule(name)
        layer.weight = torch.nn.Parameter(q, requires_grad=False)
        layer.weight_scale = scale.reshape(())
        layer.bias = torch.nn.Parameter(dense.get_submodule(name).bias.detach().clone(), requires_grad=False)
        dense.get_submodule(name).weight.data = layer.dequantize(torch.float32)  # the upcast result
    return kept.eval(), dense.eval()


def weights_mb(module: torch.nn.Module, dense_dtype: torch.dtype | None = None) -> float:
    """Parameter + buffer MiB; ``dense_dtype``: with every floating tensor counted in that dtype instead."""
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        dense = dense_dtype is not None and tensor.is_floating_point() and tensor.dtype.itemsize > 1
        total += tensor.numel() * (dense_dtype.itemsize if dense else tensor.element_size())
    return total / 2**20


def prepare(side: str, variant: str) -> Callable[[], object]:
    from aiprod.aiprod_core.transformer import ModalityInput

    variant = variant or "int8"
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}, expected one of {VARIANTS}")
    kept, dense = models(variant)
    model = kept if side == "ours" else dense
    del kept, dense  # only the measured side stays resident
    video, audio = _streams(batch=1)
    forward = lambda: model(ModalityInput(**video), ModalityInput(**audio))  # noqa: E731
    forward()  # warm-up (see transformer_forward)
    forward.report = {"weights_mb": round(weights_mb(model), 2),  # type: ignore[attr-defined]
                      "bf16_weights_mb": round(weights_mb(model, torch.bfloat16), 2)}
    return forward
