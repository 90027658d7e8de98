"""The pack in the real ComfyUI web frontend (headless Chromium against the 0.3.75 host with the demo models installed
under the official file names): every template opens from the templates sidebar with its thumbnail, without a
missing-node dialog or a console error from the pack, with no two nodes overlapping at the default zoom; Run makes
the video (or the Inspect report) appear; one bad value shows exactly one error line, on the input that is wrong.

Where no browser can be installed the browser tests skip with the reason, and `test_templates_through_json_endpoints`
runs the same checks through the endpoints the frontend reads (it is skipped where the browser ran them).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import requests
from browser.chromium import BrowserUnavailable, chromium, console_errors, find_chromium, open_comfy, screenshot
from browser.frontend import (
    TINY_SETTINGS,
    dialogs,
    errors_shown,
    node_errors,
    open_template,
    overlaps,
    press_run,
    previews,
    set_widgets,
    wait_idle,
)
from support.comfy_host import PACK_FOLDER_NAME, PromptRejected
from support.input_media import write_input_media
from support.workflows import TEMPLATE_NAMES, ui_templates, ui_to_api

pytestmark = pytest.mark.host

SHOTS = Path(__file__).resolve().parents[2] / ".cache" / "browser-shots"  # looked at by hand; gitignored
NETWORK_CLOSED = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_CONNECTION_REFUSED", "net::ERR_INTERNET_DISCONNECTED")
MISSING_GEMMA = "gemma-that-is-not-installed"


def _browser_problem() -> str | None:
    try:
        find_chromium()
    except BrowserUnavailable as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def page(demo_host):
    write_input_media(demo_host.base_dir / "input")  # the clip and track the edit / audio templates load
    problem = _browser_problem()
    if problem:
        pytest.skip(f"no browser on this machine: {problem}; test_templates_through_json_endpoints checks the same")
    with chromium() as session:
        open_comfy(session, demo_host.url)
        yield session


def _pack_errors(messages: list[str]) -> list[str]:
    """Console errors that come from the pack (the frontend's own lookups of the closed network are not)."""
    return [m for m in messages if "aiprod" in m.lower() and not any(n in m for n in NETWORK_CLOSED)]


def _output_prefix(template: str) -> str | None:
    save = [n for n in ui_templates()[template]["nodes"] if n["type"] == "AIPRODSaveVideo"]
    return save[0]["widgets_values"][1].rpartition("/")[2] if save else None


def _plays_audio(template: str) -> bool:
    """The text-to-audio template: its result plays in the core 'Preview Audio' node (and is saved as WAV)."""
    return any(n["type"] == "PreviewAudio" for n in ui_templates()[template]["nodes"])


@pytest.mark.parametrize("template", list(TEMPLATE_NAMES))
def test_template_opens_from_the_sidebar_and_runs(page, template):
    console_errors(page)  # what loading the page logged is not this template's
    card = open_template(page, PACK_FOLDER_NAME, TEMPLATE_NAMES[template])
    assert card["text"].startswith(TEMPLATE_NAMES[template]), card
    ((src, width),) = card["images"]
    assert width > 0 and "default-template" not in src, card  # the template's own thumbnail loaded
    assert dialogs(page) == []  # no missing-node (or any other) dialog
    assert overlaps(page) == [], "nodes overlap at the default zoom"
    screenshot(page, SHOTS / f"{template}.png")
    set_widgets(page, TINY_SETTINGS[template])
    press_run(page)
    wait_idle(page)
    assert node_errors(page) == {} and errors_shown(page) == [], dialogs(page)
    shown = previews(page)
    prefix = _output_prefix(template)
    if _plays_audio(template):
        assert any("type=temp" in src for src in shown["audios"]), shown
    elif prefix is None:  # the Inspect template: its report in 'Preview as Text'
        assert any("Generation: LTX-2.3" in text for text in shown["texts"]), shown
    else:
        assert any(f"filename={prefix}_" in src and ".mp4" in src for src in shown["videos"]), shown
    assert _pack_errors(console_errors(page)) == []


def test_one_bad_value_shows_one_error_on_its_input(page):
    open_template(page, PACK_FOLDER_NAME, TEMPLATE_NAMES["text_to_video"])
    set_widgets(page, {"AIPRODTextEncoderLoader": {"gemma": MISSING_GEMMA}})
    press_run(page)
    errors = node_errors(page, wait=True)
    (node,) = errors.values()
    (error,) = node["errors"]
    assert node["class_type"] == "AIPRODTextEncoderLoader" and error["extra_info"]["input_name"] == "gemma"
    (line,) = errors_shown(page)
    assert MISSING_GEMMA in line
    screenshot(page, SHOTS / "one_bad_value.png")
    page.execute_script("document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click()); return 1;")


def _tiny_prompt(template: str, object_info: dict) -> dict:
    """The template as the frontend queues it, at the tiny sizes the browser test types in."""
    workflow = copy.deepcopy(ui_templates()[template])
    prompt = ui_to_api(workflow, object_info)
    for node in prompt.values():
        node["inputs"].update(TINY_SETTINGS[template].get(node["class_type"], {}))
    return prompt


def test_templates_through_json_endpoints(demo_host, demo_client):
    """The browser test's checks through the endpoints the frontend reads; skipped where the browser ran them."""
    if _browser_problem() is None:
        pytest.skip("the browser tests ran these checks in the frontend itself")
    url = demo_host.url
    write_input_media(demo_host.base_dir / "input")
    listed = requests.get(f"{url}/api/workflow_templates", timeout=30).json()[PACK_FOLDER_NAME]
    assert sorted(listed) == sorted(TEMPLATE_NAMES.values())
    object_info = demo_client.object_info()
    from PIL import Image

    for template, name in TEMPLATE_NAMES.items():
        served = requests.get(f"{url}/api/workflow_templates/{PACK_FOLDER_NAME}/{name}.json", timeout=30).json()
        assert served == ui_templates()[template]
        thumbnail = requests.get(f"{url}/api/workflow_templates/{PACK_FOLDER_NAME}/{name}.jpg", timeout=30)
        assert Image.open(io.BytesIO(thumbnail.content)).format == "JPEG"
        assert {n["type"] for n in served["nodes"]} - {"Note"} <= object_info.keys()  # no missing node
        result = demo_client.run(_tiny_prompt(template, object_info), timeout=900)
        assert result.ok, json.dumps(result.error)[:2000]
    prompt = _tiny_prompt("text_to_video", object_info)
    next(n for n in prompt.values() if n["class_type"] == "AIPRODTextEncoderLoader")["inputs"]["gemma"] = MISSING_GEMMA
    with pytest.raises(PromptRejected) as info:
        demo_client.queue(prompt)
    ((node_id, node),) = info.value.node_errors.items()
    (error,) = node["errors"]
    assert error["extra_info"]["input_name"] == "gemma" and MISSING_GEMMA in error["details"]
