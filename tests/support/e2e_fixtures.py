"""Fixtures of the node and end-to-end tests: the demo model set installed in the real ComfyUI host, and the
pack's nodes imported in-process with ComfyUI on the CPU and its model folders pointing at the demo set."""

from __future__ import annotations

import sys

import pytest

from .comfy_host import ComfyClient, find_comfyui, install_model_files

MODEL_FOLDERS = ("checkpoints", "diffusion_models", "vae", "text_encoders", "loras", "latent_upscale_models")


@pytest.fixture(scope="session")
def demo25_models(tmp_path_factory):
    """The tiny LTX-2.5 demo set (``scripts/demo_models_ltx25.py``) under the official 2.5 file names."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "demo_models_ltx25.py"
    spec = importlib.util.spec_from_file_location("aiprod_demo_models_ltx25", path)
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module.write_ltx25_demo_models(tmp_path_factory.mktemp("demo25"))


@pytest.fixture(scope="session")
def demo_host(comfy_host, demo_models, demo25_models):
    """The session's ComfyUI server with the demo models (LTX-2.3 and LTX-2.5) installed under the names the
    example workflows use."""
    install_model_files(comfy_host.base_dir, demo_models.install_map())
    install_model_files(comfy_host.base_dir, demo25_models.install_map())
    return comfy_host


@pytest.fixture
def demo_client(demo_host) -> ComfyClient:
    assert demo_host.alive(), f"ComfyUI died:\n{demo_host.log_tail()}"
    return ComfyClient(demo_host.url)


@pytest.fixture(scope="session")
def comfy_cpu():
    """ComfyUI importable in-process and forced onto the CPU (before comfy.model_management is imported)."""
    path = str(find_comfyui())
    if path not in sys.path:
        sys.path.insert(0, path)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management

    return comfy.model_management


@pytest.fixture
def demo_folders(comfy_cpu, demo_models, tmp_path):
    """ComfyUI's model folders -> the demo set, output / input folders -> tmp; restored afterwards."""
    import folder_paths

    saved = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    saved_dirs = folder_paths.get_output_directory(), folder_paths.get_input_directory()
    for folder in MODEL_FOLDERS:
        folder_paths.folder_names_and_paths[folder] = ([str(demo_models.root / folder)],
                                                       set(folder_paths.supported_pt_extensions))
    (tmp_path / "output").mkdir()
    (tmp_path / "input").mkdir()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_input_directory(str(tmp_path / "input"))
    folder_paths.filename_list_cache.clear()
    yield folder_paths
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.set_output_directory(saved_dirs[0])
    folder_paths.set_input_directory(saved_dirs[1])
    folder_paths.filename_list_cache.clear()
