"""Text projection + connectors from one file or two, in every split layout built from the tiny reference
checkpoints: the loaded module and its embeddings equal the single-file checkpoint's bit for bit (same weights)."""

from __future__ import annotations

import pytest
import torch
from support import split_files as sf
from support import tiny_configs as tc

from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import CheckpointFormatError, StateDictMismatchError, WrongComponentError
from aiprod.loaders.text_embeddings import load_text_embeddings, plan_text_embeddings

GEMMA = {"gemma_hidden": tc.TINY_GEMMA_HIDDEN_SIZE, "gemma_layers": tc.TINY_GEMMA_NUM_LAYERS}
SEQ = 24


@pytest.fixture(scope="module")
def checkpoints(tiny_set):
    return {gen: (tiny_set.checkpoint(gen), *sf.read_checkpoint(tiny_set.checkpoint(gen))) for gen in tc.GENERATIONS}


def _inputs() -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    hidden = tuple(torch.randn(2, SEQ, tc.TINY_GEMMA_HIDDEN_SIZE, generator=gen) * (1 + layer)
                   for layer in range(tc.TINY_GEMMA_NUM_LAYERS + 1))
    mask = torch.zeros(2, SEQ, dtype=torch.long)
    mask[0, 4:] = 1
    mask[1, 15:] = 1  # left padded, as the prompt tokenizer pads
    return hidden, mask


def _assert_same_module(module, reference) -> None:
    ours, ref = module.state_dict(), reference.state_dict()
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key].dtype == ref[key].dtype and torch.equal(ours[key], ref[key]), key
    hidden, mask = _inputs()
    with torch.no_grad():
        got, want = module(hidden, mask), reference(hidden, mask)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


# (generation, layout name, files to write: {name: converter}, projection file, connectors file or None)
LAYOUTS = [
    (tc.LTX2, "embeddings_connector, prefixed, config",
     {"te": lambda t, m: sf.embeddings_connector(t, m)}, "te", None),
    (tc.LTX2, "embeddings_connector, bare, config",
     {"te": lambda t, m: sf.embeddings_connector(t, m, prefixed=False)}, "te", None),
    (tc.LTX2, "embeddings_connector without config + transformer file (config)",
     {"te": lambda t, m: sf.embeddings_connector(t, m, with_config=False), "dit": sf.transformer_only}, "te", "dit"),
    (tc.LTX2, "ComfyUI text-encoder naming + transformer file (config)",
     {"te": sf.comfy_te_naming, "dit": lambda t, m: sf.transformer_only(t, m, prefixed=False)}, "te", "dit"),
    (tc.LTX23, "text_projection + transformer file, prefixed",
     {"te": sf.text_projection, "dit": sf.transformer_only}, "te", "dit"),
    (tc.LTX23, "text_projection + transformer file, bare",
     {"te": sf.text_projection, "dit": lambda t, m: sf.transformer_only(t, m, prefixed=False)}, "te", "dit"),
    (tc.LTX23, "text_projection + transformer file without config (inferred)",
     {"te": sf.text_projection, "dit": lambda t, m: sf.transformer_only(t, m, with_config=False)}, "te", "dit"),
    (tc.LTX23, "projection from the checkpoint, connectors from the transformer file",
     {"dit": lambda t, m: sf.transformer_only(t, m, prefixed=False)}, "ckpt", "dit"),
]


@pytest.mark.parametrize(("generation", "name", "files", "projection", "connectors"), LAYOUTS,
                         ids=[f"{g}-{n}" for g, n, *_ in LAYOUTS])
def test_split_layout_equals_single_file(tmp_path, checkpoints, generation, name, files, projection, connectors):
    ckpt, tensors, metadata = checkpoints[generation]
    paths = {"ckpt": ckpt}
    for key, convert in files.items():
        paths[key] = sf.write(tmp_path / f"{key}.safetensors", convert(tensors, metadata))
    plan = plan_text_embeddings(paths[projection], paths.get(connectors), **GEMMA)
    reference = load_component(ckpt, "text_embeddings", dtype=torch.float32).module
    assert plan.config == reference.config, name  # inferred configs equal the metadata's
    assert plan.config_source.startswith("inferred") == ("inferred" in name)
    assert plan.projection.path == str(paths[projection])
    assert plan.connectors.path == str(paths[connectors or projection])
    _assert_same_module(load_text_embeddings(plan, dtype=torch.float32), reference)


