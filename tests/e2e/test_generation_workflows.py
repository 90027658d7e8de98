"""The example API workflows through a real ComfyUI server on the tiny demo models, installed under the official file
names the templates use: each yields an MP4 of the requested frame count, size and fps whose audio lasts the video's
duration; a bad value is one error naming the parameter, on that input, before any model work."""

from __future__ import annotations

import copy
import io

import av
import pytest
from support.bad_files import BAD_FILE_NAMES
from support.comfy_host import PromptRejected
from support.workflows import api_workflows

pytestmark = pytest.mark.host

SIZES = {  # workflow -> (width, height, frames, fps)
    "text_to_video": (64, 96, 9, 24.0),
    "distilled": (128, 64, 17, 25.0),
    "two_stage": (64, 64, 9, 12.5),
    "ic_lora": (128, 128, 9, 24.0),  # the IC-LoRA's factor 2: stage 1 at 64, its reference at 32 pixels
    "keyframe_interpolation": (64, 64, 17, 24.0),
}


def tiny(name: str) -> dict:
    """The API workflow at a tiny size and 2 steps (the STG blocks as shipped: the demo transformer has 30)."""
    prompt = copy.deepcopy(api_workflows()[name])
    width, height, frames, fps = SIZES[name]
    for node in prompt.values():
        inputs = node["inputs"]
        if "frames" in inputs and "width" in inputs:
            inputs.update(width=width, height=height, frames=frames, fps=fps)
        if "steps" in inputs:
            inputs["steps"] = 2
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
    info = probe(saved_video(demo_client, demo_client.run(tiny(name), timeout=600)))
    assert (info["frames"], info["width"], info["height"]) == (frames, width, height)
    assert info["fps"] == pytest.approx(fps, rel=1e-6)
    assert abs(info["audio_seconds"] - frames / fps) <= 1.0 / fps


def _one_error(client, prompt) -> dict:
    """POST /prompt answers 400 with exactly one error, for exactly one node."""
    with pytest.raises(PromptRejected) as caught:
        client.queue(prompt)
    assert caught.value.status == 400
    ((_, node),) = caught.value.node_errors.items()
    (error,) = node["errors"]
    return error


def _failed(client, prompt, node_type: str) -> str:
    result = client.run(prompt, timeout=600)
    assert result.status == "error" and result.error["node_type"] == node_type, result.error
    return result.error["exception_message"]


def _node(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)["inputs"]


@pytest.mark.parametrize(("change", "name", "kind"), [
    ({"width": 16}, "width", "value_smaller_than_min"),
    ({"height": 9000}, "height", "value_bigger_than_max"),
    ({"fps": 0.0}, "fps", "value_smaller_than_min"),
    ({"seed": -1}, "seed", "value_smaller_than_min"),
    ({"spatial_tile": -32}, "spatial_tile", "value_smaller_than_min"),
])
def test_out_of_range_value_is_one_error_on_its_input(demo_client, change, name, kind):
    prompt = tiny("distilled")
    _node(prompt, "AIPRODDistilledPipeline").update(change)
    error = _one_error(demo_client, prompt)
    assert (error["type"], error["extra_info"]["input_name"]) == (kind, name)


@pytest.mark.parametrize(("change", "phrases"), [
    ({"width": 96}, ("width=96: must be a multiple of 64", "nearest valid: 64 or 128")),
    ({"frames": 10}, ("frames=10: must be 8k+1", "nearest valid: 9 or 17")),
    ({"width": 96, "frames": 10}, ("width=96", "frames=10")),  # every problem of the node in one message
    ({"spatial_overlap": 512}, ("spatial_overlap=512: must be less than spatial_tile=512",)),
])
def test_off_grid_value_fails_at_its_node_before_the_prompt_is_encoded(demo_client, change, phrases):
    """Rules min / max cannot say (the frontend snaps typed values to the step; API prompts can send anything)."""
    prompt = tiny("distilled")
    _node(prompt, "AIPRODDistilledPipeline").update(change)
    message = _failed(demo_client, prompt, "AIPRODDistilledPipeline")
    assert all(phrase in message for phrase in phrases), message


def test_stg_blocks_the_model_lacks_fail_where_model_and_guider_meet_before_encoding(demo_client):
    prompt = tiny("two_stage")
    _node(prompt, "AIPRODGuider")["audio_stg_blocks"] = "28, 40"
    result = demo_client.run(prompt, timeout=600)
    assert result.status == "error" and result.error["node_type"] == "AIPRODTwoStagePipeline"
    message = result.error["exception_message"]
    assert "audio_stg_blocks=(28, 40): the model has 30 transformer blocks (0..29), so block 40" in message
    executed = {d["node"] for event, d in result.messages if event == "executed"} | {
        n for event, d in result.messages if event == "execution_cached" for n in d["nodes"]}
    text_encode = next(k for k, v in prompt.items() if v["class_type"] == "AIPRODTextEncode")
    assert text_encode not in executed  # the prompt was never encoded


def test_malformed_stg_blocks_fail_at_the_guider(demo_client):
    prompt = tiny("two_stage")
    _node(prompt, "AIPRODGuider").update(video_stg_blocks="1,,0", audio_cfg=1e300)
    error = _one_error(demo_client, prompt)  # the range is ComfyUI's own check, on that input
    assert error["extra_info"]["input_name"] == "audio_cfg"
    _node(prompt, "AIPRODGuider")["audio_cfg"] = 7.0
    assert "video_stg_blocks='1,,0': an empty entry" in _failed(demo_client, prompt, "AIPRODGuider")


def test_missing_model_files_are_one_error_each_on_their_inputs(demo_client):
    prompt = tiny("distilled")
    _node(prompt, "AIPRODTextEncoderLoader").update(gemma="no-such-gemma", checkpoint="no-such-model.safetensors")
    with pytest.raises(PromptRejected) as caught:
        demo_client.queue(prompt)
    ((_, node),) = caught.value.node_errors.items()
    assert sorted(e["extra_info"]["input_name"] for e in node["errors"]) == ["checkpoint", "gemma"]
    assert all(e["type"] == "value_not_in_list" for e in node["errors"])


def test_keyframe_indices_are_parsed_strictly_and_checked_against_the_clip(demo_client):
    prompt = tiny("keyframe_interpolation")
    _node(prompt, "AIPRODKeyframePipeline")["frame_indices"] = "0,,16"
    error = _one_error(demo_client, prompt)
    assert error["extra_info"]["input_name"] == "frame_indices" and "an empty entry" in error["details"]
    _node(prompt, "AIPRODKeyframePipeline")["frame_indices"] = "0, 17"
    assert "frame_indices='0, 17'" in _failed(demo_client, prompt, "AIPRODKeyframePipeline")


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
    result = demo_client.run(prompt, timeout=600)
    assert result.status == "error"
    assert result.error["node_type"] == "AIPRODImageCondition"
    assert "frame_index=9" in result.error["exception_message"]
    prompt["21"]["inputs"]["frame_index"] = -1  # the last frame: valid
    info = probe(saved_video(demo_client, demo_client.run(prompt, timeout=600)))
    assert info["frames"] == SIZES["text_to_video"][2]


def test_bad_checkpoint_fails_at_its_loader_naming_the_file(demo_client):
    name = BAD_FILE_NAMES["no_metadata"]
    prompt = tiny("distilled")
    _node(prompt, "AIPRODCheckpointLoader")["checkpoint"] = name
    result = demo_client.run(prompt, timeout=600)
    assert result.status == "error"
    assert result.error["node_type"] == "AIPRODCheckpointLoader"
    assert name in result.error["exception_message"] and "config" in result.error["exception_message"]
