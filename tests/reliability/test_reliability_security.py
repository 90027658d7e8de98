"""Security at run time, through the reliability host: every example workflow runs with pickle / ``torch.load``
refused, non-loopback network refused, and eval / exec from the pack recorded by a sitecustomize guard; saved files
land only under ComfyUI's output folder; the pack's source has no eval / exec / pickle calls."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import requests
from support.comfy_host import PromptRejected
from support.reliability_fixtures import TINY_SIZES, tiny_workflow
from support.workflows import api_workflows

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIRS = ("aiprod_core", "loaders", "nodes")
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "torch.load",
                   "marshal.loads", "os.system", "subprocess.run", "subprocess.Popen"}


def _saved_files(result) -> list[dict]:
    return [v for out in result.outputs.values() for v in out.get("images", [])]


def test_guard_is_active_in_the_server_and_startup_was_clean(rel):
    """Positive control: in the server process, pickle / torch.load / DNS / a non-loopback connection are refused
    and recorded (else the workflow checks below would prove nothing); ComfyUI's start-up recorded nothing."""
    assert rel.startup_records == []
    before = len(rel.guard_records())
    probe = requests.get(f"{rel.host.url}/aiprod_faults/probe", timeout=30).json()
    assert all(v.startswith("refused: reliability guard") for v in probe.values()), probe
    kinds = [r["kind"] for r in rel.guard_records()[before:]]
    assert kinds == ["pickle", "pickle", "network", "network"]
    assert rel.state()["pid"] == rel.host.process.pid


def test_inspect_workflow_runs_guarded(rel, rel_client):
    before = len(rel.guard_records())
    prompt = api_workflows()["inspect_checkpoint"]
    prompt["1"]["inputs"]["checkpoint"] = f"{rel.combos['checkpoint']} (checkpoints)"
    result = rel_client.run(prompt, timeout=120)
    assert result.ok, result.error
    assert rel.guard_records()[before:] == []


@pytest.mark.parametrize("name", sorted(TINY_SIZES, key=lambda n: n == "text_to_video"))  # t2v last: the prefix
# tests below re-run it from ComfyUI's cache (only the save node executes)
def test_example_workflow_runs_without_pickle_network_or_eval(rel, rel_client, name):
    before = len(rel.guard_records())
    result = rel_client.run(tiny_workflow(name), timeout=300)
    assert result.ok, result.error
    (saved,) = _saved_files(result)
    assert saved["type"] == "output"
    path = (rel.output_dir / saved["subfolder"] / saved["filename"]).resolve()
    assert path.is_file() and path.is_relative_to(rel.output_dir.resolve())
    assert rel.guard_records()[before:] == []


@pytest.mark.parametrize("prefix", ["../escaped/video", "aiprod/../../escaped", "/tmp/aiprod-escaped/video"])
def test_filename_prefix_cannot_leave_the_output_folder(rel, rel_client, prefix):
    prompt = tiny_workflow("text_to_video")
    save = next(n for n in prompt.values() if n["class_type"] == "AIPRODSaveVideo")
    save["inputs"]["filename_prefix"] = prefix
    outside = [rel.output_dir.parent / "escaped", Path("/tmp/aiprod-escaped")]
    try:
        result = rel_client.run(prompt, timeout=300)
    except PromptRejected as rejected:  # refused up front: fine too
        assert "filename_prefix" in str(rejected.node_errors)
    else:
        if result.ok:  # contained: the file must be inside the output folder
            for saved in _saved_files(result):
                path = (rel.output_dir / saved["subfolder"] / saved["filename"]).resolve()
                assert path.is_relative_to(rel.output_dir.resolve())
        else:
            assert "outside the output folder" in result.error["exception_message"]
    assert not any(p.exists() for p in outside)
    assert rel.answers()


def _calls(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func, parts = node.func, []
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.add(".".join([func.id, *reversed(parts)]))
    return found


def test_pack_source_has_no_eval_exec_pickle_or_shell_calls():
    files = [ROOT / "__init__.py", *(p for d in RUNTIME_DIRS for p in (ROOT / d).rglob("*.py"))]
    offenders = {p.relative_to(ROOT).as_posix(): sorted(_calls(p) & FORBIDDEN_CALLS) for p in files}
    assert len(files) > 20
    assert {k: v for k, v in offenders.items() if v} == {}
