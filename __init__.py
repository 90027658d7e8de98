"""AIPROD: LTX-2 / LTX-2.3 audio+video generation for ComfyUI.

ComfyUI imports this folder as a package. The mappings below are static literals so ComfyUI Manager's
scanner can read them; node classes are V3 (``comfy_api.latest``) and carry V1 shims.
"""

from .nodes.inspect_nodes import AIPRODCheckpointInspect

NODE_CLASS_MAPPINGS = {
    "AIPRODCheckpointInspect": AIPRODCheckpointInspect,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "AIPRODCheckpointInspect": "AIPROD Checkpoint Inspect",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
