"""The reliability suite's own ComfyUI host: demo models, defective files, a runtime guard and fault injection.

One session-scoped server (``rel``), separate from the e2e host so armed faults never disturb other tests:

- the demo model set under the example workflows' names, plus defective / misplaced files (``BAD``);
- ``support/reliability_site/sitecustomize.py`` on its PYTHONPATH: network to non-loopback addresses, pickle and
  ``torch.load`` refused and recorded, eval / exec from the pack recorded (``guard_records``);
- ``support/reliability_faults`` installed as a second custom-node package: faults armed through ``arm(...)``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import requests

from .bad_files import GIT_LFS_POINTER, write_bad_files
from .comfy_host import ComfyClient, ComfyHost, PromptRejected, install_model_files, prepare_base_dir, start_host
from .workflows import api_workflows

__all__ = ["BAD", "TINY_SIZES", "ReliabilityHost", "choice", "rel", "rel_client", "tiny_workflow"]

SUPPORT = Path(__file__).resolve().parent
REPO_ROOT = SUPPORT.parents[1]
PACK_RUNTIME_DIRS = ("aiprod_core", "loaders", "nodes")  # the pack's runtime code (realpaths: custom_nodes links here)
TINY_SIZES = {  # workflow -> (width, height, frames, fps): the smallest sizes each pipeline accepts
    "text_to_video": (32, 32, 9, 24.0),
    "distilled": (64, 64, 9, 24.0),
    "two_stage": (64, 64, 9, 24.0),
    "ic_lora": (128, 128, 9, 24.0),  # the IC-LoRA's factor 2: stage 1 at 64, its reference at 32 pixels
    "keyframe_interpolation": (64, 64, 9, 24.0),
}

# Defective or misplaced model files: combo value -> how it is made (see _write_bad_files).
BAD = {
    "not_safetensors": "checkpoints/bad_not_safetensors.safetensors",
    "truncated": "checkpoints/bad_truncated.safetensors",
    "no_metadata": "checkpoints/bad_no_metadata.safetensors",
    "lfs_checkpoint": "checkpoints/bad_lfs_pointer.safetensors",
    "empty": "checkpoints/bad_empty.safetensors",
    "renamed_pickle": "checkpoints/rel_renamed_torch_zip.safetensors",
    "unreadable": "checkpoints/rel_unreadable.safetensors",
    "directory": "checkpoints/rel_a_directory.safetensors",
    "upsampler_as_checkpoint": "checkpoints/rel_upsampler_as_checkpoint.safetensors",
    "lora_as_checkpoint": "checkpoints/rel_lora_as_checkpoint.safetensors",
    "checkpoint_as_upsampler": "latent_upscale_models/rel_checkpoint_as_upsampler.safetensors",
    "upsampler_as_lora": "loras/rel_upsampler_as_lora.safetensors",
    "foreign_lora": "loras/rel_foreign_generation_lora.safetensors",
    "upsampler_as_vae": "vae/rel_upsampler_as_vae.safetensors",
    "lora_as_audio_vae": "vae/rel_lora_as_audio_vae.safetensors",
    "lora_as_diffusion_model": "diffusion_models/rel_lora_as_transformer.safetensors",
    "checkpoint_as_gemma": "text_encoders/rel-checkpoint-as-gemma.safetensors",
    "lfs_tokenizer": "text_encoders/rel-gemma-lfs-tokenizer",
}


def choice(path: str, spans_folders: bool = False) -> str:
    """The combo value of a file at ``folder/name`` under models/: its name, or ``name (folder)`` for an input that
    reads several folders (the VAE loaders, Inspect)."""
    folder, _, name = path.partition("/")
    return f"{name} ({folder})" if spans_folders else name


@dataclass
class ReliabilityHost:
    """The running host and the switches of the guard and the faults."""

    host: ComfyHost
    combos: dict[str, str]
    guard_log: Path
    faults_file: Path
    timings: dict[str, float] = field(default_factory=dict)
    startup_records: list[dict] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        return self.host.output_dir

    def client(self) -> ComfyClient:
        assert self.host.alive(), f"ComfyUI died:\n{self.host.log_tail()}"
        return ComfyClient(self.host.url, timeout=60.0)

    def arm(self, fault: str | None, **settings) -> None:
        """Arm a fault for the prompts queued from now on (``None`` disarms)."""
        if fault is None:
            self.faults_file.unlink(missing_ok=True)
        else:
            self.faults_file.write_text(json.dumps({"fault": fault, **settings}))

    @contextlib.contextmanager
    def fault(self, fault_name: str, /, **settings):
        self.arm(fault_name, **settings)
        try:
            yield
        finally:
            self.arm(None)

    def state(self) -> dict:
        return requests.get(f"{self.host.url}/aiprod_faults/state", timeout=30).json()

    def wait_for_calls(self, name: str, above: int, timeout: float = 300.0) -> None:
        """Wait until the fault package counted more than ``above`` calls of ``name`` (e.g. ``"transformer"``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state()["calls"].get(name, 0) > above:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} was never called")

    def guard_records(self) -> list[dict]:
        if not self.guard_log.exists():
            return []
        return [json.loads(line) for line in self.guard_log.read_text().splitlines() if line.strip()]

    def output_files(self) -> set[str]:
        """Every file under the output folder (hidden temporaries included), relative."""
        root = self.output_dir
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}

    def answers(self) -> bool:
        """The server still serves: /system_stats answers and the queue is idle."""
        stats = requests.get(f"{self.host.url}/system_stats", timeout=30)
        queue = requests.get(f"{self.host.url}/queue", timeout=30).json()
        return stats.status_code == 200 and not queue["queue_running"] and not queue["queue_pending"]

    def wait_idle(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.2)
        raise TimeoutError("the reliability host did not go idle")


