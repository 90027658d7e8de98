"""Start a real ComfyUI server with this pack installed, and talk to it over HTTP.

Used by the end-to-end tests (through the pytest fixtures in ``support.host_fixtures``) and by
``make demo``. No pytest dependency here. The host is ComfyUI 0.3.75 fetched by ``scripts/env.sh``
into ``.cache/comfyui-0.3.75``; ``COMFYUI_PATH`` points at another ComfyUI instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

__all__ = ["ComfyClient", "ComfyHost", "PromptRejected", "PromptResult", "find_comfyui", "install_model_files",
           "prepare_base_dir", "start_host"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_FOLDER_NAME = "aiprod"
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "vae", "text_encoders", "loras", "latent_upscale_models")
STARTUP_TIMEOUT_S = 240.0


def find_comfyui() -> Path:
    """The ComfyUI checkout to host the pack: ``$COMFYUI_PATH`` or the one ``scripts/env.sh`` fetched."""
    override = os.environ.get("COMFYUI_PATH")
    path = Path(override) if override else REPO_ROOT / ".cache" / "comfyui-0.3.75"
    if not (path / "main.py").is_file():
        raise FileNotFoundError(
            f"No ComfyUI at {path} (COMFYUI_PATH={override!r}). Run `bash scripts/env.sh` (make env) first."
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_base_dir(base_dir: Path) -> Path:
    """Lay out a ComfyUI base directory with this pack under ``custom_nodes/`` and empty model folders."""
    for sub in ("custom_nodes", "input", "output", "temp", "user", *(f"models/{m}" for m in MODEL_FOLDERS)):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
    link = base_dir / "custom_nodes" / PACK_FOLDER_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return base_dir


def install_model_files(base_dir: Path, files: dict[str, Path]) -> dict[str, str]:
    """Symlink ``{"folder/name": file}`` into ``base_dir/models/folder/name`` (a file or a folder, installed under
    that name: the demo set stands in for the official files the templates name).

    Returns ``{key: name}``, the name ComfyUI lists for each.
    """
    placed = {}
    for key, path in files.items():
        folder, _, name = key.partition("/")
        link = base_dir / "models" / folder / (name or path.name)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and not link.exists():
            link.symlink_to(path.resolve())
        placed[key] = link.name
    return placed


@dataclass
class ComfyHost:
    """A running ComfyUI server process and where its files live."""

    process: subprocess.Popen
    port: int
    base_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    def models_dir(self, folder: str) -> Path:
        return self.base_dir / "models" / folder

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def start_host(base_dir: Path, comfy_dir: Path | None = None, python: str = sys.executable,
               timeout: float = STARTUP_TIMEOUT_S) -> ComfyHost:
    """Start ``main.py --cpu`` on a free loopback port with ``base_dir`` as its base directory."""
    comfy_dir = comfy_dir or find_comfyui()
    prepare_base_dir(base_dir)
    port = _free_port()
    log_path = base_dir / "comfyui.log"
    cmd = [python, str(comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--base-directory", str(base_dir),
           "--database-url", "sqlite:///:memory:"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(cmd, cwd=comfy_dir, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    host = ComfyHost(process=process, port=port, base_dir=base_dir, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not host.alive():
            raise RuntimeError(f"ComfyUI exited with code {process.returncode}:\n{host.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{host.url}/system_stats", timeout=2).status_code == 200:
                log.info("ComfyUI up at %s (base %s)", host.url, base_dir)
                return host
        time.sleep(0.5)
    host.stop()
    raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f}s:\n{host.log_tail()}")


class PromptRejected(RuntimeError):
    """POST /prompt answered 400: the graph failed validation before anything ran."""

    def __init__(self, status: int, body: dict) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")

    @property
    def node_errors(self) -> dict:
        return self.body.get("node_errors", {})


@dataclass
class PromptResult:
    """One finished prompt from GET /history: status, node outputs and the event messages."""

    prompt_id: str
    status: str
    outputs: dict
    messages: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def error(self) -> dict | None:
        """The ``execution_error`` payload (exception_message, exception_type, node_id ...) if any."""
        for event, data in self.messages:
            if event == "execution_error":
                return data
        return None


class ComfyClient:
    """Minimal ComfyUI HTTP client: queue a prompt, wait for it, read outputs."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout

    def get_json(self, path: str) -> dict:
        response = requests.get(f"{self.url}{path}", timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json(f"/object_info/{node_class}" if node_class else "/object_info")

    def queue(self, prompt: dict) -> str:
        """POST /prompt; return the prompt id or raise :class:`PromptRejected` with the node errors."""
        response = requests.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": self.client_id},
                                 timeout=self.timeout)
        body = response.json()
        if response.status_code != 200:
            raise PromptRejected(response.status_code, body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0, poll_s: float = 0.2) -> PromptResult:
        """Poll GET /history/{id} until the prompt finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") in ("success", "error"):
                    return PromptResult(prompt_id, status["status_str"], entry.get("outputs", {}),
                                        [tuple(m) for m in status.get("messages", [])])
            time.sleep(poll_s)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")

    def run(self, prompt: dict, timeout: float = 300.0) -> PromptResult:
        return self.wait(self.queue(prompt), timeout=timeout)

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        response = requests.get(f"{self.url}/view", params={"filename": filename, "subfolder": subfolder,
                                                            "type": folder_type}, timeout=self.timeout)
        response.raise_for_status()
        return response.content

    def interrupt(self) -> None:
        requests.post(f"{self.url}/interrupt", timeout=self.timeout).raise_for_status()

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        requests.post(f"{self.url}/free", json={"unload_models": unload_models, "free_memory": free_memory},
                      timeout=self.timeout).raise_for_status()
