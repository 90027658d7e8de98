"""AIPRODCheckpointInspect through its V3 schema, in-process (ComfyUI importable, no server)."""

from __future__ import annotations

import json

import pytest
from support.bad_files import write_component_file

CHECKPOINT_KEYS = {
    "model.diffusion_model.patchify_proj.weight": (16, 128),
    "vae.decoder.conv_in.conv.weight": (8, 128, 3, 3, 3),
    "audio_vae.decoder.conv_in.conv.weight": (8, 8, 3, 3),
    "vocoder.conv_pre.weight": (8, 128, 7),
}


@pytest.fixture
def node(comfy_modules, tmp_path):
    folder_paths = comfy_modules
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    write_component_file(ckpt_dir / "tiny.safetensors", CHECKPOINT_KEYS,
                         metadata={"config": json.dumps({"transformer": {}}), "model_version": "2.0.0"})
    saved = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    folder_paths.folder_names_and_paths["checkpoints"] = ([str(ckpt_dir)], {".safetensors"})
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(tmp_path / "none")], {".safetensors"})
    folder_paths.folder_names_and_paths["text_encoders"] = ([str(tmp_path / "none")], {".safetensors"})
    folder_paths.filename_list_cache.clear()
    from aiprod.nodes.inspect_nodes import AIPRODCheckpointInspect

    yield AIPRODCheckpointInspect
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.filename_list_cache.clear()


def test_schema_lists_files_with_tooltips(node):
    schema = node.define_schema()
    assert schema.node_id == "AIPRODCheckpointInspect"
    assert schema.category.startswith("AIPROD/")
    assert schema.is_output_node
    (checkpoint,) = schema.inputs
    assert checkpoint.options == ["tiny.safetensors (checkpoints)"]  # the file name first, then its folder
    assert node.INPUT_TYPES()["required"]["checkpoint"][0] == ["tiny.safetensors (checkpoints)"]  # checked by ComfyUI
    assert [o.display_name for o in schema.outputs] == ["report"]
    assert all(i.tooltip for i in schema.inputs)


def test_execute_reports_components(node):
    out = node.execute(checkpoint="tiny.safetensors (checkpoints)")
    report = out.result[0]
    assert "LTX-2 (19B family)" in report
    for name in ("transformer", "video_vae", "audio_vae", "vocoder"):
        assert name in report
    assert out.ui.as_dict() == {"text": (report,)}


@pytest.mark.parametrize("choice", [
    "checkpoints/../../etc/passwd", "/etc/passwd", "../tiny.safetensors", "vae/tiny.safetensors",
    "checkpoints/", "checkpoints/missing.safetensors",
])
def test_only_listed_files_are_accepted(node, choice):
    with pytest.raises(ValueError, match=r"checkpoint=") as info:
        node.execute(checkpoint=choice)
    assert f"checkpoint={choice!r}: no such file" in str(info.value)


def test_a_value_saved_by_an_older_version_still_resolves(node):
    assert "LTX-2 (19B family)" in node.execute(checkpoint="checkpoints/tiny.safetensors").result[0]
