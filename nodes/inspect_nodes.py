"""Inspection nodes: what a model file contains, read from its header without loading weights."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..loaders.detect import describe_file, format_report
from .model_files import model_choice_problem, model_file_options, resolve_model_file

__all__ = ["AIPRODCheckpointInspect"]

INSPECT_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders")


class AIPRODCheckpointInspect(io.ComfyNode):
    """Report a checkpoint's generation, components, tensor count and dtypes (header only)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODCheckpointInspect",
            display_name="AIPROD Checkpoint Inspect",
            category="AIPROD/loaders",
            description="Reads a .safetensors header and reports what the file contains: LTX-2 generation, "
            "components (transformer, video VAE, audio VAE, vocoder, text projection, connectors), "
            "tensor count and dtypes. No weights are loaded.",
            inputs=[
                io.Combo.Input(
                    "checkpoint",
                    options=model_file_options(INSPECT_FOLDERS),
                    tooltip="A file from the 'checkpoints', 'diffusion_models' or 'text_encoders' model folders.",
                ),
            ],
            outputs=[io.String.Output("report", tooltip="The report as text.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str) -> bool | str:
        return model_choice_problem("checkpoint", checkpoint, INSPECT_FOLDERS) or True

    @classmethod
    def execute(cls, checkpoint: str) -> io.NodeOutput:
        path = resolve_model_file("checkpoint", checkpoint, INSPECT_FOLDERS)
        report = format_report(describe_file(path))
        return io.NodeOutput(report, ui=ui.PreviewText(report))
