"""Text-encoder LoRA node: a LoRA for the Gemma text encoder (ComfyUI's ``text_encoders.gemma3_12b.*`` LoRAs,
PEFT / kohya variants), stacked on a TEXT_ENCODER and fused into the Gemma weights when Gemma loads.

The transformer's LoRA nodes (AIPROD LoRA Loader, IC-LoRA Loader) live in `loader_nodes`.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..loaders.lora_apply import check_text_encoder_lora, gemma_lora_transform
from .inputs import choice_input
from .loader_nodes import CATEGORY, LORAS, MAX_LORA_STRENGTH
from .model_files import model_file_options, resolve_model_file
from .types import LazyModule, TextEncoder, TextEncoderSocket

__all__ = ["AIPRODTextEncoderLoraLoader", "text_encoder_with_lora"]


def text_encoder_with_lora(encoder: TextEncoder, path: str, strength: float) -> TextEncoder:
    """``encoder`` with the LoRA at ``path`` stacked on its Gemma (checked against its header now, fused when
    Gemma loads; the encoder without it stays as it was)."""
    if encoder.load_gemma is None or encoder.gemma_path is None:
        raise ValueError(f"text_encoder={encoder.label!r}: this text encoder cannot take LoRAs (it was not made by "
                         "the AIPROD Text Encoder Loader)")
    if strength != 0:  # a LoRA for another model (or the transformer) fails here, before Gemma loads
        check_text_encoder_lora(path, encoder.gemma_path)
    loras = (*encoder.loras, (path, strength))
    gemma_path, load_gemma = encoder.gemma_path, encoder.load_gemma

    def load():
        transform, _ = gemma_lora_transform(gemma_path, list(loras))
        return load_gemma(transform)

    gemma = LazyModule(load, f"gemma {encoder.label} + {len(loras)} LoRA(s)")
    return TextEncoder(gemma, encoder.processor, encoder.label, gemma_path, loras, load_gemma)


class AIPRODTextEncoderLoraLoader(io.ComfyNode):
    """Adds a text-encoder (Gemma) LoRA to a text encoder (stackable; fused into Gemma when it loads)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTextEncoderLoraLoader",
            display_name="AIPROD Text Encoder LoRA Loader",
            category=CATEGORY,
            description="Adds a LoRA for the Gemma-3 text encoder (e.g. ComfyUI's gemma-3-12b-it-abliterated "
            "LoRA; ComfyUI text_encoders.gemma3_12b.*, PEFT or kohya lora_te_ key names) at a strength. Chain "
            "several; Gemma is loaded once with every LoRA fused. Transformer LoRAs go to the AIPROD LoRA Loader.",
            inputs=[
                TextEncoderSocket.Input("text_encoder", tooltip="The text encoder to apply the LoRA to (chain "
                                        "text-encoder LoRA nodes to stack them)."),
                choice_input("lora", model_file_options(LORAS), "A text-encoder (Gemma) LoRA file from models/loras."),
                io.Float.Input("strength", default=1.0, min=-MAX_LORA_STRENGTH, max=MAX_LORA_STRENGTH, step=0.01,
                               tooltip="LoRA strength on the text encoder (0 disables it, negative inverts it)."),
            ],
            outputs=[TextEncoderSocket.Output(display_name="text_encoder",
                                              tooltip="The text encoder with the LoRA added to its Gemma.")],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoder, lora: str, strength: float) -> io.NodeOutput:
        path = resolve_model_file("lora", lora, LORAS)
        return io.NodeOutput(text_encoder_with_lora(text_encoder, path, strength))
