"""The main job, end to end: tiny demo models -> real ComfyUI server with the pack -> workflow queued over HTTP ->
the produced MP4 fetched through the history outputs and /view -> out/demo/.

Run with ``make demo`` (which first runs scripts/env.sh). The models are the tiny LTX-2.3 set that
scripts/demo_models.py builds from AIPROD's own modules (cached in .cache/demo-models; no reference needed).
The graph is example_workflows/api/distilled.json (the distilled video+audio pipeline) as shipped: it names the
official LTX-2.3 files, and the demo set is installed under those names too (scripts/demo_models.py OFFICIAL_FILES);
while that workflow is not in the tree, the checkpoint inspector runs instead, so the demo always exercises a real
server. ``--workflow PATH`` runs another API-format workflow on the same models.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # support.comfy_host: the ComfyUI host + HTTP client
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from demo_models import DemoModels, write_demo_models  # noqa: E402 (after the path setup)
from support.comfy_host import (  # noqa: E402 (after the path setup)
    ComfyClient,
    PromptRejected,
    install_model_files,
    prepare_base_dir,
    start_host,
)

log = logging.getLogger("aiprod.demo")

OUT_DIR = REPO_ROOT / "out" / "demo"
MODELS_DIR = REPO_ROOT / ".cache" / "demo-models"
WORKFLOWS = REPO_ROOT / "example_workflows" / "api"
DISTILLED = WORKFLOWS / "distilled.json"
INSPECT = WORKFLOWS / "inspect_checkpoint.json"
RUN_TIMEOUT_S = 420.0  # the whole demo must stay under 10 minutes on a 2-core machine
VIDEO_SUFFIXES = (".mp4", ".mov")


class DemoError(RuntimeError):
    """The demo could not produce its result; the message says what went wrong and where to look."""


MODEL_INPUTS = ("checkpoint", "model_file", "vae", "audio_vae", "upsampler", "gemma", "lora")  # loader combos


def model_choices(prompt: dict[str, Any]) -> dict[str, str]:
    """``{"node.input": value}`` of every loader input that names a model file or folder."""
    return {f"{node_id}.{name}": value for node_id, node in prompt.items()
            for name, value in node.get("inputs", {}).items() if name in MODEL_INPUTS and isinstance(value, str)}


def check_model_choices(prompt: dict[str, Any], workflow: Path, models: DemoModels) -> None:
    """Every model file the workflow names must be installed: a demo file or an official name mapped to one."""
    installed = [rel.partition("/")[2] for rel in models.install_map()]
    known = {*installed, *(f"{rel.partition('/')[2]} ({rel.partition('/')[0]})" for rel in models.install_map())}
    unknown = {where: value for where, value in model_choices(prompt).items() if value not in known}
    if unknown:
        raise DemoError(f"{workflow.name} names model files the demo set does not stand in for: {unknown}; it "
                        f"provides {sorted(installed)} (scripts/demo_models.py DEMO_FILES and OFFICIAL_FILES).")


def load_prompt(workflow: Path, models: DemoModels) -> dict[str, Any]:
    prompt = json.loads(workflow.read_text())
    check_model_choices(prompt, workflow, models)
    return prompt


def run_on_server(prompt: dict[str, Any], models: DemoModels) -> tuple[dict[str, Any], Path | None]:
    """Start ComfyUI with the pack and the demo models, queue ``prompt`` over HTTP and wait for it.

    Returns the prompt's history outputs and the first video it saved (fetched through /view into out/demo/ while
    the server ran; None if it saved none). The server is stopped before returning.
    """
    shutil.rmtree(OUT_DIR / "comfy", ignore_errors=True)
    base_dir = prepare_base_dir(OUT_DIR / "comfy")
    install_model_files(base_dir, models.install_map())
    log.info("starting ComfyUI with the pack (base dir %s)", base_dir)
    try:
        host = start_host(base_dir)
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        raise DemoError(f"ComfyUI did not start: {exc}") from exc
    try:
        client = ComfyClient(host.url)
        started = time.monotonic()
        try:
            prompt_id = client.queue(prompt)
        except PromptRejected as exc:
            raise DemoError(f"ComfyUI rejected the workflow: {json.dumps(exc.body, indent=1)[:4000]}") from exc
        except requests.RequestException as exc:  # a server-side crash answers 500 with a text body
            raise DemoError(f"POST /prompt failed ({exc}).\n--- ComfyUI log ---\n{host.log_tail()}") from exc
        log.info("queued prompt %s over HTTP at %s", prompt_id, host.url)
        try:
            result = client.wait(prompt_id, timeout=RUN_TIMEOUT_S, poll_s=0.5)
        except TimeoutError as exc:
            raise DemoError(f"{exc}.\n--- ComfyUI log ---\n{host.log_tail()}") from exc
        log.info("prompt finished (%s) in %.1f s", result.status, time.monotonic() - started)
        if not result.ok:
            raise DemoError(f"the prompt failed: {json.dumps(result.error, indent=1)}\n--- ComfyUI log ---\n"
                            f"{host.log_tail()}")
        video = fetch_videos(client, result.outputs)
    finally:
        host.stop()
    return result.outputs, video


def saved_files(outputs: dict[str, Any]) -> list[dict[str, str]]:
    """Every saved-file entry (filename, subfolder, type) in a history's node outputs."""
    entries = []
    for node_output in outputs.values():
        for items in node_output.values():
            if isinstance(items, list):
                entries.extend(i for i in items if isinstance(i, dict) and "filename" in i)
    return entries


