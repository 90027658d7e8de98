"""`config` metadata checked against the file's tensors before any module is built: hostile sizes and values that
contradict the tensors are CheckpointFormatErrors naming the file, the config key, its value and what the tensors
say; every fact the check relies on holds for our own modules."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file
from support import tiny_configs as tc
from support.tiny_checkpoints import safetensors_bytes

from aiprod.loaders import components
from aiprod.loaders.component_loader import load_component, plan_load
from aiprod.loaders.config_facts import FACTS, Dim
from aiprod.loaders.errors import CheckpointFormatError
from aiprod.loaders.safetensors_header import read_header
from aiprod.loaders.text_encoder_files import find_gemma_files

CHECKPOINT_COMPONENTS = ("transformer", "video_encoder", "video_decoder", "audio_encoder", "audio_decoder",
                         "vocoder", "text_embeddings")


@pytest.fixture(scope="module")
def tensors(tiny_set):
    return {generation: load_file(str(tiny_set.checkpoint(generation))) for generation in tc.GENERATIONS}


def _with_config(tmp_path, tiny_set, tensors, generation, change, name="edited.safetensors"):
    config = copy.deepcopy(tiny_set.configs[generation])
    change(config)
    path = tmp_path / name
    path.write_bytes(safetensors_bytes(tensors[generation], {"config": json.dumps(config)}))
    return path


def _module_shapes(component: str, config: dict, file_tensors) -> dict[str, tuple[int, ...]]:
    module = components.COMPONENTS[component].build(config, file_tensors, torch.float32, "meta")
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@pytest.mark.parametrize("component", CHECKPOINT_COMPONENTS)
def test_every_fact_holds_for_our_own_module(tiny_set, generation, component):
    """A fact that is not a relation of the built module would refuse good files: build each module from the tiny
    configs and evaluate every fact on its own state dict (each fact must also name a tensor the module has)."""
    header = read_header(tiny_set.checkpoint(generation))
    plan = plan_load(tiny_set.checkpoint(generation), component)
    shapes = _module_shapes(component, plan.config, header.tensors)
    facts = FACTS[component](plan.config, plan.keys, header.tensors)
    assert facts
    for fact in facts:
        if isinstance(fact, Dim):
            assert fact.tensor in shapes, (fact, sorted(shapes)[:5])
            assert shapes[fact.tensor][fact.axis] == fact.value, fact
        else:
            found = {int(m[1]) for k in shapes if (m := re.match(re.escape(fact.prefix) + r"(\d+)\.", k))}
            assert found and max(found) + 1 == fact.value == len(found), fact


@pytest.mark.parametrize("scale", [2.0, 1.5])
def test_upsampler_facts_hold_for_our_module(tiny_set, scale):
    path = tiny_set.upsampler_x2 if scale == 2.0 else tiny_set.upsampler_x1_5
    plan = plan_load(path, "latent_upsampler")
    shapes = _module_shapes("latent_upsampler", plan.config, plan.header.tensors)
    for fact in FACTS["latent_upsampler"](plan.config, plan.keys, plan.header.tensors):
        if isinstance(fact, Dim):
            assert shapes[fact.tensor][fact.axis] == fact.value
        else:
            assert max(int(m[1]) for k in shapes if (m := re.match(re.escape(fact.prefix) + r"(\d+)\.", k))) + 1 \
                == fact.value


def _set(*path_and_value):
    *path, value = path_and_value

    def change(config):
        section = config
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = value

    return change


def _update(section, **values):
    return lambda config: config[section].update(values)


@pytest.mark.parametrize(("generation", "component", "change", "phrases"), [
    # Sizes beyond any model: refused by the config's bounds, before the tensors are even compared.
    (tc.LTX23, "transformer", _set("transformer", "num_layers", 10**9),
     ("cannot be built from: transformer.num_layers=1000000000, expected 'an int in [1, 1024]'",)),
    (tc.LTX23, "vocoder", _set("vocoder", "bwe", "n_fft", 65536),
     ("vocoder.bwe.n_fft=65536, expected 'an int in [2, 8192]'",)),
    # Sane but contradicted by the tensors.
    (tc.LTX23, "transformer", _set("transformer", "num_layers", 40),
     ("transformer.num_layers=40, expected 2 (the file has model.diffusion_model.transformer_blocks.0 to "
      "model.diffusion_model.transformer_blocks.1)",)),
    (tc.LTX2, "transformer", _set("transformer", "in_channels", 64),
     ("transformer.in_channels=64, expected 128 (model.diffusion_model.patchify_proj.weight has shape [64, 128])",)),
    (tc.LTX23, "transformer", _update("transformer", num_attention_heads=8, cross_attention_dim=128),
     ("transformer.num_attention_heads * attention_head_dim=128, expected 64",)),
    (tc.LTX23, "vocoder", _set("vocoder", "bwe", "n_fft", 1024),
     ("vocoder.bwe.n_fft=1024, expected 512 (vocoder.mel_stft.stft_fn.forward_basis has shape [514, 1, 512])",)),
    (tc.LTX2, "vocoder", _set("vocoder", "upsample_kernel_sizes", [16, 15, 8, 4, 6]),
     ("vocoder.upsample_kernel_sizes[4]=6, expected 4",)),
    (tc.LTX23, "video_decoder", _set("vae", "decoder_blocks", 0, 1, {"num_layers": 3}),
     ("vae.decoder_blocks[0].num_layers=3, expected",)),
    (tc.LTX23, "audio_decoder", _set("audio_vae", "model", "params", "ddconfig", "num_res_blocks", 6),
     ("audio_vae.model.params.ddconfig.num_res_blocks + 1=7, expected 2",)),
    (tc.LTX23, "text_embeddings", _set("transformer", "connector_num_layers", 50),
     ("transformer.connector_num_layers=50, expected 2",)),
    (tc.LTX2, "text_embeddings", _set("transformer", "caption_channels", 50),
     ("transformer.connector_num_attention_heads * connector_attention_head_dim=64, expected 50",)),
    (tc.LTX2, "text_embeddings", _update("transformer", caption_channels=40, connector_attention_head_dim=10),
     ("text projection input width=192, expected a multiple (>= 2) of caption_channels 40",)),
    # Not a config at all.
    (tc.LTX23, "transformer", _set("transformer", 7), ("transformer=7, expected 'a dict'",)),
    (tc.LTX23, "vocoder", _set("vocoder", "bwe", [1, 2]), ("vocoder.bwe=[1, 2], expected 'a dict'",)),
], ids=lambda v: v if isinstance(v, str) else None)
def test_config_that_contradicts_the_tensors_is_refused_at_plan_time(tmp_path, tiny_set, tensors, generation,
                                                                     component, change, phrases):
    path = _with_config(tmp_path, tiny_set, tensors, generation, change)
    with pytest.raises(CheckpointFormatError) as caught:
        plan_load(path, component)
    message = str(caught.value)
    assert message.startswith(f"{path}: has a "), message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert "metadata was edited or copied from another model" in message
    with pytest.raises(CheckpointFormatError):  # and load_component refuses it the same way, before building
        load_component(path, component)


@pytest.mark.parametrize(("raw", "phrase"), [
    ("7", "`config` metadata entry that is a int, not a JSON object"),
    ("[1, 2]", "`config` metadata entry that is a list"),
    ('"text"', "entry that is a str"),
    ("{" * 5000 + "}" * 5000, "a `config` metadata entry nested more than 64 levels deep"),
    ('{"transformer": ', "has a `config` metadata entry that is not valid JSON"),
])
def test_config_metadata_that_is_not_an_object_is_refused(tmp_path, tiny_set, tensors, raw, phrase):
    path = tmp_path / "odd_config.safetensors"
    path.write_bytes(safetensors_bytes(tensors[tc.LTX23], {"config": raw}))
    with pytest.raises(CheckpointFormatError, match=re.escape(phrase)) as caught:
        plan_load(path, "transformer")
    assert str(path) in str(caught.value)


def _gemma_copy(tmp_path, demo_models, **changes):
    folder = tmp_path / "gemma"
    folder.mkdir()
    for item in demo_models.text_encoder_dir.iterdir():
        if item.name == "config.json":
            config = json.loads(item.read_text())
            text = config.get("text_config", config)
            text.update(changes)
            (folder / item.name).write_text(json.dumps(config))
        else:
            (folder / item.name).symlink_to(item.resolve())
    return folder


@pytest.mark.parametrize(("changes", "phrase"), [
    ({"num_hidden_layers": 10**8}, "num_hidden_layers=100000000, expected 'an int in [1, 512]'"),
    ({"num_hidden_layers": 40}, "num_hidden_layers=40, expected 2 (the file has "),
    ({"vocab_size": 999}, "vocab_size=999, expected"),
    ({"hidden_size": 48}, "hidden_size=48, expected"),
    ({"rope_theta": float("inf")}, "rope_theta=inf"),
])
def test_gemma_config_is_checked_against_its_weights(tmp_path, demo_models, changes, phrase):
    folder = _gemma_copy(tmp_path, demo_models, **changes)
    with pytest.raises(CheckpointFormatError) as caught:
        find_gemma_files(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / "config.json")) and phrase in message, message


def _diffusion_decoder_file(tmp_path, change=None):
    from support import tiny25

    section = tiny25.diffusion_vae_section()
    tensors = tiny25.diffusion_decoder_file_tensors(tiny25.diffusers_diffusion_decoder(section))
    edited = copy.deepcopy(section)
    if change is not None:
        change(edited)
    return tiny25.write_file(tmp_path / "ltx-2.5-vae.safetensors", tensors, {"vae": edited})


def test_diffusion_decoder_facts_hold_for_our_module(tmp_path):
    plan = plan_load(_diffusion_decoder_file(tmp_path), "diffusion_video_decoder")
    shapes = _module_shapes("diffusion_video_decoder", plan.config, plan.header.tensors)
    facts = FACTS["diffusion_video_decoder"](plan.config, plan.keys, plan.header.tensors)
    assert len(facts) >= 10
    for fact in facts:
        if isinstance(fact, Dim):
            assert shapes[fact.tensor][fact.axis] == fact.value, fact
        else:
            found = {int(m[1]) for k in shapes if (m := re.match(re.escape(fact.prefix) + r"(\d+)\.", k))}
            assert found and max(found) + 1 == fact.value == len(found), fact


@pytest.mark.parametrize(("change", "phrase"), [
    (lambda s: s["decoder"].update(stage_depths=[1, 1, 1, 1, 10**6]),
     "vae.decoder.stage_depths[4]=1000000, expected 'an int in [1, 64]'"),
    (lambda s: s["decoder"].update(stage_kernels=[[3, 3, 3]] * 4 + [[3, 3, 65535]]), "stage_kernels[4]=[3, 3, 65535]"),
    (lambda s: s["decoder"].update(default_num_inference_steps=10**9),
     "vae.decoder.default_num_inference_steps=1000000000, expected 'an int in [1, 1000]'"),
    (lambda s: s["decoder"].update(stage_depths=[1, 1, 1, 1, 3]),
     "vae.decoder.stage_depths[4]=3, expected 2 (the file has vae.decoder.diff_blocks.0 to "
     "vae.decoder.diff_blocks.1)"),
    (lambda s: s["decoder"].update(stage_depths=[1, 2, 1, 1, 2]),
     "vae.decoder.stage_depths[1]=2, expected 1"),
    (lambda s: s["decoder"].update(t_emb_dim=64), "vae.decoder.t_emb_dim=64, expected 32"),
], ids=["depth-1e6", "kernel", "steps-1e9", "diff-depth", "stage-depth", "t_emb_dim"])
def test_diffusion_decoder_config_is_checked_against_its_tensors(tmp_path, change, phrase):
    path = _diffusion_decoder_file(tmp_path, change)
    with pytest.raises(CheckpointFormatError) as caught:
        plan_load(path, "diffusion_video_decoder")
    message = str(caught.value)
    assert message.startswith(f"{path}: has a ") and phrase in message, message
    with pytest.raises(CheckpointFormatError):
        load_component(path, "diffusion_video_decoder")


def test_every_component_has_its_facts():
    assert set(FACTS) == set(components.COMPONENTS)


def test_good_files_pass(tiny_set, demo_models):
    for generation in tc.GENERATIONS:
        for component in CHECKPOINT_COMPONENTS:
            plan_load(tiny_set.checkpoint(generation), component)
    for component in CHECKPOINT_COMPONENTS:
        plan_load(demo_models.checkpoint, component)
    find_gemma_files(demo_models.text_encoder_dir)


@pytest.mark.parametrize(("text_changes", "phrase"), [
    ({"num_hidden_layers": 10**8}, "text_config.num_hidden_layers=100000000, expected 'an int in [1, 512]'"),
    ({"num_hidden_layers": 9}, "text_config.num_hidden_layers=9, expected"),
    ({"vocab_size": 7}, "text_config.vocab_size=7, expected"),
])
def test_gemma4_config_is_checked_before_the_meta_build(tmp_path, text_changes, phrase):
    """A Gemma-4 config.json with 10**8 layers would build 10**8 layers on the meta device."""
    from support import tiny_gemma4 as tg

    from aiprod.loaders.gemma4_files import check_gemma4

    gemma_config = tg.config()
    gemma_config.get("text_config", gemma_config).update(text_changes)
    folder = tg.write_hf_folder(tmp_path / "gemma4", tg.build_model(seed=7), gemma_config=gemma_config)
    with pytest.raises(CheckpointFormatError) as caught:
        check_gemma4(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / "config.json")) and phrase in message, message
