"""Every node through its V3 schema in-process: registration, tooltips, validation messages naming the parameter,
save / load round trips, lazy LoRA stacking, ComfyUI model management, progress, previews and interruption."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mappings(demo_folders):
    spec = importlib.util.spec_from_file_location("aiprod._registration_probe", REPO_ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "aiprod"  # the pack's relative imports resolve against the registered package
    spec.loader.exec_module(module)
    return module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS


@pytest.fixture
def n(demo_folders):
    from aiprod.nodes import latent_nodes, loader_nodes, output_nodes, pipeline_nodes, sampling_nodes, text_nodes

    return type("Nodes", (), {"loaders": loader_nodes, "text": text_nodes, "pipelines": pipeline_nodes,
                              "sampling": sampling_nodes, "latents": latent_nodes, "output": output_nodes})


def test_every_node_has_schema_category_and_tooltips(mappings):
    classes, names = mappings
    assert len(classes) >= 29 and classes.keys() == names.keys()
    for node_id, cls in classes.items():
        schema = cls.GET_SCHEMA()
        assert schema.node_id == node_id and names[node_id] == schema.display_name
        assert schema.category.startswith("AIPROD/"), node_id
        for item in [*schema.inputs, *schema.outputs]:
            assert item.tooltip, f"{node_id}.{item.id or item.display_name} has no tooltip"
        assert schema.description, node_id


def test_validate_inputs_declares_at_most_one_input_and_combos_are_lists(mappings):
    """ComfyUI files one error per declared parameter: a check there must declare only the input it is about, and
    every combo carries its option list as its type so ComfyUI itself checks it (one error, on that input)."""
    import inspect

    classes, _ = mappings
    for node_id, cls in classes.items():
        declared = cls.__dict__.get("validate_inputs")
        if declared is not None:
            spec = inspect.getfullargspec(cls.validate_inputs)
            assert len(spec.args) <= 2 and spec.varkw is None, (node_id, spec)
        for section in cls.INPUT_TYPES().values():
            for name, entry in section.items():
                if isinstance(entry, tuple) and entry[0] == "COMBO":
                    raise AssertionError(f"{node_id}.{name} is a COMBO that ComfyUI 0.3.75 does not check")


def test_widgets_step_on_the_rule_of_their_pipeline(mappings):
    classes, _ = mappings
    for node_id in ("AIPRODTwoStagePipeline", "AIPRODDistilledPipeline", "AIPRODICLoraPipeline",
                    "AIPRODKeyframePipeline", "AIPRODTextToVideoPipeline", "AIPRODEmptyLatent"):
        inputs = classes[node_id].INPUT_TYPES()["required"]
        multiple = 32 if node_id in ("AIPRODTextToVideoPipeline", "AIPRODEmptyLatent") else 64
        for side in ("width", "height"):
            assert inputs[side][1]["step"] == multiple == inputs[side][1]["min"], (node_id, side)
        assert (inputs["frames"][1]["min"], inputs["frames"][1]["step"]) == (1, 8)  # the frontend snaps to 8k+1
    guider = classes["AIPRODGuider"].INPUT_TYPES()["required"]
    assert guider["video_cfg"][1]["max"] == 100.0 and guider["audio_skip_step"][1]["max"] == 100


def test_empty_latent_reports_every_problem_naming_it(n):
    node = n.latents.AIPRODEmptyLatent
    (bundle,) = node.execute(64, 96, 17, 12.5).args
    assert bundle.latents.video.shape == (1, 128, 3, 3, 2) and bundle.latents.fps == 12.5
    with pytest.raises(ValueError) as info:
        node.execute(100, 40, 10, 0.0)
    lines = str(info.value).splitlines()
    assert [line.split("=")[0] for line in lines] == ["width", "height", "frames", "fps"]
    assert "nearest valid: 9 or 17" in lines[2]


def _pipeline_values(**change):
    return {"width": 96, "height": 64, "frames": 9, "fps": 24.0, "seed": 0, "steps": 2, "image_strength": 1.0,
            "spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 24, **change}


def test_pipelines_check_everything_before_the_prompt_is_encoded(n, demo_models):
    pipelines = n.pipelines
    assert pipelines.AIPRODTextToVideoPipeline.check_lazy_status(**_pipeline_values()) == ["conditioning"]
    assert pipelines.AIPRODTextToVideoPipeline.check_lazy_status(conditioning=object()) == []
    with pytest.raises(ValueError, match="width=96: must be a multiple of 64"):
        pipelines.AIPRODDistilledPipeline.check_lazy_status(**_pipeline_values())
    with pytest.raises(ValueError) as info:
        pipelines.AIPRODTextToVideoPipeline.check_lazy_status(**_pipeline_values(steps=0, spatial_tile=100))
    assert "steps=0" in str(info.value) and "spatial_tile=100" in str(info.value)
    with pytest.raises(ValueError, match=r"frame_indices='0, 9': images\[1\].frame_index=9: out of range"):
        pipelines.AIPRODKeyframePipeline.check_lazy_status(**_pipeline_values(width=64, frame_indices="0, 9"))
    assert pipelines.AIPRODKeyframePipeline.validate_inputs("0,,1").startswith("frame_indices='0,,1': an empty")
    assert pipelines.AIPRODKeyframePipeline.validate_inputs("0, -1") is True
    model = n.loaders.AIPRODCheckpointLoader.execute(demo_models.combo("checkpoint"), "fp32", "upcast").args[0]
    guider = n.sampling.AIPRODGuider.execute(**_guider_values(video_stg_blocks="1", audio_stg_blocks="99")).args[0]
    with pytest.raises(ValueError, match="audio_stg_blocks=\\(99,\\): the model has") as info:
        pipelines.AIPRODTextToVideoPipeline.check_lazy_status(**_pipeline_values(width=64), model=model,
                                                              guider=guider)
    assert "video_stg_blocks" not in str(info.value) and not model.lazy.loaded  # header only, no weights


@pytest.mark.parametrize("choice", ["checkpoints/missing.safetensors", "checkpoints/../../etc/passwd", "/etc/passwd"])
def test_loader_rejects_unlisted_files(n, choice):
    assert choice not in n.loaders.AIPRODCheckpointLoader.INPUT_TYPES()["required"]["checkpoint"][0]
    with pytest.raises(ValueError, match="checkpoint="):
        n.loaders.AIPRODCheckpointLoader.execute(choice, "auto", "upcast")


def test_combo_values_show_the_file_name_first_and_old_values_resolve(n, demo_models):
    from aiprod.nodes.model_files import model_file_options, resolve_model_file, text_encoder_options

    name = demo_models.checkpoint.name
    assert name in model_file_options(("checkpoints",))
    assert f"{name} (checkpoints)" in model_file_options(("vae", "checkpoints"))
    assert demo_models.text_encoder_dir.name in text_encoder_options()
    old = f"checkpoints/{name}"  # the value older versions saved in workflows
    assert resolve_model_file("checkpoint", old, ("checkpoints",)) == resolve_model_file("checkpoint", name,
                                                                                        ("checkpoints",))


def test_text_encoder_loader_reports_both_missing_files(n, demo_models):
    with pytest.raises(ValueError) as info:
        n.loaders.AIPRODTextEncoderLoader.execute("missing-gemma", "missing.safetensors", "auto")
    assert "gemma='missing-gemma'" in str(info.value) and "checkpoint='missing.safetensors'" in str(info.value)


def _guider_values(**change):
    values = {f"{s}_{k}": v for s in ("video", "audio") for k, v in
              (("cfg", 3.0), ("stg", 1.0), ("stg_blocks", "1"), ("rescale", 0.7), ("modality_scale", 3.0),
               ("skip_step", 0))}
    return {**values, **change}


def test_guider_reports_both_streams_and_parses_blocks_strictly(n):
    n.sampling.AIPRODGuider.execute(**_guider_values())
    with pytest.raises(ValueError) as info:
        n.sampling.AIPRODGuider.execute(**_guider_values(video_stg_blocks="1,,0", audio_rescale=1.5,
                                                         audio_cfg=float("nan")))
    message = str(info.value)
    assert "video_stg_blocks='1,,0': an empty entry" in message and "audio_rescale=1.5" in message
    assert "audio_cfg=nan" in message


def test_lora_stack_loads_once_lazily(n, demo_models):
    c = demo_models.combos()
    model, _, _ = n.loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    (one,) = n.loaders.AIPRODLoraLoader.execute(model, c["distilled_lora"], 0.5).args
    two, factor = n.loaders.AIPRODICLoraLoader.execute(one, c["ic_lora"], 1.0).args
    assert [s for _, s in two.loras] == [0.5, 1.0] and factor == 2 == two.reference_downscale_factor
    assert not (model.lazy.loaded or one.lazy.loaded or two.lazy.loaded)
    fused = two.module()
    assert two.lazy.loaded and not model.lazy.loaded
    plain = model.module()
    assert any(not torch.equal(a, b) for a, b in zip(fused.parameters(), plain.parameters(), strict=True))


def test_prompt_and_latent_save_load_round_trip(n, demo_models, demo_folders):
    c = demo_models.combos()
    (encoder,) = n.loaders.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    (contexts,) = n.text.AIPRODTextEncode.execute(encoder, "rain on a tin roof", "", True).args
    import comfy.model_management as mm

    gemma = encoder.gemma.get().encoder
    assert all(loaded.model.model is not gemma for loaded in mm.current_loaded_models)  # unloaded after encoding
    choice = n.text.AIPRODSavePrompt.execute(contexts, "aiprod/prompt").args[0]
    assert n.text.AIPRODLoadPrompt.validate_inputs(choice) is True
    (loaded,) = n.text.AIPRODLoadPrompt.execute(choice).args
    assert torch.equal(loaded.positive.video, contexts.positive.video)
    assert torch.equal(loaded.negative.audio, contexts.negative.audio)
    (bundle,) = n.latents.AIPRODEmptyLatent.execute(64, 64, 9, 23.976).args
    latent_choice = n.latents.AIPRODSaveLatent.execute(bundle, "aiprod/latent").args[0]
    with pytest.raises(ValueError, match="expected an AIPROD 'prompt_contexts' file"):
        n.text.AIPRODLoadPrompt.execute(latent_choice)
    (back,) = n.latents.AIPRODLoadLatent.execute(latent_choice).args
    assert back.latents.frames == 9 and back.latents.fps == 23.976
    assert torch.equal(back.latents.audio, bundle.latents.audio)
    assert "latent_file=" in n.latents.AIPRODLoadLatent.validate_inputs("output/../../x.safetensors")
    path = Path(demo_folders.get_output_directory()) / latent_choice.partition("/")[2]
    tensors = {"video": torch.zeros(1, 128, 2, 2, 2), "audio": torch.zeros(1, 8, 9, 16),
               "frames": torch.tensor(10**7), "fps": torch.tensor(float("nan"), dtype=torch.float64)}
    save_file(tensors, str(path), metadata={"aiprod_kind": "av_latents"})
    with pytest.raises(ValueError) as info:  # an absurd file is refused before anything is allocated from it
        n.latents.AIPRODLoadLatent.execute(latent_choice)
    assert "frames=10000000" in str(info.value) and "fps=nan" in str(info.value)
    save_file({"negative.video": torch.zeros(1, 4, 8)}, str(path), metadata={"aiprod_kind": "prompt_contexts"})
    with pytest.raises(ValueError, match="no positive.video tensor"):
        n.text.AIPRODLoadPrompt.execute(latent_choice)


def test_image_condition_resolves_negative_indices(n):
    (bundle,) = n.latents.AIPRODEmptyLatent.execute(64, 64, 17, 24.0).args
    image = torch.rand(1, 40, 50, 3)
    (one,) = n.latents.AIPRODImageCondition.execute(bundle, image, -1, 1.0, 33.0, False).args
    assert one.images[0].frame_index == 16
    with pytest.raises(ValueError, match="frame_index"):
        n.latents.AIPRODImageCondition.execute(one, image, 16, 1.0, 33.0, False)  # frame 16 already taken
    with pytest.raises(ValueError, match="frame_index=17"):
        n.latents.AIPRODImageCondition.execute(bundle, image, 17, 1.0, 33.0, False)


def test_save_video_mov_and_mp4_under_output(n, demo_folders):
    frames = torch.rand(9, 64, 96, 3)
    audio = {"waveform": torch.rand(1, 2, 20000) - 0.5, "sample_rate": 48000}
    for label, suffix in (("mov (ProRes 422 HQ + PCM)", ".mov"), ("mp4 (H.264 + AAC)", ".mp4")):
        result = n.output.AIPRODSaveVideo.execute(frames, 24.0, "clips/test", label, 19, audio)
        ui = result.ui.as_dict()
        (saved,) = ui["images"]
        assert ui["animated"] == (True,) and saved["subfolder"] == "clips" and saved["filename"].endswith(suffix)
        path = Path(demo_folders.get_output_directory()) / saved["subfolder"] / saved["filename"]
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 9
    with pytest.raises(Exception, match="output"):  # ComfyUI refuses prefixes that leave the output folder
        n.output.AIPRODSaveVideo.execute(frames, 24.0, "../../escape", "mp4 (H.264 + AAC)", 19, None)


def test_sampler_reports_progress_previews_and_stops_on_interrupt(n, demo_models, comfy_cpu, monkeypatch):
    import comfy.utils

    c = demo_models.combos()
    model, _, _ = n.loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    contexts = _demo_contexts(n, demo_models)
    (bundle,) = n.latents.AIPRODEmptyLatent.execute(64, 64, 9, 24.0).args
    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        calls.append((value, total, preview)))
    n.sampling.AIPRODSampler.execute(model, bundle, contexts, "distilled", 1, 0)
    assert [(v, t) for v, t, _ in calls] == [(i, 8) for i in range(1, 9)]
    assert all(p is not None and p[0] == "JPEG" and p[1].size == (16, 16) for _, _, p in calls)
    assert any(getattr(m, "model", None) is model.module() for m in
               [lm.model for lm in comfy_cpu.current_loaded_models])  # ComfyUI manages (and may evict) it
    comfy_cpu.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy_cpu.InterruptProcessingException):
            n.sampling.AIPRODSampler.execute(model, bundle, contexts, "distilled", 1, 0)
    finally:
        comfy_cpu.interrupt_current_processing(False)


def _demo_contexts(n, demo_models):
    c = demo_models.combos()
    (encoder,) = n.loaders.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    return n.text.AIPRODTextEncode.execute(encoder, "wind", "", False).args[0]


def test_reference_video_from_image_frames_or_core_video(n):
    from fractions import Fraction

    from comfy_api.latest import InputImpl, Types

    (bundle,) = n.latents.AIPRODEmptyLatent.execute(64, 64, 9, 24.0).args
    frames = torch.rand(12, 40, 40, 3)
    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, frame_rate=Fraction(24)))
    (from_video,) = n.latents.AIPRODReferenceVideo.execute(bundle, 1, 1.0, 0.5, video=video).args
    (from_frames,) = n.latents.AIPRODReferenceVideo.execute(bundle, 1, 1.0, 0.5, frames=frames).args
    assert torch.equal(from_video.references[0].video, from_frames.references[0].video)
    assert from_video.references[0].attention_strength == 0.5 and from_video.downscale_factor == 1
    with pytest.raises(ValueError, match="reference_downscale_factor=4"):
        n.latents.AIPRODReferenceVideo.execute(bundle, 4, 1.0, 1.0, frames=frames)  # 64 / 4 is off the 32 grid
    with pytest.raises(ValueError, match="connect 'frames'"):
        n.latents.AIPRODReferenceVideo.execute(bundle, 1, 1.0, 1.0)
