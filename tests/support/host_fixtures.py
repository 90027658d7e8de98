"""pytest fixtures: ComfyUI modules in-process, and a real ComfyUI server with the tiny models installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .bad_files import write_bad_files
from .comfy_host import ComfyClient, ComfyHost, find_comfyui, install_model_files, prepare_base_dir, start_host

# TinySet field -> the ComfyUI model folder its file belongs in.
TINY_SET_FOLDERS = {
    "ltx2": "checkpoints",
    "ltx23": "checkpoints",
    "upsampler_x2": "latent_upscale_models",
    "upsampler_x1_5": "latent_upscale_models",
    "lora": "loras",
    "ic_lora": "loras",
}


def install_tiny_models(tiny_set, base_dir: Path) -> dict[str, str]:
    """Symlink the tiny set into the ComfyUI model folders; return {field: the file name ComfyUI lists}."""
    files = {f"{folder}/{getattr(tiny_set, name).name}": getattr(tiny_set, name)
             for name, folder in TINY_SET_FOLDERS.items()}
    placed = install_model_files(base_dir, files)
    return {name: placed[f"{folder}/{getattr(tiny_set, name).name}"] for name, folder in TINY_SET_FOLDERS.items()}


@pytest.fixture(scope="session")
def comfy_modules():
    """Make ComfyUI importable in this process (for node tests through the schema); returns folder_paths."""
    path = str(find_comfyui())
    if path not in sys.path:
        sys.path.insert(0, path)
    import folder_paths

    return folder_paths


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory, tiny_set) -> ComfyHost:
    """One real ComfyUI server for the session, with the tiny models and the bad files installed."""
    base_dir = prepare_base_dir(tmp_path_factory.mktemp("comfy-host"))
    install_tiny_models(tiny_set, base_dir)
    write_bad_files(base_dir / "models" / "checkpoints")
    host = start_host(base_dir)
    yield host
    host.stop()


@pytest.fixture(scope="session")
def host_models(comfy_host, tiny_set) -> dict[str, str]:
    """{tiny-set field: the combo value ComfyUI lists for it}."""
    return install_tiny_models(tiny_set, comfy_host.base_dir)


@pytest.fixture
def comfy(comfy_host) -> ComfyClient:
    """A client for the session's server; fails the test if the server died during an earlier test."""
    assert comfy_host.alive(), f"ComfyUI died:\n{comfy_host.log_tail()}"
    return ComfyClient(comfy_host.url)
