"""The main job, end to end: tiny demo model -> real ComfyUI server -> prompt queued over HTTP -> result.

Run with `make demo`. For now the graph is the checkpoint inspector (example_workflows/api/
inspect_checkpoint.json) on a tiny random-weight LTX-2.3 checkpoint; it becomes the distilled
video+audio pipeline once the generation nodes land.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from support.comfy_host import ComfyClient, install_model_files, prepare_base_dir, start_host  # noqa: E402
from support.tiny_checkpoints import build_tiny_set  # noqa: E402

log = logging.getLogger("aiprod.demo")
WORK_DIR = REPO_ROOT / "out" / "demo"
WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "inspect_checkpoint.json"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    tiny = build_tiny_set(REPO_ROOT / ".cache" / "tiny-models")
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    base_dir = prepare_base_dir(WORK_DIR / "comfy")
    placed = install_model_files(base_dir, {"checkpoints/demo": tiny.ltx23})
    prompt = json.loads(WORKFLOW.read_text())
    prompt["1"]["inputs"]["checkpoint"] = placed["checkpoints/demo"]
    log.info("starting ComfyUI with the pack (base dir %s)", base_dir)
    host = start_host(base_dir)
    try:
        client = ComfyClient(host.url)
        prompt_id = client.queue(prompt)
        log.info("queued prompt %s over HTTP at %s", prompt_id, host.url)
        result = client.wait(prompt_id, timeout=300)
    finally:
        host.stop()
    if not result.ok:
        log.error("prompt failed: %s", result.error)
        return 1
    report = result.outputs["1"]["text"][0]
    (WORK_DIR / "report.txt").write_text(report + "\n")
    sys.stdout.write(f"{report}\n\nreport written to {WORK_DIR / 'report.txt'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