def fetch_videos(client: ComfyClient, outputs: dict[str, Any]) -> Path | None:
    """Download the produced videos through GET /view into out/demo/; return the first one's path (or None)."""
    videos = [e for e in saved_files(outputs) if e["filename"].lower().endswith(VIDEO_SUFFIXES)]
    if not videos:
        return None
    paths = []
    for entry in videos:
        data = client.view(entry["filename"], entry.get("subfolder", ""), entry.get("type", "output"))
        path = OUT_DIR / Path(entry["filename"]).name
        path.write_bytes(data)
        paths.append(path)
        log.info("fetched %s (%d bytes) via /view", path, len(data))
    return paths[0]


def video_summary(path: Path) -> str:
    """One line: frames, size, fps, and audio sample rate / duration, read back with PyAV.

    The audio duration is the stream's (AAC decodes whole 1024-sample frames, so decoded samples overshoot it).
    """
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = Fraction(stream.average_rate) if stream.average_rate else Fraction(0)
        frames = sum(1 for _ in container.decode(video=0))
    audio = "no audio"
    with av.open(str(path)) as container:
        if container.streams.audio:
            sound = container.streams.audio[0]
            rate = sound.codec_context.sample_rate
            if sound.duration is not None and sound.time_base is not None:
                seconds = float(sound.duration * sound.time_base)
            else:
                seconds = sum(frame.samples for frame in container.decode(audio=0)) / rate
            audio = f"audio {rate} Hz, {seconds:.3f} s"
    duration = float(frames / fps) if fps else 0.0
    return f"{frames} frames, {width}x{height}, {float(fps):g} fps ({duration:.3f} s), {audio}"


def pick_workflow(requested: Path | None) -> Path:
    if requested is not None:
        return requested
    if DISTILLED.is_file():
        return DISTILLED
    log.warning("%s is not there yet: running the checkpoint inspector instead", DISTILLED.relative_to(REPO_ROOT))
    return INSPECT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/demo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", type=Path, help="API-format workflow to run (default: distilled.json)")
    parser.add_argument("--models", type=Path, default=MODELS_DIR, help="where the demo models are (re)built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.monotonic()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for stale in (p for p in OUT_DIR.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        stale.unlink()  # out/demo/ holds this run's result only
    models = write_demo_models(args.models)
    workflow = pick_workflow(args.workflow)
    try:
        outputs, video = run_on_server(load_prompt(workflow, models), models)
        if video is None and workflow != INSPECT:
            raise DemoError(f"{workflow.name} saved no video; its outputs were: {json.dumps(outputs)[:2000]}")
    except DemoError as exc:
        log.error("%s", exc)
        return 1
    elapsed = time.monotonic() - started
    if video is None:  # the inspector: a text report
        report = outputs["1"]["text"][0]
        (OUT_DIR / "report.txt").write_text(report + "\n")
        sys.stdout.write(f"{report}\n\nreport written to {OUT_DIR / 'report.txt'} (demo took {elapsed:.0f} s)\n")
        return 0
    sys.stdout.write(f"{video}\n{video.name}: {video_summary(video)} (demo took {elapsed:.0f} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