def _link(base: Path, combo: str, target: Path) -> None:
    link = base / "models" / combo
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target.resolve())


def _write_bad_files(base: Path, demo) -> None:
    models = base / "models"
    write_bad_files(models / "checkpoints")
    torch_zip = b"PK\x03\x04" + b"\0" * 26 + b"archive/data.pkl" + b"\x80\x02}q\0." * 8  # a .pt file, renamed
    (models / BAD["renamed_pickle"]).write_bytes(torch_zip)
    shutil.copyfile(demo.upsampler, models / BAD["unreadable"])
    (models / BAD["directory"]).mkdir(exist_ok=True)
    shutil.copyfile(demo.upsampler, models / BAD["directory"] / "inside.safetensors")
    for name, target in (("upsampler_as_checkpoint", demo.upsampler), ("lora_as_checkpoint", demo.distilled_lora),
                         ("checkpoint_as_upsampler", demo.checkpoint), ("upsampler_as_lora", demo.upsampler),
                         ("upsampler_as_vae", demo.upsampler), ("lora_as_audio_vae", demo.distilled_lora),
                         ("lora_as_diffusion_model", demo.distilled_lora), ("checkpoint_as_gemma", demo.checkpoint)):
        _link(base, BAD[name], target)
    _write_foreign_lora(models / BAD["foreign_lora"])
    gemma = models / BAD["lfs_tokenizer"]
    gemma.mkdir(parents=True, exist_ok=True)
    for item in demo.text_encoder_dir.iterdir():
        if item.name.startswith("tokenizer"):
            (gemma / item.name).write_text(GIT_LFS_POINTER)
        elif not (gemma / item.name).exists():
            (gemma / item.name).symlink_to(item.resolve())


def _write_foreign_lora(path: Path) -> None:
    """A LoRA of the other generation: LTX-2 (19B) key names and widths (4096 video, 2048 audio), rank 4.

    Only the shapes matter to the matcher; a real LTX-2 LoRA is gigabytes.
    """
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for block in range(2):
        for name, width in (("attn1", 4096), ("audio_attn1", 2048)):
            for proj in ("to_q", "to_k"):
                prefix = f"diffusion_model.transformer_blocks.{block}.{name}.{proj}"
                tensors[f"{prefix}.lora_A.weight"] = torch.zeros(4, width, dtype=torch.bfloat16)
                tensors[f"{prefix}.lora_B.weight"] = torch.zeros(width, 4, dtype=torch.bfloat16)
    save_file(tensors, str(path), metadata={"model_version": "2.0.0"})


def _start(base: Path) -> tuple[ComfyHost, Path, Path]:
    guard_log, faults_file = base / "guard.jsonl", base / "faults.json"
    faults_link = base / "custom_nodes" / "aiprod_reliability_faults"
    if not faults_link.exists():
        faults_link.symlink_to(SUPPORT / "reliability_faults", target_is_directory=True)
    pack_dirs = os.pathsep.join([str(REPO_ROOT / "__init__.py"), *(str(REPO_ROOT / d) for d in PACK_RUNTIME_DIRS)])
    python_path = os.pathsep.join(p for p in (str(SUPPORT / "reliability_site"), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": python_path, "AIPROD_GUARD_LOG": str(guard_log), "AIPROD_GUARD_PACK_DIRS": pack_dirs,
           "AIPROD_FAULTS_FILE": str(faults_file)}
    with mock.patch.dict(os.environ, env):
        host = start_host(base)
    return host, guard_log, faults_file


@pytest.fixture(scope="session")
def rel(tmp_path_factory, demo_models) -> ReliabilityHost:
    """The reliability host (session-scoped; its own base dir, guard and faults)."""
    base = prepare_base_dir(tmp_path_factory.mktemp("reliability-host"))
    install_model_files(base, demo_models.install_map())
    _write_bad_files(base, demo_models)
    started = time.monotonic()
    host, guard_log, faults_file = _start(base)
    state = ReliabilityHost(host, demo_models.combos(), guard_log, faults_file)
    state.timings["startup_s"] = time.monotonic() - started
    state.startup_records = state.guard_records()
    yield state
    host.stop()


@pytest.fixture
def rel_client(rel) -> ComfyClient:
    rel.arm(None)
    return rel.client()


def tiny_workflow(name: str, size: tuple[int, int, int, float] | None = None, seed: int | None = None) -> dict:
    """An example API workflow at a tiny size, 2 steps, optional seed (the STG blocks as shipped)."""
    prompt = copy.deepcopy(api_workflows()[name])
    width, height, frames, fps = size or TINY_SIZES[name]
    for node in prompt.values():
        node.pop("_meta", None)
        inputs = node["inputs"]
        if "frames" in inputs and "width" in inputs:
            inputs.update(width=width, height=height, frames=frames, fps=fps)
        if "steps" in inputs:
            inputs["steps"] = 2
        if seed is not None and "seed" in inputs:
            inputs["seed"] = seed
        if node["class_type"] == "EmptyImage":
            inputs.update(width=width, height=height)
            if inputs["batch_size"] > 1:
                inputs["batch_size"] = frames
    return prompt


def rejection(client: ComfyClient, prompt: dict) -> PromptRejected:
    with pytest.raises(PromptRejected) as caught:
        client.queue(prompt)
    return caught.value
