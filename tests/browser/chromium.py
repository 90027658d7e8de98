"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driving the real ComfyUI frontend through
selenium, and the page-side helpers the browser tests share. No pytest here (also used to lay out templates).

The network is closed on the machines this runs on: Chromium gets the flags that keep it from phoning home
(``--disable-background-networking`` ...), a new empty profile, and runs as root with ``--no-sandbox``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BrowserUnavailable", "chromium", "find_chromium", "open_comfy"]

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,1000")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver", "chromium-driver")


class BrowserUnavailable(RuntimeError):
    """No Chromium + chromedriver (or no selenium) on this machine; the message says which is missing."""


def find_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths; `BrowserUnavailable` naming what is missing."""
    try:
        import selenium  # noqa: F401  (only checking that it is installed)
    except ImportError as exc:
        raise BrowserUnavailable("selenium is not installed (pip install -r requirements-dev.txt)") from exc
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_NAMES) if p), None)
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        raise BrowserUnavailable(f"{missing} not found (Debian: apt-get install chromium chromium-driver; "
                                 "scripts/env.sh installs them where apt is available)")
    return browser, driver


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A selenium Chrome driver on headless Chromium with a fresh profile and the browser console captured."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_chromium()
    profile = tempfile.mkdtemp(prefix="aiprod-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(session, script: str, timeout: float = 60.0, poll: float = 0.25, *args: object) -> object:
    """Evaluate ``script`` (a JS function body returning a value) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = session.execute_script(script, *args)
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"browser: no result within {timeout:.0f}s from: {script[:200]} (last: {value!r})")


def open_comfy(session, url: str, timeout: float = 120.0) -> None:
    """Load the frontend and wait until the app, its graph and the node definitions are ready."""
    session.get(url)
    wait_for(session, "return !!(window.app && window.app.graph && window.LiteGraph"
                      " && Object.keys(LiteGraph.registered_node_types).length > 50)", timeout)
    time.sleep(1.0)  # the first canvas draw and the extensions' setup


def console_errors(session) -> list[str]:
    """Browser console entries at SEVERE level since the last call."""
    return [entry["message"] for entry in session.get_log("browser") if entry.get("level") == "SEVERE"]


def screenshot(session, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    session.save_screenshot(str(path))
    return path


def graph_nodes(session) -> list[dict]:
    """Every node of the open graph: id, type, title, pos, size (the frontend's own layout)."""
    return json.loads(session.execute_script(
        "return JSON.stringify(app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title,"
        " pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]], min: n.computeSize ? n.computeSize() : null})))"))
