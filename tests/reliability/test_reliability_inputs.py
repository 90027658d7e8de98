"""Bad input through the real host over HTTP: each is refused with a message naming what is wrong (HTTP 400
``node_errors`` details, or an ``execution_error`` exception message), the server keeps serving, and no file (not
even a partial one) appears in the output folder."""

from __future__ import annotations

import json
import math
import os

import pytest
import requests
from support.comfy_host import PromptRejected
from support.reliability_fixtures import BAD, choice, tiny_workflow

pytestmark = pytest.mark.host

LONG = 10**6


def _node(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)["inputs"]


def _rejected(rel, client, prompt: dict, *phrases: str) -> str:
    before = rel.output_files()
    with pytest.raises(PromptRejected) as caught:
        client.queue(prompt)
    assert caught.value.status == 400
    details = " | ".join(e.get("details", "") + " " + e.get("message", "")
                         for n in caught.value.node_errors.values() for e in n["errors"])
    for phrase in phrases:
        assert phrase in details, (phrase, details)
    assert rel.answers()
    assert rel.output_files() == before
    return details


def _failed(rel, client, prompt: dict, node_type: str, *phrases: str) -> str:
    before = rel.output_files()
    result = client.run(prompt, timeout=300)
    assert result.status == "error", result.outputs
    error = result.error
    assert error is not None and error["node_type"] == node_type, error
    for phrase in phrases:
        assert phrase in error["exception_message"], (phrase, error["exception_message"])
    assert rel.answers()
    assert rel.output_files() == before
    return error["exception_message"]


def _one_error(rel, client, prompt: dict, name: str, *phrases: str) -> dict:
    """HTTP 400 with exactly one error, on input ``name``, naming what is wrong; nothing written, the server keeps
    serving."""
    before = rel.output_files()
    with pytest.raises(PromptRejected) as caught:
        client.queue(prompt)
    errors = [e for n in caught.value.node_errors.values() for e in n["errors"]]
    assert [e.get("extra_info", {}).get("input_name") for e in errors] == [name], errors
    for phrase in phrases:
        assert phrase in errors[0]["details"] + " " + errors[0]["message"], (phrase, errors)
    assert rel.answers()
    assert rel.output_files() == before
    return errors[0]


# ---- ranges: ComfyUI's own min / max, one error on the input (no node declares them in validate_inputs) ----------

