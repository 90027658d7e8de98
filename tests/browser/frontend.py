"""What a user does in the ComfyUI frontend, as page scripts: open a template from the templates sidebar, set
widgets, press Run, read the node errors and the previews. No pytest here."""

from __future__ import annotations

import json
import time

from .chromium import wait_for

__all__ = ["TINY_SETTINGS", "errors_shown", "open_template", "overlaps", "press_run", "set_widgets", "wait_idle"]

# template -> {node type: {widget: value}}: a clip the tiny demo models make in seconds (STG blocks stay as shipped)
TINY_SETTINGS = {
    "text_to_video": {"AIPRODEmptyLatent": {"width": 64, "height": 96, "frames": 9}, "AIPRODSampler": {"steps": 2}},
    "two_stage": {"AIPRODTwoStagePipeline": {"width": 64, "height": 64, "frames": 9, "steps": 2}},
    "distilled": {"AIPRODDistilledPipeline": {"width": 128, "height": 64, "frames": 17}},
    "ic_lora": {"AIPRODICLoraPipeline": {"width": 128, "height": 128, "frames": 9},
                "EmptyImage": {"width": 128, "height": 128, "batch_size": 9}},
    "keyframe_interpolation": {"AIPRODKeyframePipeline": {"width": 64, "height": 64, "frames": 17, "steps": 2},
                               "EmptyImage": {"width": 64, "height": 64}},
    "two_stage_hq": {"AIPRODTwoStageHQPipeline": {"width": 64, "height": 64, "frames": 9, "steps": 2}},
    "audio_to_video": {"AIPRODAudioToVideoPipeline": {"width": 64, "height": 64, "frames": 9, "steps": 2}},
    "text_to_audio": {"AIPRODTextToAudioPipeline": {"frames": 9, "steps": 2}},
    # the source clip of support.input_media: 17 frames at 24 fps
    "retake": {"AIPRODRetakePipeline": {"start_time": 0.042, "end_time": 0.375}},
    "extend": {"AIPRODExtendPipeline": {"extend_frames": 8, "context_frames": 9}},
    "dfr": {"AIPRODDFRPipeline": {"width": 128, "height": 128, "frames": 9}},  # LTX-2.5 demo set, 1 temporal round
    "inspect_checkpoint": {},
    "distilled_ltx25": {"AIPRODDistilledPipeline": {"width": 64, "height": 128, "frames": 9}},
    "two_stage_ltx25": {"AIPRODTwoStagePipeline": {"width": 128, "height": 64, "frames": 9, "steps": 2}},
}

_CLICK_TEXT = """
const [text] = arguments;
const hits = [...document.querySelectorAll('body *')].filter(e => e.offsetParent !== null
  && e.textContent.trim() === text && [...e.children].every(c => c.textContent.trim() !== text));
if (!hits.length) return false;
const target = hits[hits.length - 1];
target.scrollIntoView({block: 'center'});
(target.closest('button,a,li,[role=button],[role=option],[data-testid]') || target).click();
return true;
"""
_TEMPLATE_CARD = """
const [title] = arguments;
const heads = [...document.querySelectorAll('body *')].filter(e => e.offsetParent !== null
  && e.textContent.trim() === title && [...e.children].every(c => c.textContent.trim() !== title));
if (!heads.length) return null;
const head = heads[heads.length - 1];
head.scrollIntoView({block: 'center'});  // the frontend renders a card's thumbnail only once it is in view
const same = el => [...el.querySelectorAll(head.tagName)].filter(t => t.className === head.className).length;
let card = head;  // the largest ancestor that holds this title and no other card's
while (card.parentElement && same(card.parentElement) <= 1) card = card.parentElement;
const images = [...card.querySelectorAll('img')].map(i => [i.src, i.complete ? i.naturalWidth : 0]);
return images.length && images.every(([, w]) => w > 0) ? {text: card.innerText, images} : null;
"""
_GRAPH = "return JSON.stringify(app.graph._nodes.map(n => n.type))"


def click_text(session, text: str, timeout: float = 30.0) -> None:
    wait_for(session, _CLICK_TEXT, timeout, 0.5, text)


