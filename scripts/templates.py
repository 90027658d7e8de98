"""Lay out the example workflows (the ComfyUI templates) and write their API twins and thumbnails.

Each template names the official LTX-2.3 or LTX-2.5 files it is for and carries a Note saying where each file goes; this
script sets those names, sizes every node to what the real frontend computes for it (headless Chromium against a
running ComfyUI, `tests/browser/chromium.py`), places the nodes in data-flow columns so nothing overlaps at the
default zoom, writes ``example_workflows/api/<id>.json`` (the prompt the frontend queues for the template) and
``example_workflows/<name>.jpg`` (the laid-out graph as the frontend draws it: the template browser's thumbnail).
The template names (`support.workflows.TEMPLATE_NAMES`) are what the template browser shows as title and
description.

Run with a ComfyUI that has the pack and the demo models installed:
``python scripts/templates.py http://127.0.0.1:8188``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
from browser.chromium import chromium, open_comfy, wait_for  # noqa: E402  (after the path setup)
from support.comfy_host import ComfyClient  # noqa: E402
from support.workflows import TEMPLATE_NAMES, ui_to_api  # noqa: E402

log = logging.getLogger("aiprod.templates")
EXAMPLES = REPO_ROOT / "example_workflows"
COLUMN_GAP, ROW_GAP, MARGIN = 60, 40, 40
NODE_WIDTH, NOTE_WIDTH = 360, 420
THUMBNAIL_WIDTH = 640

DEV = "ltx-2.3-22b-dev.safetensors"
DISTILLED = "ltx-2.3-22b-distilled.safetensors"
GEMMA = "gemma-3-12b-it-qat-q4_0-unquantized"
UPSCALER = "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"
DISTILLED_LORA = "ltx-2.3-22b-distilled-lora-384.safetensors"
IC_LORA = "ltx-2.3-22b-ic-lora-union-control-ref0.5.safetensors"
DIT25 = "ltx-2.5-22b-distilled-transformer-bf16.safetensors"
GEMMA4 = "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors"
VAE25 = "ltx-2.5-video-vae-bf16.safetensors"
AUDIO_VAE25 = "ltx-2.5-audio-vae-bf16.safetensors"
SPATIAL25 = "ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors"
TEMPORAL25 = "ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0.safetensors"
LTX25_FILES = (DIT25, GEMMA4, VAE25, AUDIO_VAE25, SPATIAL25, TEMPORAL25)
WHERE = {  # file -> where it goes and where it comes from
    DEV: ("models/checkpoints/", "Lightricks/LTX-2.3"),
    DISTILLED: ("models/checkpoints/", "Lightricks/LTX-2.3"),
    GEMMA: ("models/text_encoders/ (the whole folder)", "google/gemma-3-12b-it-qat-q4_0-unquantized"),
    UPSCALER: ("models/latent_upscale_models/", "Lightricks/LTX-2.3"),
    DISTILLED_LORA: ("models/loras/", "Lightricks/LTX-2.3"),
    IC_LORA: ("models/loras/", "Lightricks/LTX-2.3-22b-IC-LoRA-Union-Control"),
    DIT25: ("models/diffusion_models/", "Lightricks/LTX-2.5"),
    GEMMA4: ("models/text_encoders/", "Lightricks/LTX-2.5"),
    VAE25: ("models/vae/", "Lightricks/LTX-2.5"),
    AUDIO_VAE25: ("models/vae/", "Lightricks/LTX-2.5"),
    SPATIAL25: ("models/latent_upscale_models/", "Lightricks/LTX-2.5"),
    TEMPORAL25: ("models/latent_upscale_models/", "Lightricks/LTX-2.5"),
}
# LTX-2.5: one file per component (Lightricks/LTX-2.5); the Gemma-4 file bundles the text projection, the
# transformer file holds the text connectors.
DEV25 = "ltx-2.5-22b-dev-transformer-bf16.safetensors"
DISTILLED25 = "ltx-2.5-22b-distilled-transformer-bf16.safetensors"
GEMMA25 = "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors"
VIDEO_VAE25 = "ltx-2.5-video-vae-bf16.safetensors"
VIDEO_VAE_CONV25 = "ltx-2.5-video-vae-conv-bf16.safetensors"
AUDIO_VAE25 = "ltx-2.5-audio-vae-bf16.safetensors"
UPSCALER25 = "ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors"
DISTILLED_LORA25 = "ltx-2.5-22b-distilled-lora-450-bf16.safetensors"
WHERE |= {
    DEV25: ("models/diffusion_models/", "Lightricks/LTX-2.5"),
    DISTILLED25: ("models/diffusion_models/", "Lightricks/LTX-2.5"),
    GEMMA25: ("models/text_encoders/", "Lightricks/LTX-2.5"),
    VIDEO_VAE25: ("models/vae/", "Lightricks/LTX-2.5"),
    VIDEO_VAE_CONV25: ("models/vae/", "Lightricks/LTX-2.5"),
    AUDIO_VAE25: ("models/vae/", "Lightricks/LTX-2.5"),
    UPSCALER25: ("models/latent_upscale_models/", "Lightricks/LTX-2.5"),
    DISTILLED_LORA25: ("models/loras/", "Lightricks/LTX-2.5"),
}

# template -> (checkpoint, the other files it names, what it does)
TEMPLATES = {
    "text_to_video": (DEV, (GEMMA,), "Text to video, step by step: empty latent, sampler with the guider, video "
                      "and audio decode. For image-to-video add 'AIPROD Image / Keyframe Condition' after the empty "
                      "latent and connect the video VAE to the sampler."),
    "two_stage": (DEV, (GEMMA, UPSCALER, DISTILLED_LORA), "Two-stage pipeline: a guided stage at half size, x2 latent "
                  "upsample, 3 refinement steps by the model with the distilled LoRA."),
    "distilled": (DISTILLED, (GEMMA, UPSCALER), "Distilled two-stage pipeline (8 + 3 steps, no CFG): the fastest "
                  "path."),
    "ic_lora": (DISTILLED, (GEMMA, UPSCALER, IC_LORA), "IC-LoRA control video: stage 1 with the IC-LoRA and the "
                "reference video (replace the grey Empty Image with your control frames, e.g. depth or pose), "
                "stage 2 by the base model."),
    "keyframe_interpolation": (DEV, (GEMMA, UPSCALER, DISTILLED_LORA), "Keyframe interpolation: each image of the "
                               "batch is a keyframe at its frame index ('0, -1' = first and last frame); replace "
                               "the two Empty Images with your keyframes."),
    "two_stage_hq": (DEV, (GEMMA, UPSCALER, DISTILLED_LORA), "HQ two-stage pipeline: the res_2s second-order "
                     "sampler in both stages (two model calls per step, 15 steps), the dev model with the distilled "
                     "LoRA at 0.25 for stage 1 and at 0.5 for the refinement; default guidance the HQ preset."),
    "audio_to_video": (DEV, (GEMMA, UPSCALER, DISTILLED_LORA), "Audio to video: your track drives the video (pick "
                       "it in 'Load Audio'; any sample rate, mono or stereo, at least frames / fps seconds from "
                       "start_time). The audio is encoded and kept fixed; the video is generated at half size, "
                       "upsampled x2 and refined; the saved audio is your track itself."),
    "text_to_audio": (DEV, (GEMMA,), "Text to audio: sound alone from the prompt, frames / fps seconds. 'AIPROD "
                      "Audio-Only Model' loads only the audio branch (the video weights are never read); the result "
                      "is saved as WAV (or FLAC)."),
    "retake": (DISTILLED, (GEMMA,), "Retake: regenerate one time window of a clip (pick it in 'Load Video': frames "
               "8k+1, width and height multiples of 32) from the prompt and keep the rest. start_time / end_time "
               "sit on latent-frame boundaries (0, 1/fps, 9/fps, 17/fps, ...); regenerate_video / regenerate_audio "
               "choose the streams."),
    "extend": (DISTILLED, (GEMMA,), "Extend a video: continue a clip (pick it in 'Load Video': frames 8k+1, width "
               "and height multiples of 32) by extend_frames frames with its audio; the continuation sees the last "
               "context_frames frames and is appended to the untouched source."),
    "dfr": (DIT25, (GEMMA4, VAE25, AUDIO_VAE25, SPATIAL25, TEMPORAL25), "DFR (LTX-2.5 only): stage 1 at half size "
            "generates the video with keyframe slots (single frames every 24 or 32 frames), stage 2 re-renders it "
            "at full size, then temporal_rounds (0-2) double the frame rate with the temporal upscaler: (frames - "
            "1) x 2^rounds + 1 frames at fps x 2^rounds (here 241 frames at 48 fps). For the detailing IC-LoRA, "
            "connect 'AIPROD IC-LoRA Loader' (the LoRA at 0.5) on the model to 'detailing_model'."),
    "inspect_checkpoint": (DEV, (), "Inspect a model file: which LTX generation, which components, tensor count "
                           "and dtypes, read from its header (nothing is loaded). Pick any file and press Run; the "
                           "report shows in 'Preview as Text'."),
    "distilled_ltx25": (DISTILLED25, (GEMMA25, VIDEO_VAE25, AUDIO_VAE25, UPSCALER25), "LTX-2.5 distilled "
                        "two-stage pipeline (8 + 3 steps, no CFG; stage 1 ancestral, as Lightricks samples 2.5) "
                        "with the diffusion video decoder (sharper; ltx-2.5-video-vae-conv-bf16 decodes in one "
                        "pass, faster). For 'auto' frames add 'AIPROD Duration Head Loader' "
                        "(ltx-2.5-duration-head-bf16, models/model_patches/) and 'AIPROD Predict Frames' and "
                        "connect its frames to the pipeline's."),
    "two_stage_ltx25": (DEV25, (GEMMA25, VIDEO_VAE_CONV25, AUDIO_VAE25, UPSCALER25, DISTILLED_LORA25),
                        "LTX-2.5 two-stage pipeline: a guided stage at half size, x2 latent upsample, 3 refinement "
                        "steps by the dev model with the distilled LoRA; the conv video decoder (one pass; "
                        "ltx-2.5-video-vae-bf16 is the diffusion decoder, sharper)."),
}
# template -> {widget role: file} for the LTX-2.5 templates (split files: no single checkpoint)
SPLIT_FILES = {
    "distilled_ltx25": {"model_file": DISTILLED25, "vae": f"{VIDEO_VAE25} (vae)", "audio_vae": f"{AUDIO_VAE25} (vae)",
                        "gemma": GEMMA25, "projection": f"{GEMMA25} (text_encoders)",
                        "connectors": f"{DISTILLED25} (diffusion_models)", "upsampler": UPSCALER25},
    "two_stage_ltx25": {"model_file": DEV25, "vae": f"{VIDEO_VAE_CONV25} (vae)", "audio_vae": f"{AUDIO_VAE25} (vae)",
                        "gemma": GEMMA25, "projection": f"{GEMMA25} (text_encoders)",
                        "connectors": f"{DEV25} (diffusion_models)", "upsampler": UPSCALER25,
                        "lora": DISTILLED_LORA25},
    "dfr": {"model_file": DIT25, "vae": f"{VAE25} (vae)", "audio_vae": f"{AUDIO_VAE25} (vae)", "gemma": GEMMA4,
            "projection": f"{GEMMA4} (text_encoders)", "connectors": f"{DIT25} (diffusion_models)",
            "upsampler": SPATIAL25},
}
# node type -> the widget slots that name model files, as (index, which file)
MODEL_WIDGETS = {
    "AIPRODCheckpointLoader": ((0, "checkpoint"),),
    "AIPRODDiffusionModelLoader": ((0, "model_file"),),
    "AIPRODVideoVAELoader": ((0, "vae"),),
    "AIPRODAudioVAELoader": ((0, "audio_vae"),),
    "AIPRODTextEncoderLoader": ((0, "gemma"), (1, "projection"), (3, "connectors")),
    "AIPRODUpsamplerLoader": ((0, "upsampler"),),
    "AIPRODLoraLoader": ((0, "lora"),),
    "AIPRODICLoraLoader": ((0, "lora"),),
    "AIPRODCheckpointInspect": ((0, "inspect"),),
}
TITLED_FILES = {"Temporal Upscaler x2": TEMPORAL25}  # a node whose title says which of two same-type loaders it is


def note_text(name: str) -> str:
    checkpoint, others, what = TEMPLATES[name]
    generation = "LTX-2.5" if name in SPLIT_FILES else "LTX-2.3"
    lines = [what, "", f"Files ({generation}; put each where it says, then press R to refresh the lists):"]
    for file in (checkpoint, *others):
        where, source = WHERE[file]
        lines.append(f"- {file}  ->  {where}  ({source})")
    if checkpoint in LTX25_FILES:
        lines += ["", "Sizes: width and height multiples of 64, frames 8k+1 (at least 9)."]
    elif others:  # a generation template
        lines += ["", "Sizes: width and height multiples of 32 (64 for two-stage pipelines), frames 8k+1. STG block 28 "
                  "is LTX-2.3's and LTX-2.5's (29 for LTX-2)."]
    return "\n".join(lines)


def set_model_files(name: str, workflow: dict) -> None:
    checkpoint, others, _ = TEMPLATES[name]
    files = {"checkpoint": checkpoint, "gemma": GEMMA, "upsampler": UPSCALER, "inspect": f"{checkpoint} (checkpoints)",
             "projection": f"{checkpoint} (checkpoints)",  # the text projection's input spans three folders
             "connectors": "none", "lora": IC_LORA if IC_LORA in others else DISTILLED_LORA}
    files |= SPLIT_FILES.get(name, {})
    for node in workflow["nodes"]:
        for index, which in MODEL_WIDGETS.get(node["type"], ()):
            node["widgets_values"][index] = TITLED_FILES.get(node.get("title", ""), files[which])
        if node["type"] == "Note":
            node["widgets_values"] = [note_text(name)]


def add_preview(workflow: dict) -> None:
    """The Inspect template shows its report in the core 'Preview as Text' node (the frontend renders text there)."""
    if any(node["type"] == "PreviewAny" for node in workflow["nodes"]):
        return
    inspect = next(node for node in workflow["nodes"] if node["type"] == "AIPRODCheckpointInspect")
    node_id, link_id = workflow["last_node_id"] + 1, workflow["last_link_id"] + 1
    workflow["nodes"].append({"id": node_id, "type": "PreviewAny", "pos": [0, 0], "size": [NODE_WIDTH, 300],
                              "flags": {}, "order": 2, "mode": 0,
                              "inputs": [{"name": "source", "type": "*", "link": link_id}], "outputs": [],
                              "properties": {"Node name for S&R": "PreviewAny"}, "widgets_values": []})
    inspect["outputs"][0]["links"] = [link_id]
    workflow["links"].append([link_id, inspect["id"], 0, node_id, 0, "STRING"])
    workflow["last_node_id"], workflow["last_link_id"] = node_id, link_id


def columns(workflow: dict) -> dict[int, int]:
    """node id -> column: the Note first, then each node one column right of its deepest input."""
    sources: dict[int, list[int]] = {node["id"]: [] for node in workflow["nodes"]}
    for _, origin, _, target, _, _ in workflow["links"]:
        sources[target].append(origin)
    depth: dict[int, int] = {}

    def level(node_id: int) -> int:
        if node_id not in depth:
            depth[node_id] = 1 + max((level(s) for s in sources[node_id]), default=0)
        return depth[node_id]

    return {node["id"]: 0 if node["type"] == "Note" else level(node["id"]) for node in workflow["nodes"]}


def layout(workflow: dict, minimum: dict[int, list[float]]) -> None:
    """Sizes at least what the frontend computes; columns left to right, nodes stacked without overlap."""
    column_of = columns(workflow)
    x, tops = MARGIN, {}
    for column in sorted(set(column_of.values())):
        members = [n for n in workflow["nodes"] if column_of[n["id"]] == column]
        width = max(NOTE_WIDTH if n["type"] == "Note" else NODE_WIDTH for n in members)
        y = MARGIN
        for node in sorted(members, key=lambda n: n["id"]):
            low = minimum.get(node["id"], [width, 100])
            height = max(low[1], 320 if node["type"] == "Note" else 60)
            node["size"] = [max(width, low[0]), height]
            node["pos"] = [x, y]
            y += height + ROW_GAP + 30  # the title bar sits above pos
        tops[column] = y
        x += width + COLUMN_GAP


_LOAD = "app.loadGraphData(JSON.parse(arguments[0]), true, false, 'measure'); return 1;"
_MEASURE = """
const size = n => { const fresh = LiteGraph.createNode(n.type), least = n.computeSize();
  return fresh ? [Math.max(fresh.size[0], least[0]), Math.max(fresh.size[1], least[1])] : least; };
