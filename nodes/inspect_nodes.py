"""Inspection nodes: what a model file contains, read from its header without loading weights."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..loaders.detect import describe_file, format_report
from .inputs import choice_input
from .model_files import model_file_options, resolve_model_file

__all__ = ["AIPRODCheckpointInspect"]

INSPECT_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders")


class AIPRODCheckpointInspect(io.ComfyNode):
    """Report a checkpoint's generation, components, tensor count, dtypes, quantization formats and the node that
    loads it (header only; safetensors and GGUF)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODCheckpointInspect",
            display_name="AIPROD Checkpoint Inspect",
            category="AIPROD/loaders",
            description="Reads a .safetensors or .gguf header and reports what the file contains: LTX-2 generation, "
            "components (transformer, video VAE, audio VAE, vocoder, text projection, connectors), tensor count and "
            "dtypes, the quantization format of each part, and which AIPROD loader takes the file. No weights are "
            "loaded.",
            inputs=[
                choice_input("checkpoint", model_file_options(INSPECT_FOLDERS),
                             "A file from the 'checkpoints', 'diffusion_models' or 'text_encoders' model folders "
                             "(.safetensors or .gguf)."),
            ],
            outputs=[io.String.Output("report", display_name="report",
                                      tooltip="The report as text: connect 'Preview as Text' (core) to read it.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, checkpoint: str) -> io.NodeOutput:
        path = resolve_model_file("checkpoint", checkpoint, INSPECT_FOLDERS)
        report = format_report(describe_file(path))
        return io.NodeOutput(report, ui=ui.PreviewText(report))