def open_template(session, module: str, title: str) -> dict:
    """Templates sidebar -> the pack's category -> the card titled ``title``; returns what the card showed (its
    text and images) and waits until the template's graph is on the canvas."""
    session.execute_script("document.querySelector(\"button[aria-label='Templates']\").click(); return 1;")
    click_text(session, module)
    card = wait_for(session, _TEMPLATE_CARD, 30.0, 0.5, title)  # the card, once its thumbnail has loaded
    before = session.execute_script(_GRAPH)  # the graph shown before (two templates may have as many nodes)
    click_text(session, title)
    wait_for(session, "return app.graph._nodes.length > 0 && (" + _GRAPH.removeprefix("return ") + ") !== arguments[0]"
                      " && !document.querySelector('.p-dialog-mask .templates-dialog, [aria-label=\"Templates\"]"
                      ".p-dialog')", 60.0, 0.5, before)
    time.sleep(1.5)
    return card


def dialogs(session) -> list[str]:
    """The text of every open dialog."""
    return session.execute_script("return [...document.querySelectorAll('.p-dialog')].filter(d => d.offsetParent"
                                  " !== null).map(d => d.innerText)")


def set_widgets(session, settings: dict[str, dict[str, object]]) -> None:
    """Set widget values the way typing them would (the widget's callback runs: the frontend snaps to its step)."""
    missing = session.execute_script("""
const [settings] = arguments; const missing = [];
for (const [type, values] of Object.entries(settings)) {
  const nodes = app.graph._nodes.filter(n => n.type === type);
  if (!nodes.length) missing.push(type);
  for (const node of nodes) for (const [name, value] of Object.entries(values)) {
    const widget = (node.widgets || []).find(w => w.name === name);
    if (!widget) { missing.push(type + '.' + name); continue; }
    widget.value = value; if (widget.callback) widget.callback(widget.value);
  }
}
app.graph.setDirtyCanvas(true, true); return missing;""", settings)
    if missing:
        raise AssertionError(f"not in the template: {missing}")


def widget_value(session, node_type: str, name: str) -> object:
    return session.execute_script("return app.graph._nodes.find(n => n.type === arguments[0]).widgets"
                                  ".find(w => w.name === arguments[1]).value", node_type, name)


def press_run(session) -> None:
    session.execute_script("document.querySelector(\"button[aria-label='Run']\").click(); return 1;")


def wait_idle(session, timeout: float = 900.0) -> None:
    """Until the queue is empty again (the prompt ran, or failed)."""
    time.sleep(1.0)
    wait_for(session, "return fetch('/queue').then(r => r.json()).then(q => !q.queue_running.length"
                      " && !q.queue_pending.length)", timeout, 1.0)


def node_errors(session, wait: bool = False) -> dict:
    """The validation errors the frontend holds (per node id), as the server sent them (``wait``: until there are
    some)."""
    if wait:
        wait_for(session, "return app.lastNodeErrors && Object.keys(app.lastNodeErrors).length > 0", 60.0, 0.5)
    return json.loads(session.execute_script("return JSON.stringify(app.lastNodeErrors || {})"))


def errors_shown(session) -> list[str]:
    """The error lines of the open error dialog ("- message: details")."""
    return [line.strip() for text in dialogs(session) for line in text.splitlines()
            if line.strip().startswith("- ")]


def previews(session) -> dict[str, list[str]]:
    """Video and audio sources and text previews on the canvas's nodes."""
    return session.execute_script("""return {
  videos: [...document.querySelectorAll('video')]
    .map(v => v.currentSrc || v.src || (v.querySelector('source') || {}).src).filter(Boolean),
  audios: [...document.querySelectorAll('audio')].map(a => a.currentSrc || a.src).filter(Boolean),
  texts: app.graph._nodes.flatMap(n => (n.widgets || []).filter(w => typeof w.value === 'string'
    && n.type === 'PreviewAny').map(w => w.value)),
};""")


def overlaps(session) -> list[tuple[str, str]]:
    """Pairs of nodes whose boxes (title bar included) overlap on the canvas."""
    boxes = json.loads(session.execute_script("""
const title = LiteGraph.NODE_TITLE_HEIGHT;
return JSON.stringify(app.graph._nodes.map(n => [n.id + ' ' + n.type, n.pos[0], n.pos[1] - title, n.size[0],
  n.size[1] + title]));"""))
    pairs = []
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1:]:
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                pairs.append((a, b))
    return pairs
