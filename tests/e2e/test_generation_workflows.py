"""The example API workflows through a real ComfyUI server on the tiny demo models: each yields an MP4 of the requested
frame count, size and fps whose audio lasts the video's duration; bad input is rejected naming the parameter."""

from __future__ import annotations

import copy
import io

import av
import pytest
from support.bad_files import BAD_FILE_NAMES
from support.comfy_host import PromptRejected
from support.workflows import api_workflows

pytestmark = pytest.mark.host

TINY_BLOCK = "1"  # the demo transformer has 2 blocks; the templates name LTX-2.3's block 28
SIZES = {  # workflow -> (width, height, frames, fps)
    "text_to_video": (64, 96, 9, 24.0),
    "distilled": (128, 64, 17, 25.0),
    "two_stage": (64, 64, 9, 12.5),
    "ic_lora": (128, 128, 9, 24.0),  # the IC-LoRA's factor 2: stage 1 at 64, its reference at 32 pixels
    "keyframe_interpolation": (64, 64, 17, 24.0),
}


def tiny(name: str) -> dict:
    """The API workflow at a tiny size, 2 steps and a block the tiny transformer has."""
    prompt = copy.deepcopy(api_workflows()[name])
    width, height, frames, fps = SIZES[name]
    for node in prompt.values():
        inputs = node["inputs"]
        if "frames" in inputs and "width" in inputs:
            inputs.update(width=width, height=height, frames=frames, fps=fps)
        if "steps" in inputs:
            inputs["steps"] = 2
        for key in ("video_stg_blocks", "audio_stg_blocks"):
            if key in inputs:
                inputs[key] = TINY_BLOCK
        if node["class_type"] == "EmptyImage":
            inputs.update(width=width, height=height)
            if inputs["batch_size"] > 1:
                inputs["batch_size"] = frames
    return prompt


def saved_video(client, result) -> bytes:
    assert result.ok, result.error
    (entry,) = [v for out in result.outputs.values() for v in out.get("images", [])]
    assert entry["type"] == "output" and entry["filename"].endswith(".mp4")
    return client.view(entry["filename"], entry["subfolder"])


def probe(data: bytes) -> dict:
    """Frame count, size, fps of the video stream; duration of the decoded audio (seconds)."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        fps = float(video.average_rate)
        frames = [f for f in container.decode(video=0)]
    with av.open(io.BytesIO(data)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    return {"frames": len(frames), "width": frames[0].width, "height": frames[0].height, "fps": fps,
            "audio_seconds": samples / rate}


@pytest.mark.parametrize("name", list(SIZES))
def test_example_workflow_makes_the_requested_clip(demo_client, name):
    width, height, frames, fps = SIZES[name]
    info = probe(saved_video(demo_client, demo_client.run(tiny(name), timeout=240)))
    assert (info["frames"], info["width"], info["height"]) == (frames, width, height)
    assert info["fps"] == pytest.approx(fps, rel=1e-6)
    assert abs(info["audio_seconds"] - frames / fps) <= 1.0 / fps


def _rejected(client, prompt) -> str:
    with pytest.raises(PromptRejected) as caught:
        client.queue(prompt)
    assert caught.value.status == 400
    return str(caught.value.node_errors)


def _node(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)["inputs"]


@pytest.mark.parametrize(("change", "phrase"), [
    ({"width": 100}, "width=100"),
    ({"height": 40}, "height=40"),
    ({"frames": 10}, "frames=10: must be 8k+1"),
    ({"fps": 0.0}, "fps=0.0"),
])
def test_bad_size_is_rejected_naming_the_parameter(demo_client, change, phrase):
    prompt = tiny("distilled")
    _node(prompt, "AIPRODDistilledPipeline").update(change)
    assert phrase in _rejected(demo_client, prompt)


def test_missing_model_file_is_rejected(demo_client):
    prompt = tiny("distilled")
    _node(prompt, "AIPRODCheckpointLoader")["checkpoint"] = "checkpoints/no-such-model.safetensors"
    details = _rejected(demo_client, prompt)
    assert "checkpoint='checkpoints/no-such-model.safetensors'" in details


def test_keyframe_index_out_of_range_is_rejected(demo_client):
    prompt = tiny("keyframe_interpolation")
    _node(prompt, "AIPRODKeyframePipeline")["frame_indices"] = "0, 17"
    assert "frame_indices='0, 17'" in _rejected(demo_client, prompt)


def test_linked_frame_index_out_of_range_fails_at_run_time_and_server_keeps_serving(demo_client):
    """A frame index checked against a linked latent can only fail when the node runs: an execution error that
    names the parameter; the next prompt runs."""
    prompt = tiny("text_to_video")
    prompt["20"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 96, "batch_size": 1, "color": 0}}
    prompt["21"] = {"class_type": "AIPRODImageCondition", "inputs": {
        "latent": ["5", 0], "image": ["20", 0], "frame_index": 9, "strength": 1.0, "crf": 33.0,
        "as_keyframe": False}}
    prompt["6"]["inputs"]["latent"] = ["21", 0]
    prompt["6"]["inputs"]["video_vae"] = ["1", 1]
    result = demo_client.run(prompt, timeout=240)
    assert result.status == "error"
    assert result.error["node_type"] == "AIPRODImageCondition"
    assert "frame_index=9" in result.error["exception_message"]
    prompt["21"]["inputs"]["frame_index"] = -1  # the last frame: valid
    info = probe(saved_video(demo_client, demo_client.run(prompt, timeout=240)))
    assert info["frames"] == SIZES["text_to_video"][2]


def test_bad_checkpoint_fails_at_its_loader_naming_the_file(demo_client):
    name = BAD_FILE_NAMES["no_metadata"]
    prompt = tiny("distilled")
    _node(prompt, "AIPRODCheckpointLoader")["checkpoint"] = f"checkpoints/{name}"
    result = demo_client.run(prompt, timeout=240)
    assert result.status == "error"
    assert result.error["node_type"] == "AIPRODCheckpointLoader"
    assert name in result.error["exception_message"] and "config" in result.error["exception_message"]