return JSON.stringify(Object.fromEntries(app.graph._nodes.map(n => [n.id, size(n)])));
"""
_FIT = """
const [scale, margin] = arguments;
app.canvas.ds.scale = scale; app.canvas.ds.offset = [margin / scale, margin / scale];
app.canvas.setDirty(true, true); app.canvas.draw(true, true);
return app.canvas.canvas.toDataURL('image/png');
"""


def load(session, workflow: dict) -> None:
    session.execute_script(_LOAD, json.dumps(workflow))
    ids = sorted(node["id"] for node in workflow["nodes"])
    wait_for(session, "return JSON.stringify(app.graph._nodes.map(n => n.id).sort((a, b) => a - b)) === arguments[0]",
             30.0, 0.25, json.dumps(ids, separators=(",", ":")))
    time.sleep(0.5)


def measure(session, workflow: dict) -> dict[int, list[float]]:
    load(session, workflow)
    sizes = json.loads(session.execute_script(_MEASURE))
    return {int(k): v for k, v in sizes.items()}


def thumbnail(session, workflow: dict, path: Path) -> None:
    """The laid-out graph as the frontend draws it (canvas pixels only, no menus), padded to a square."""
    import base64

    from PIL import Image

    load(session, workflow)
    right = max(n["pos"][0] + n["size"][0] for n in workflow["nodes"]) + MARGIN
    bottom = max(n["pos"][1] + n["size"][1] for n in workflow["nodes"]) + MARGIN
    width, height = session.execute_script("const c = app.canvas.canvas; return [c.width, c.height];")
    scale = min(width / right, height / bottom, 1.0)
    data = session.execute_script(_FIT, scale, 0)
    image = Image.open(io.BytesIO(base64.b64decode(data.partition(",")[2]))).convert("RGB")
    image = image.crop((0, 0, min(width, int(right * scale)), min(height, int(bottom * scale))))
    side = max(image.size)
    square = Image.new("RGB", (side, side), image.getpixel((1, 1)))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    square.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
    square.save(path, "JPEG", quality=85)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/templates.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="a running ComfyUI with the pack (and the demo models) installed")
    parser.add_argument("names", nargs="*", help=f"templates to lay out (default: all): {', '.join(TEMPLATES)}")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - TEMPLATES.keys()):
        parser.error(f"unknown template(s) {', '.join(unknown)}; choose from {', '.join(TEMPLATES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    object_info = ComfyClient(args.url).object_info()
    with chromium() as session:
        open_comfy(session, args.url)
        session.execute_script("document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click())")
        wait_for(session, "return !!app.canvas")
        session.set_window_size(2600, 1800)  # every node inside the drawn viewport at the thumbnails' scale
        for name in args.names or TEMPLATES:
            path = EXAMPLES / f"{TEMPLATE_NAMES[name]}.json"
            workflow = json.loads(path.read_text())
            set_model_files(name, workflow)
            if name == "inspect_checkpoint":
                add_preview(workflow)
            layout(workflow, measure(session, workflow))
            path.write_text(json.dumps(workflow, indent=2) + "\n")
            api = ui_to_api(workflow, object_info)
            titled = {k: {**v, "_meta": {"title": object_info[v["class_type"]]["display_name"]}}
                      for k, v in api.items()}
            (EXAMPLES / "api" / f"{name}.json").write_text(json.dumps(titled, indent=2) + "\n")
            thumbnail(session, workflow, EXAMPLES / f"{TEMPLATE_NAMES[name]}.jpg")
            log.info("laid out %s (%d nodes)", name, len(workflow["nodes"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