@pytest.mark.parametrize(("workflow", "node", "change", "name"), [
    ("text_to_video", "AIPRODEmptyLatent", {"width": -64}, "width"),
    ("text_to_video", "AIPRODEmptyLatent", {"height": 0}, "height"),
    ("text_to_video", "AIPRODEmptyLatent", {"width": LONG}, "width"),
    ("text_to_video", "AIPRODEmptyLatent", {"frames": 0}, "frames"),
    ("text_to_video", "AIPRODEmptyLatent", {"fps": 0.0}, "fps"),
    ("text_to_video", "AIPRODEmptyLatent", {"fps": 1e-6}, "fps"),
    ("distilled", "AIPRODDistilledPipeline", {"fps": 0.001}, "fps"),
    ("text_to_video", "AIPRODEmptyLatent", {"fps": 1e6}, "fps"),
    ("two_stage", "AIPRODTwoStagePipeline", {"steps": 0}, "steps"),
    ("two_stage", "AIPRODTwoStagePipeline", {"steps": LONG}, "steps"),
    ("distilled", "AIPRODDistilledPipeline", {"seed": -1}, "seed"),
    ("distilled", "AIPRODDistilledPipeline", {"seed": 2**64}, "seed"),
    ("text_to_video", "AIPRODSaveVideo", {"crf": 99}, "crf"),
    ("text_to_video", "AIPRODSaveVideo", {"fps": 0.0}, "fps"),
    ("text_to_video", "AIPRODSampler", {"steps": -3}, "steps"),
    ("text_to_video", "AIPRODGuider", {"video_rescale": 1.5}, "video_rescale"),
    ("text_to_video", "AIPRODGuider", {"audio_skip_step": 10**9}, "audio_skip_step"),
    ("text_to_video", "AIPRODGuider", {"video_cfg": 1e300}, "video_cfg"),
    ("text_to_video", "AIPRODSampler", {"schedule": "fast"}, "schedule"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_out_of_range_value_is_one_error_on_its_input(rel, rel_client, workflow, node, change, name):
    prompt = tiny_workflow(workflow)
    _node(prompt, node).update(change)
    _one_error(rel, rel_client, prompt, name, name)


# ---- grids and cross-input rules: the node's own check, before any model work, every problem at once ------------

@pytest.mark.parametrize(("workflow", "node", "change", "phrases"), [
    ("text_to_video", "AIPRODEmptyLatent", {"width": 100}, ("width=100", "multiple of 32", "96 or 128")),
    ("distilled", "AIPRODDistilledPipeline", {"height": 96}, ("height=96", "multiple of 64")),
    ("text_to_video", "AIPRODEmptyLatent", {"frames": 10}, ("frames=10", "8k+1", "9 or 17")),
    ("distilled", "AIPRODDistilledPipeline", {"width": 8192, "height": 8192, "frames": 257},
     ("video latent tokens", "budget")),
    ("distilled", "AIPRODDistilledPipeline", {"spatial_tile": 100}, ("spatial_tile=100",)),
    ("distilled", "AIPRODDistilledPipeline", {"temporal_tile": 16, "temporal_overlap": 16}, ("temporal_overlap",)),
    ("text_to_video", "AIPRODVideoDecode", {"spatial_tile": 32}, ("spatial_tile=32",)),
    ("text_to_video", "AIPRODGuider", {"video_stg_blocks": "1,,0"}, ("video_stg_blocks='1,,0'", "empty entry")),
    ("text_to_video", "AIPRODGuider", {"audio_stg_blocks": "x"}, ("audio_stg_blocks='x'", "not an integer")),
    ("text_to_video", "AIPRODGuider", {"video_stg_blocks": "99999"}, ("video_stg_blocks=(99999,)", "30 transformer")),
], ids=lambda v: v if isinstance(v, str) else None)
def test_off_grid_value_fails_at_its_node_naming_it(rel, rel_client, workflow, node, change, phrases):
    prompt = tiny_workflow(workflow)
    _node(prompt, node).update(change)
    where = "AIPRODSampler" if change.get("video_stg_blocks") == "99999" else node  # where model and guider meet
    _failed(rel, rel_client, prompt, where, *phrases)


@pytest.mark.parametrize(("node", "name", "value", "phrase"), [
    ("AIPRODEmptyLatent", "fps", math.nan, "fps=nan"),
    ("AIPRODEmptyLatent", "fps", math.inf, "fps=inf"),
    ("AIPRODGuider", "video_cfg", math.nan, "nan"),
    ("AIPRODGuider", "audio_stg", -math.inf, "-inf"),
    ("AIPRODSaveVideo", "fps", math.nan, "fps=nan"),
])
def test_nan_and_infinity_from_json_are_refused(rel, rel_client, node, name, value, phrase):
    """ComfyUI's ``request.json()`` (Python's json) accepts the NaN / Infinity literals a client may send, and
    ComfyUI's min / max checks let NaN through (every comparison with NaN is false): infinity is out of range (one
    error on the input), NaN is refused by the node itself, naming it, before any model work."""
    prompt = tiny_workflow("text_to_video")
    _node(prompt, node)[name] = value
    before = rel.output_files()
    response = requests.post(f"{rel.host.url}/prompt", data=json.dumps({"prompt": prompt}, allow_nan=True),
                             headers={"Content-Type": "application/json"}, timeout=60)
    if response.status_code == 400:
        errors = [e for n in response.json()["node_errors"].values() for e in n["errors"]]
        assert [e["extra_info"]["input_name"] for e in errors] == [name], errors
    else:
        result = rel_client.wait(response.json()["prompt_id"], timeout=300)
        assert result.status == "error" and result.error["node_type"] == node, result.error
        assert phrase in result.error["exception_message"]
    assert rel.answers()
    assert rel.output_files() == before


@pytest.mark.parametrize(("indices", "phrase", "at_queue"), [
    ("0, 9", "frame_indices='0, 9'", False),
    ("0, -10", "frame_indices='0, -10'", False),
    ("0, zero", "'zero' is not an integer", True),
    ("1,,0", "an empty entry", True),
    ("0, 0", "already has", False),
])
def test_bad_keyframe_indices_are_refused(rel, rel_client, indices, phrase, at_queue):
    prompt = tiny_workflow("keyframe_interpolation")
    _node(prompt, "AIPRODKeyframePipeline")["frame_indices"] = indices
    if at_queue:  # the one input the node's validate_inputs declares
        _one_error(rel, rel_client, prompt, "frame_indices", phrase)
    else:
        _failed(rel, rel_client, prompt, "AIPRODKeyframePipeline", phrase)


# ---- model files: only listed names, never paths --------------------------------------------------------------

@pytest.mark.parametrize(("node", "name", "value"), [
    ("AIPRODCheckpointLoader", "checkpoint", "checkpoints/../../../etc/passwd"),
    ("AIPRODCheckpointLoader", "checkpoint", "/etc/passwd"),
    ("AIPRODTextEncoderLoader", "gemma", "text_encoders/../../.."),
    ("AIPRODTextEncoderLoader", "gemma", "/root"),
    ("AIPRODUpsamplerLoader", "upsampler", "latent_upscale_models/../checkpoints/../../x.safetensors"),
    ("AIPRODLoraLoader", "lora", "loras/../../../../etc/shadow"),
    ("AIPRODCheckpointLoader", "checkpoint", choice(BAD["directory"])),
])
def test_paths_and_unlisted_names_are_rejected(rel, rel_client, node, name, value):
    prompt = tiny_workflow("two_stage")
    _node(prompt, node)[name] = value
    _one_error(rel, rel_client, prompt, name, f"{name}: '{value}' not in")


def test_load_latent_refuses_a_path_outside_the_folders(rel, rel_client):
    prompt = {"1": {"class_type": "AIPRODLoadLatent", "inputs": {"latent_file": "output/../../../etc/passwd"}},
              "2": {"class_type": "AIPRODSaveLatent", "inputs": {"latent": ["1", 0], "filename_prefix": "x"}}}
    _rejected(rel, rel_client, prompt, "latent_file='output/../../../etc/passwd'")


# ---- defective files: an execution error naming the file and the defect ----------------------------------------

@pytest.mark.parametrize(("bad", "phrase"), [
    ("truncated", "is truncated"),
    ("not_safetensors", "not a valid safetensors file"),
    ("renamed_pickle", "another format renamed to .safetensors"),
    ("lfs_checkpoint", "git-LFS pointer"),
    ("empty", "empty"),
])
def test_corrupt_checkpoint_fails_naming_the_file(rel, rel_client, bad, phrase):
    prompt = tiny_workflow("distilled")
    _node(prompt, "AIPRODCheckpointLoader")["checkpoint"] = choice(BAD[bad])
    message = _failed(rel, rel_client, prompt, "AIPRODCheckpointLoader", phrase)
    assert os.path.basename(BAD[bad]) in message


def test_unreadable_checkpoint_fails_naming_the_file(rel, rel_client):
    """chmod 000 cannot stop root (CI runs as root): there the read is made to fail with EACCES in the server by
    the fault package, exactly where the OS would fail it (``open``); as another user a real chmod 000 is used."""
    path = rel.host.models_dir("checkpoints") / os.path.basename(BAD["unreadable"])
    prompt = tiny_workflow("distilled")
    _node(prompt, "AIPRODCheckpointLoader")["checkpoint"] = choice(BAD["unreadable"])
    if os.geteuid() != 0:
        path.chmod(0)
        try:
            _failed(rel, rel_client, prompt, "AIPRODCheckpointLoader", path.name, "permission denied")
        finally:
            path.chmod(0o644)
        return
    with rel.fault("eacces", name=path.name):
        _failed(rel, rel_client, prompt, "AIPRODCheckpointLoader", path.name, "permission denied")


def test_git_lfs_pointer_as_tokenizer_fails_naming_it(rel, rel_client):
    prompt = tiny_workflow("distilled")
    _node(prompt, "AIPRODTextEncoderLoader")["gemma"] = choice(BAD["lfs_tokenizer"])
    _failed(rel, rel_client, prompt, "AIPRODTextEncoderLoader", "tokenizer.json: is a git-LFS pointer", "git lfs pull")


@pytest.mark.parametrize(("node", "name", "bad", "phrases"), [
    ("AIPRODCheckpointLoader", "checkpoint", "upsampler_as_checkpoint",
     ("does not contain a transformer", "latent upsampler file", "latent upscale model loader")),
    ("AIPRODCheckpointLoader", "checkpoint", "lora_as_checkpoint", ("is a LoRA, not a transformer", "LoRA loader")),
    ("AIPRODUpsamplerLoader", "upsampler", "checkpoint_as_upsampler",
     ("does not contain a latent upsampler", "single-file checkpoint")),
    ("AIPRODTextEncoderLoader", "gemma", "checkpoint_as_gemma", ("does not contain a Gemma-3 text model",)),
    ("AIPRODTextEncoderLoader", "checkpoint", "upsampler_as_checkpoint",
     ("does not contain a text projection", "latent upsampler file")),
])
def test_wrong_model_type_in_a_loader_slot_fails_naming_it(rel, rel_client, node, name, bad, phrases):
    """Each loader checks what the file holds when it runs (before any model work) and says where it belongs."""
    prompt = tiny_workflow("distilled")
    spans = (node, name) == ("AIPRODTextEncoderLoader", "checkpoint")  # checkpoints / text_encoders / diffusion_models
    _node(prompt, node)[name] = choice(BAD[bad], spans_folders=spans)
    message = _failed(rel, rel_client, prompt, node, *phrases)
    assert os.path.basename(BAD[bad]) in message


@pytest.mark.parametrize(("bad", "phrase"), [
    ("upsampler_as_lora", "LoRA"),
    ("foreign_lora", "does not match the model's"),
])
def test_lora_that_does_not_fit_fails_naming_it(rel, rel_client, bad, phrase):
    """The LoRA node itself checks (headers only) that the LoRA fits the model: it fails before any model work."""
    prompt = tiny_workflow("two_stage")
    _node(prompt, "AIPRODLoraLoader")["lora"] = choice(BAD[bad])
    message = _failed(rel, rel_client, prompt, "AIPRODLoraLoader", phrase)
    assert os.path.basename(BAD[bad]) in message


def _split_loader_prompt(loader: str, slot: str, choice: str) -> dict:
    """text_to_video with the video (or audio) VAE from a split loader instead of the checkpoint."""
    prompt = tiny_workflow("text_to_video")
    prompt["20"] = {"class_type": loader, "inputs": {slot: choice, "weight_dtype": "auto"}}
    if loader == "AIPRODVideoVAELoader":
        _node(prompt, "AIPRODVideoDecode")["video_vae"] = ["20", 0]
    else:
        _node(prompt, "AIPRODAudioDecode")["audio_vae"] = ["20", 0]
    return prompt


@pytest.mark.parametrize(("loader", "slot", "bad", "phrase"), [
    ("AIPRODVideoVAELoader", "vae", "upsampler_as_vae", "does not contain a video VAE"),
    ("AIPRODAudioVAELoader", "audio_vae", "lora_as_audio_vae", "is a LoRA, not a audio VAE"),
])
def test_wrong_file_in_a_vae_slot_fails_naming_it(rel, rel_client, loader, slot, bad, phrase):
    message = _failed(rel, rel_client, _split_loader_prompt(loader, slot, choice(BAD[bad], spans_folders=True)),
                      loader, phrase)
    assert os.path.basename(BAD[bad]) in message


def test_wrong_file_in_the_diffusion_model_slot_fails_naming_it(rel, rel_client):
    prompt = tiny_workflow("text_to_video")
    prompt["20"] = {"class_type": "AIPRODDiffusionModelLoader",
                    "inputs": {"model_file": choice(BAD["lora_as_diffusion_model"]), "weight_dtype": "auto",
                               "fp8": "upcast"}}
    _node(prompt, "AIPRODSampler")["model"] = ["20", 0]
    message = _failed(rel, rel_client, prompt, "AIPRODDiffusionModelLoader", "is a LoRA, not a transformer")
    assert os.path.basename(BAD["lora_as_diffusion_model"]) in message


# ---- images and keyframes checked against linked latents: execution errors ------------------------------------

def _conditioned(image_size: tuple[int, int], frame_index: int) -> dict:
    prompt = tiny_workflow("text_to_video")
    prompt["20"] = {"class_type": "EmptyImage", "inputs": {"width": image_size[0], "height": image_size[1],
                                                          "batch_size": 1, "color": 0}}
    prompt["21"] = {"class_type": "AIPRODImageCondition", "inputs": {
        "latent": ["5", 0], "image": ["20", 0], "frame_index": frame_index, "strength": 1.0, "crf": 33.0,
        "as_keyframe": False}}
    prompt["6"]["inputs"]["latent"] = ["21", 0]
    prompt["6"]["inputs"]["video_vae"] = ["1", 1]
    return prompt


def test_keyframe_index_past_the_clip_fails_naming_it(rel, rel_client):
    _failed(rel, rel_client, _conditioned((32, 32), 100), "AIPRODImageCondition", "frame_index=100", "0..8")


def test_image_too_small_to_condition_fails_naming_it(rel, rel_client):
    _failed(rel, rel_client, _conditioned((1, 1), 0), "AIPRODImageCondition", "(1, 1)", "2x2")


def test_reference_video_off_the_downscaled_grid_fails_naming_it(rel, rel_client):
    prompt = {
        "1": {"class_type": "AIPRODEmptyLatent", "inputs": {"width": 64, "height": 64, "frames": 9, "fps": 24.0}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 80, "batch_size": 9, "color": 0}},
        "3": {"class_type": "AIPRODReferenceVideo", "inputs": {
            "latent": ["1", 0], "frames": ["2", 0], "reference_downscale_factor": 3, "strength": 1.0,
            "attention_strength": 1.0}},
        "4": {"class_type": "AIPRODSaveLatent", "inputs": {"latent": ["3", 0], "filename_prefix": "rel/ref"}},
    }
    _failed(rel, rel_client, prompt, "AIPRODReferenceVideo", "reference_downscale_factor=3", "multiple of")


def test_keyframe_count_differs_from_images_fails_naming_it(rel, rel_client):
    prompt = tiny_workflow("keyframe_interpolation")
    _node(prompt, "AIPRODKeyframePipeline")["frame_indices"] = "0"
    _failed(rel, rel_client, prompt, "AIPRODKeyframePipeline", "frame_indices='0'", "1 indices for 2 images")


def test_save_video_with_a_tiny_frame_rate_is_refused_before_running(rel, rel_client):
    """fps=1e-6 would pad the audio to 9 / 1e-6 seconds (days of samples, memory exhausted): Save Video's fps range
    refuses it (one error, on fps) before any generation runs."""
    prompt = tiny_workflow("text_to_video")
    _node(prompt, "AIPRODSaveVideo")["fps"] = 1e-6
    _one_error(rel, rel_client, prompt, "fps", "fps")


def test_filename_prefix_with_a_nul_byte_is_refused_before_running(rel, rel_client):
    """FFmpeg opened the name cut at the NUL and left ``.a`` behind: refused up front now."""
    prompt = tiny_workflow("text_to_video")
    _node(prompt, "AIPRODSaveVideo")["filename_prefix"] = "a\x00b"
    _one_error(rel, rel_client, prompt, "filename_prefix", "filename_prefix=", "NUL bytes")


def test_empty_filename_prefix_is_refused_or_gives_a_visible_file(rel, rel_client):
    prompt = tiny_workflow("text_to_video")
    _node(prompt, "AIPRODSaveVideo")["filename_prefix"] = ""
    before = rel.output_files()
    try:
        result = rel_client.run(prompt, timeout=300)
    except PromptRejected as rejected:
        assert "filename_prefix" in str(rejected.node_errors)
        return
    new = rel.output_files() - before
    for name in new:  # keep the output folder clean for the other tests
        if name.startswith("."):
            (rel.output_dir / name).unlink()
    assert result.ok and new and not any(os.path.basename(n).startswith(".") for n in new), new


# ---- prompts: empty is allowed, absurdly long is clipped with a warning; both run -----------------------------

def test_empty_and_absurdly_long_prompts_run(rel, rel_client):
    prompt = tiny_workflow("distilled")
    _node(prompt, "AIPRODTextEncode")["prompt"] = ""
    result = rel_client.run(prompt, timeout=300)
    assert result.ok, result.error
    _node(prompt, "AIPRODTextEncode")["prompt"] = "a fox in the snow, " * 20000  # 380,000 characters
    result = rel_client.run(prompt, timeout=300)
    assert result.ok, result.error
    assert "tokens; only the first 1024 reach the model" in rel.host.log_tail(400000)


# ---- saved latents and prompt files: checked on load against what the sampler and decoders accept --------------

def _saved(rel, name: str, tensors: dict, kind: str) -> str:
    """A file in ComfyUI's input folder as 'AIPROD Load ...' lists it."""
    import torch
    from safetensors.torch import save_file

    path = rel.host.base_dir / "input" / name
    save_file({k: torch.as_tensor(v) for k, v in tensors.items()}, str(path), metadata={"aiprod_kind": kind})
    return f"input/{name}"


def _latent_prompt(choice_: str) -> dict:
    return {"1": {"class_type": "AIPRODLoadLatent", "inputs": {"latent_file": choice_}},
            "2": {"class_type": "AIPRODSaveLatent", "inputs": {"latent": ["1", 0], "filename_prefix": "rel/latent"}}}


@pytest.mark.parametrize(("frames", "fps", "phrases"), [
    (9, 0.000864, ("fps=0.000864", "[1, 240]")),
    (9, math.nan, ("fps=nan",)),
    (10**7, 24.0, ("frames=10000000", "8k+1")),
])
def test_absurd_saved_latent_is_refused_before_anything_is_allocated(rel, rel_client, frames, fps, phrases):
    import torch

    name = _saved(rel, f"rel_absurd_{frames}_{fps}.safetensors", {
        "video": torch.zeros(1, 128, 2, 2, 2), "audio": torch.zeros(1, 8, 9, 16), "frames": torch.tensor(frames),
        "fps": torch.tensor(fps, dtype=torch.float64)}, "av_latents")
    _failed(rel, rel_client, _latent_prompt(name), "AIPRODLoadLatent", name, *phrases)


def test_saved_latent_without_a_video_tensor_is_named_not_a_key_error(rel, rel_client):
    import torch

    name = _saved(rel, "rel_no_video.safetensors", {"audio": torch.zeros(1, 8, 9, 16), "frames": torch.tensor(9),
                                                    "fps": torch.tensor(24.0)}, "av_latents")
    message = _failed(rel, rel_client, _latent_prompt(name), "AIPRODLoadLatent", "no video tensor")
    assert "KeyError" not in message


def test_prompt_file_of_another_width_fails_before_sampling(rel, rel_client):
    """Contexts from another model's text encoder: refused where they meet the model, before any weights load."""
    import torch

    name = _saved(rel, "rel_wide_prompt.safetensors", {"positive.video": torch.zeros(1, 8, 4096),
                                                       "positive.audio": torch.zeros(1, 8, 2048)}, "prompt_contexts")
    prompt = tiny_workflow("distilled")
    encode = next(k for k, v in prompt.items() if v["class_type"] == "AIPRODTextEncode")
    prompt[encode] = {"class_type": "AIPRODLoadPrompt", "inputs": {"prompt_file": name}}
    _failed(rel, rel_client, prompt, "AIPRODDistilledPipeline", "positive video context: shape (1, 8, 4096)",
            "expected (B, S, 64)")
    assert rel_client.run(tiny_workflow("distilled"), timeout=300).ok  # the next valid prompt is served
