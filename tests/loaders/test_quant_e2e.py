"""Through the real ComfyUI server: the distilled example workflow on a checkpoint whose transformer is a ComfyUI
``comfy_quant`` file (float8_e4m3fn layers), kept quantized, chosen with the option's old name (``fp8``) as an API
prompt saved before the rename carries it; the result is an MP4 with sound of the requested size and length."""

from __future__ import annotations

import copy
import io

import av
import pytest
from support import quant_files as qf
from support.comfy_host import install_model_files
from support.workflows import api_workflows

pytestmark = pytest.mark.host

WIDTH, HEIGHT, FRAMES, FPS = 128, 64, 17, 25.0


def _tiny_distilled() -> dict:
    prompt = copy.deepcopy(api_workflows()["distilled"])
    for node in prompt.values():
        inputs = node["inputs"]
        if "frames" in inputs and "width" in inputs:
            inputs.update(width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS)
    return prompt


def _probe(client, result) -> tuple[int, int, int, float]:
    """(frames, width, height, audio seconds) of the MP4 the run saved."""
    assert result.ok, result.error
    (entry,) = [v for out in result.outputs.values() for v in out.get("images", [])]
    data = client.view(entry["filename"], entry["subfolder"])
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    with av.open(io.BytesIO(data)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    return len(frames), frames[0].width, frames[0].height, samples / rate


def test_distilled_workflow_on_a_comfy_quant_checkpoint_with_the_old_fp8_option(demo_host, demo_client, demo_models,
                                                                               tmp_path_factory):
    source = demo_models.checkpoint
    target = tmp_path_factory.mktemp("quant") / "aiprod-demo-ltx-2.3-tiny-fp8-comfy-quant.safetensors"
    path, _ = qf.quantize_file(source, target, "float8_e4m3fn")
    (choice,) = install_model_files(demo_host.base_dir, {f"checkpoints/{path.name}": path}).values()
    prompt = _tiny_distilled()
    loaders = [n for n in prompt.values() if n["class_type"] == "AIPRODCheckpointLoader"]
    assert loaders
    for node in loaders:
        node["inputs"]["checkpoint"] = choice
        node["inputs"].pop("quantized_weights")
        node["inputs"]["fp8"] = "keep"  # the option's name before the rename
    frames, width, height, seconds = _probe(demo_client, demo_client.run(prompt, timeout=600))
    assert (frames, width, height) == (FRAMES, WIDTH, HEIGHT)
    assert abs(seconds - FRAMES / FPS) <= 1.0 / FPS
