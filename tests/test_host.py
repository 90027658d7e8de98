"""End-to-end through a real ComfyUI server: the pack loads, lists its node, runs prompts, survives bad input."""

from __future__ import annotations

import pytest
from support.bad_files import BAD_FILE_NAMES
from support.comfy_host import PromptRejected
from support.workflows import api_workflows, ui_templates, ui_to_api

pytestmark = pytest.mark.host

NODE = "AIPRODCheckpointInspect"


def inspect_prompt(checkpoint: str) -> dict:
    return {"1": {"class_type": NODE, "inputs": {"checkpoint": checkpoint}}}


def choice(name: str) -> str:
    """The Inspect node's combo value of a file in models/checkpoints (its input spans two folders)."""
    return f"{name} (checkpoints)"


def report_of(result) -> str:
    assert result.ok, result.error
    return result.outputs["1"]["text"][0]


def test_server_lists_the_node_with_model_choices(comfy, host_models):
    info = comfy.object_info(NODE)[NODE]
    assert info["category"] == "AIPROD/loaders"
    assert info["output_node"] is True
    assert info["python_module"].startswith("custom_nodes.")
    options = info["input"]["required"]["checkpoint"][0]  # the option list is the type: ComfyUI checks it
    assert options == info["input"]["required"]["checkpoint"][1]["options"]
    assert choice(host_models["ltx2"]) in options and choice(host_models["ltx23"]) in options
    assert choice(BAD_FILE_NAMES["truncated"]) in options


@pytest.mark.parametrize(("model", "generation", "projection"), [
    ("ltx2", "LTX-2 (19B family)", "text_projection"),
    ("ltx23", "LTX-2.3 (22B family)", "text_projection"),
])
def test_inspect_prompt_reports_components(comfy, host_models, model, generation, projection):
    report = report_of(comfy.run(inspect_prompt(choice(host_models[model])), timeout=120))
    assert f"Generation: {generation}" in report
    assert "Kind: single-file checkpoint" in report
    for component in ("transformer", "video_vae", "audio_vae", "vocoder", projection):
        assert f"  {component} " in report, component
    assert "BF16" in report


@pytest.mark.parametrize(("defect", "phrase"), [
    ("not_safetensors", "not a valid safetensors file"),
    ("truncated", "is truncated"),
    ("no_metadata", "has no `config` metadata"),
    ("lfs_pointer", "git-LFS pointer"),
])
def test_bad_file_gives_execution_error_naming_it_and_server_keeps_serving(comfy, host_models, defect, phrase):
    name = BAD_FILE_NAMES[defect]
    result = comfy.run(inspect_prompt(choice(name)), timeout=120)
    assert result.status == "error"
    error = result.error
    assert error["node_type"] == NODE
    assert name in error["exception_message"]
    assert phrase in error["exception_message"]
    assert error["exception_type"].endswith("CheckpointFormatError")
    # The server still works: a good prompt right after succeeds.
    assert "transformer" in report_of(comfy.run(inspect_prompt(choice(host_models["ltx23"])), timeout=120))


@pytest.mark.parametrize("value", ["checkpoints/../../etc/passwd", "/etc/passwd", "not-a-listed-file"])
def test_unlisted_file_is_rejected_before_running(comfy, host_models, value):
    with pytest.raises(PromptRejected) as info:
        comfy.queue(inspect_prompt(value))
    assert info.value.status == 400
    (error,) = info.value.node_errors["1"]["errors"]  # exactly one error, on the input that is wrong
    assert error["type"] == "value_not_in_list" and error["extra_info"]["input_name"] == "checkpoint"
    assert error["details"].startswith(f"checkpoint: '{value}' not in ")


def test_examples_convert_and_run(comfy, host_models):
    object_info = comfy.object_info()
    templates, apis = ui_templates(), api_workflows()
    assert templates.keys() == apis.keys()
    for name, template in templates.items():
        assert ui_to_api(template, object_info) == {
            node_id: {"class_type": n["class_type"], "inputs": n["inputs"]} for node_id, n in apis[name].items()
        }, name
    prompt = apis["inspect_checkpoint"]
    prompt["1"]["inputs"]["checkpoint"] = choice(host_models["ltx23"])
    assert "LTX-2.3" in report_of(comfy.run(prompt, timeout=120))
