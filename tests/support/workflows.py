"""Example workflows: load the API-format twins and convert UI-format templates to API graphs.

The conversion follows what ComfyUI's frontend does when it queues a UI graph: widget values are taken in
input order from ``widgets_values`` (a socket-converted widget keeps its slot there), links become
``[source_node_id, output_index]``, and seed-like INT widgets carry one extra "control after generate" slot.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["EXAMPLES_DIR", "TEMPLATE_NAMES", "api_workflows", "ui_templates", "ui_to_api"]

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_workflows"
# template id (its API twin's name in example_workflows/api/) -> the UI template's file name. The template browser
# of the ComfyUI frontend (1.32) shows a custom node's template by its file name, as the title and (dashes and
# underscores read as spaces) the description: the names say what each template does.
TEMPLATE_NAMES = {
    "text_to_video": "LTX-2.3 Text to Video with Step Nodes",
    "two_stage": "LTX-2.3 Two-Stage Text to Video",
    "distilled": "LTX-2.3 Distilled Fast Text to Video",
    "ic_lora": "LTX-2.3 IC-LoRA Control Video",
    "keyframe_interpolation": "LTX-2.3 Keyframe Interpolation",
    "two_stage_hq": "LTX-2.3 HQ Two-Stage Text to Video",
    "audio_to_video": "LTX-2.3 Audio to Video",
    "text_to_audio": "LTX-2.3 Text to Audio",
    "retake": "LTX-2.3 Retake a Time Window of a Video",
    "extend": "LTX-2.3 Extend a Video",
    "dfr": "LTX-2.5 DFR Text to Video with Temporal Upscaling",
    "inspect_checkpoint": "Inspect an LTX Model File",
    "distilled_ltx25": "LTX-2.5 Distilled Text to Video",
    "two_stage_ltx25": "LTX-2.5 Two-Stage Text to Video",
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NON_EXECUTING_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
MUTED_MODES = {2, 4}  # never / bypass
SEED_NAMES = {"seed", "noise_seed"}


def ui_templates() -> dict[str, dict]:
    """{template id: UI workflow} of every template (`TEMPLATE_NAMES`)."""
    return {key: json.loads((EXAMPLES_DIR / f"{name}.json").read_text()) for key, name in TEMPLATE_NAMES.items()}


def api_workflows() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((EXAMPLES_DIR / "api").glob("*.json"))}


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _has_control_slot(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return bool(options.get("control_after_generate")) or (spec[0] == "INT" and name in SEED_NAMES)


def _node_inputs(node: dict, info: dict, links: dict[int, tuple[int, int]]) -> dict:
    linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
    widgets = iter(node.get("widgets_values", []))
    inputs: dict = {}
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            spec = info["input"][section][name]
            if _is_widget(spec):
                value = next(widgets)
                if _has_control_slot(name, spec):
                    next(widgets)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                source_id, slot = linked[name]
                inputs[name] = [str(source_id), slot]
    return inputs


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to the API-format prompt ComfyUI would queue for it."""
    links = {link[0]: (link[1], link[2]) for link in ui.get("links", [])}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in NON_EXECUTING_TYPES or node.get("mode", 0) in MUTED_MODES:
            continue
        if node["type"] not in object_info:
            raise KeyError(f"node type {node['type']!r} (node {node['id']}) is not in /object_info")
        prompt[str(node["id"])] = {"class_type": node["type"],
                                   "inputs": _node_inputs(node, object_info[node["type"]], links)}
    return prompt