def test_single_file_checkpoint_through_the_planner(checkpoints):
    for generation in tc.GENERATIONS:
        ckpt = checkpoints[generation][0]
        plan = plan_text_embeddings(ckpt, **GEMMA)
        assert plan.projection.path == plan.connectors.path == str(ckpt)
        assert plan.config_source == f"the `config` metadata of {ckpt}"
        reference = load_component(ckpt, "text_embeddings", dtype=torch.bfloat16).module
        _assert_same_module(load_text_embeddings(plan, dtype=torch.bfloat16), reference)


def test_projection_only_needs_the_connectors_file(tmp_path, checkpoints):
    _, tensors, metadata = checkpoints[tc.LTX23]
    projection = sf.write(tmp_path / "ltx-2.3_text_projection.safetensors", sf.text_projection(tensors, metadata))
    with pytest.raises(WrongComponentError, match=r"text_projection\.safetensors: holds the text projection only, "
                                                  r"not the text connectors\. Choose as `connectors` the file"):
        plan_text_embeddings(projection, **GEMMA)
    dit = sf.write(tmp_path / "dit.safetensors", sf.transformer_only(tensors, metadata))
    with pytest.raises(WrongComponentError, match=r"dit\.safetensors: holds the text connectors but no text "
                                                  r"projection .*Choose it as `connectors`"):
        plan_text_embeddings(dit, **GEMMA)


def test_ltx2_connectors_without_any_config_are_refused_by_name(tmp_path, checkpoints):
    _, tensors, metadata = checkpoints[tc.LTX2]
    path = sf.write(tmp_path / "ltx-2-19b-embeddings_connector.safetensors",
                    sf.embeddings_connector(tensors, metadata, with_config=False))
    with pytest.raises(CheckpointFormatError, match=r"has no `config` metadata, and its video_connector \(64 wide, "
                                                    r"no per-head gates\) does not tell its head count"):
        plan_text_embeddings(path, **GEMMA)


def test_generations_and_gemma_must_match(tmp_path, checkpoints):
    _, tensors2, meta2 = checkpoints[tc.LTX2]
    _, tensors23, meta23 = checkpoints[tc.LTX23]
    projection = sf.write(tmp_path / "proj23.safetensors", sf.text_projection(tensors23, meta23))
    dit2 = sf.write(tmp_path / "dit2.safetensors", sf.transformer_only(tensors2, meta2))
    with pytest.raises(CheckpointFormatError, match=r"holds an LTX-2\.3 text projection, but the `config` metadata "
                                                    r"of .*dit2\.safetensors describes LTX-2 connectors"):
        plan_text_embeddings(projection, dit2, **GEMMA)
    with pytest.raises(CheckpointFormatError, match=r"takes the hidden states of a Gemma 64 wide with 2 layers; the "
                                                    r"`gemma` model is 3840 wide with 48 layers"):
        plan_text_embeddings(checkpoints[tc.LTX2][0], gemma_hidden=3840, gemma_layers=48)


def test_broken_connectors_list_the_keys(tmp_path, checkpoints):
    _, tensors, metadata = checkpoints[tc.LTX23]
    made, meta = sf.transformer_only(tensors, metadata)
    del made["model.diffusion_model.audio_embeddings_connector.learnable_registers"]
    dit = sf.write(tmp_path / "dit.safetensors", (made, meta))
    projection = sf.write(tmp_path / "proj.safetensors", sf.text_projection(tensors, metadata))
    with pytest.raises(StateDictMismatchError, match=r"1 missing key\(s\), first: model\.diffusion_model\."
                                                     r"audio_embeddings_connector\.learnable_registers"):
        plan_text_embeddings(projection, dit, **GEMMA)
