"""The loaders' ``quantized_weights`` input (upcast / keep) and its former name ``fp8`` in saved workflows."""

from __future__ import annotations

from comfy_api.latest import io

from .inputs import choice_input

__all__ = ["LEGACY_QUANT_INPUT", "QUANT_INPUT", "QUANT_MODES", "quant_input", "quant_mode", "quant_problem"]

QUANT_MODES = ("upcast", "keep")
QUANT_INPUT = "quantized_weights"
LEGACY_QUANT_INPUT = "fp8"  # the option's name before quantized formats other than fp8 were supported


def quant_input() -> io.Combo.Input:
    return choice_input(QUANT_INPUT, QUANT_MODES, default="upcast", optional=True,
                        tooltip="Quantized files (fp8, NVFP4, MXFP8, int8 / ConvRot, GGUF): 'upcast' de-quantises "
                        "the weights to the weight dtype while loading; 'keep' holds the quantized bytes (fp8 / "
                        "int8: half the memory of bf16, 4-bit formats: about a quarter) and de-quantises each "
                        "layer for its own matmul. No effect on files without quantized layers.")


def quant_problem(quantized_weights: str | None) -> str | None:
    if quantized_weights is None or quantized_weights in QUANT_MODES:
        return None
    return f"{QUANT_INPUT}={quantized_weights!r}, expected one of {', '.join(QUANT_MODES)}"


def quant_mode(node: type[io.ComfyNode], quantized_weights: str | None) -> str:
    """The chosen mode; a workflow saved before the rename carries it as ``fp8`` in its prompt (API format)."""
    if quantized_weights is None:
        hidden = getattr(node, "hidden", None)
        prompt, unique_id = getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)
        inputs = (prompt or {}).get(str(unique_id), {}).get("inputs", {}) if isinstance(prompt, dict) else {}
        quantized_weights = inputs.get(LEGACY_QUANT_INPUT, "upcast")
        if quantized_weights not in QUANT_MODES:
            raise ValueError(f"{LEGACY_QUANT_INPUT}={quantized_weights!r}, expected one of {', '.join(QUANT_MODES)}"
                             f" (now named {QUANT_INPUT})")
    problem = quant_problem(quantized_weights)
    if problem:
        raise ValueError(problem)
    return quantized_weights
