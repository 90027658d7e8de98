"""Bad inputs to the component loader: each error names the file, the problem and what to do."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from support import tiny_configs as tc
from support.bad_files import write_bad_files
from support.tiny_checkpoints import safetensors_bytes

from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import CheckpointFormatError, StateDictMismatchError, WrongComponentError


@pytest.fixture
def bad_files(tmp_path):
    return write_bad_files(tmp_path / "bad")


@pytest.fixture(scope="module")
def ltx23_tensors(tiny_set):
    return load_file(str(tiny_set.ltx23))


def _write(tmp_path, name, tensors, config):
    path = tmp_path / name
    path.write_bytes(safetensors_bytes(tensors, {"config": json.dumps(config)}))
    return path


def test_truncated_file(bad_files):
    with pytest.raises(CheckpointFormatError, match=r"bad_truncated\.safetensors: is (truncated|not a valid).*"
                                                    r"download"):
        load_component(bad_files["truncated"], "transformer")


def test_not_a_safetensors_file(bad_files):
    with pytest.raises(CheckpointFormatError, match=r"bad_not_safetensors\.safetensors: is not a valid safetensors"):
        load_component(bad_files["not_safetensors"], "transformer")


def test_git_lfs_pointer(bad_files):
    with pytest.raises(CheckpointFormatError, match=r"git-LFS pointer"):
        load_component(bad_files["lfs_pointer"], "video_decoder")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_formats_are_refused_with_the_reason(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointFormatError, match=r"pickle-based checkpoint format.*can run code"):
        load_component(path, "transformer")


def test_vae_file_given_to_the_transformer_loader(tiny_set, tmp_path, ltx23_tensors):
    vae = {k: v for k, v in ltx23_tensors.items() if k.startswith("vae.")}
    path = _write(tmp_path, "ltx-vae.safetensors", vae, tiny_set.configs[tc.LTX23])
    with pytest.raises(WrongComponentError) as info:
        load_component(path, "transformer")
    message = str(info.value)
    assert message.startswith(f"{path}: does not contain a transformer (no key matches model.diffusion_model.* "
                              "or transformer_blocks.*).")
    assert message.endswith("This is a video VAE file; choose it in the VAE loader (models/vae).")


def test_upsampler_given_to_the_vae_loader(tiny_set):
    with pytest.raises(WrongComponentError, match=r"does not contain a video VAE decoder.*This is a latent upsampler "
                                                  r"file; choose it in the latent upscale model loader "
                                                  r"\(models/latent_upscale_models\)"):
        load_component(tiny_set.upsampler_x2, "video_decoder")


def test_config_without_the_components_section(tiny_set, tmp_path, ltx23_tensors):
    vae = {k: v for k, v in ltx23_tensors.items() if k.startswith("vae.")}
    config = {"audio_vae": tiny_set.configs[tc.LTX23]["audio_vae"]}
    path = _write(tmp_path, "odd.safetensors", vae, config)
    with pytest.raises(WrongComponentError, match=r"has no `vae` section in its config \(it has: audio_vae\), so it "
                                                  r"does not describe a video VAE decoder"):
        load_component(path, "video_decoder")


def test_missing_key_is_listed_with_its_file_name(tiny_set, tmp_path, ltx23_tensors):
    tensors = dict(ltx23_tensors)
    del tensors["model.diffusion_model.transformer_blocks.1.attn2.to_k.bias"]
    path = _write(tmp_path, "missing.safetensors", tensors, tiny_set.configs[tc.LTX23])
    with pytest.raises(StateDictMismatchError) as info:
        load_component(path, "transformer")
    assert info.value.missing == ("transformer_blocks.1.attn2.to_k.bias",)
    assert ("does not fit the transformer its config describes (layout: single-file checkpoint transformer "
            "(model.diffusion_model.*)): "
            "1 missing key(s), first: model.diffusion_model.transformer_blocks.1.attn2.to_k.bias.") in str(info.value)


def test_shape_mismatch_lists_expected_and_found(tiny_set, tmp_path, ltx23_tensors):
    tensors = dict(ltx23_tensors)
    key = "vae.decoder.conv_in.conv.weight"
    tensors[key] = torch.zeros(7, *tensors[key].shape[1:], dtype=torch.bfloat16)
    expected = list(ltx23_tensors[key].shape)
    path = _write(tmp_path, "mismatch.safetensors", tensors, tiny_set.configs[tc.LTX23])
    with pytest.raises(StateDictMismatchError) as info:
        load_component(path, "video_decoder")
    found = [7, *expected[1:]]
    assert f"1 shape mismatch(es): {key} expected {expected} found {found}" in str(info.value)


def test_unexpected_key_and_other_version(tiny_set, tmp_path, ltx23_tensors):
    tensors = dict(ltx23_tensors)
    # (a key no config value counts: an extra block is caught earlier, as a config / tensors mismatch)
    tensors["model.diffusion_model.transformer_blocks.1.attn1.extra.weight"] = torch.zeros(4, 4, dtype=torch.bfloat16)
    path = _write(tmp_path, "extra.safetensors", tensors, tiny_set.configs[tc.LTX23])
    with pytest.raises(StateDictMismatchError, match=r"1 unexpected key\(s\), first: "
                                                     r"model\.diffusion_model\.transformer_blocks\.1\.attn1\.extra\.weight"):
        load_component(path, "transformer")
    # an LTX-2.3 file read with the LTX-2 config: refused from the header, naming what does not fit
    path = _write(tmp_path, "wrong-config.safetensors", ltx23_tensors, tiny_set.configs[tc.LTX2])
    with pytest.raises(CheckpointFormatError, match=r"does not match its tensors|unexpected key\(s\)"):
        load_component(path, "transformer")


def test_split_vae_and_lora_given_to_the_transformer_loader(tiny_set, tmp_path, ltx23_tensors):
    vae = {k.removeprefix("vae."): v for k, v in ltx23_tensors.items() if k.startswith("vae.")}
    path = _write(tmp_path, "vae-split.safetensors", vae, tiny_set.configs[tc.LTX23])
    with pytest.raises(WrongComponentError, match=r"This is a VAE \(split file\) file; choose it in the VAE loader"):
        load_component(path, "transformer")
    bare = {k.removeprefix("diffusion_model."): v for k, v in load_file(str(tiny_set.lora)).items()}
    for lora in (tiny_set.lora, _write(tmp_path, "bare-lora.safetensors", bare, {})):
        message = r"lora\.safetensors: is a LoRA, not a transformer\. This is a LoRA file; choose it in a LoRA loader"
        with pytest.raises(WrongComponentError, match=message + r" \(models/loras\)"):
            load_component(lora, "transformer")
