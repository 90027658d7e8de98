"""Files of other architectures are named as such (issue 12, item 6): by every loader, the inspector and the LoRA
match; and no LTX-2 file of any layout the tests build is ever taken for one.

The foreign files are written with the key names of their real layouts: TAEHV's (ComfyUI's ``comfy/taesd/
taehv.py``: ``nn.Sequential`` indices, ``MemBlock.conv`` 0/2/4, ``TPool`` / ``TGrow`` ``.conv``), diffusers'
own ``LTX2VideoTransformer3DModel`` state dict, a diffusers folder (``config.json`` with ``_diffusers_version``
beside ``diffusion_pytorch_model.safetensors``), a ComfyUI SDXL / Flux checkpoint's UNet / double-block names, a
CLIP-L text encoder and LTX-Video 0.9 (LTX-2's key names, ``Transformer3DModel`` in its config).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from support import tiny_ltx25
from support.comfy_folders import model_folders

from aiprod.loaders.component_loader import check_component
from aiprod.loaders.detect import describe_file, format_report
from aiprod.loaders.errors import CheckpointFormatError, WrongComponentError
from aiprod.loaders.foreign_files import foreign_lora_family, identify_foreign
from aiprod.loaders.lora import check_lora_fits
from aiprod.loaders.safetensors_header import read_header


def _tensor(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float16)


def _taehv_tensors() -> dict[str, torch.Tensor]:
    """The encoder's first stage and the decoder's first stage of TAEHV, at a tiny width (4 for 64 / 256)."""
    out = {"encoder.0.weight": _tensor(4, 3, 3, 3), "encoder.0.bias": _tensor(4),
           "encoder.2.conv.weight": _tensor(4, 8, 1, 1), "encoder.3.weight": _tensor(4, 4, 3, 3),
           "decoder.1.weight": _tensor(4, 16, 3, 3), "decoder.1.bias": _tensor(4),
           "decoder.7.conv.weight": _tensor(4, 4, 1, 1)}
    for block in ("encoder.4", "decoder.3"):  # MemBlock: conv = Sequential(conv, ReLU, conv, ReLU, conv)
        for index in (0, 2, 4):
            out[f"{block}.conv.{index}.weight"] = _tensor(4, 8 if index == 0 else 4, 3, 3)
            out[f"{block}.conv.{index}.bias"] = _tensor(4)
    return out


def _sdxl_tensors() -> dict[str, torch.Tensor]:
    return {"model.diffusion_model.input_blocks.0.0.weight": _tensor(4, 4, 3, 3),
            "model.diffusion_model.time_embed.0.weight": _tensor(8, 4),
            "first_stage_model.decoder.conv_in.weight": _tensor(4, 4, 3, 3),
            "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight": _tensor(8, 4)}


def _flux_tensors() -> dict[str, torch.Tensor]:
    return {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": _tensor(12, 4),
            "model.diffusion_model.single_blocks.0.linear1.weight": _tensor(12, 4),
            "model.diffusion_model.img_in.weight": _tensor(4, 4)}


def _clip_tensors() -> dict[str, torch.Tensor]:
    return {"text_model.encoder.layers.0.self_attn.q_proj.weight": _tensor(4, 4),
            "text_model.embeddings.token_embedding.weight": _tensor(16, 4)}


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def diffusers_ltx2(tmp_path_factory) -> Path:
    """diffusers' own LTX-2 transformer state dict (tiny 2.5 config), saved as diffusers saves it (no metadata)."""
    model = tiny_ltx25.diffusers_transformer(tiny_ltx25.transformer_section("ltx25"))
    tensors = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    return _write(tmp_path_factory.mktemp("diffusers") / "ltx2_transformer_diffusers.safetensors", tensors)


CASES = {  # name -> (tensors, metadata, the family named, the component a user tried)
    "taeltx": (_taehv_tensors, None, "TAEHV tiny preview VAE", "video_decoder"),
    "sdxl": (_sdxl_tensors, None, "SD 1.x / SDXL UNet", "transformer"),
    "flux": (_flux_tensors, None, "Flux / HunyuanVideo", "transformer"),
    "clip": (_clip_tensors, None, "CLIP text encoder", "text_projection"),
    "ltxv09": (lambda: {"model.diffusion_model.patchify_proj.weight": _tensor(8, 128)},
               {"config": json.dumps({"transformer": {"_class_name": "Transformer3DModel", "num_layers": 1}})},
               "LTX-Video 0.9", "transformer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_foreign_file_is_named_by_the_loader_and_the_inspector(tmp_path, case):
    build, metadata, family, component = CASES[case]
    path = _write(tmp_path / f"{case}.safetensors", build(), metadata)
    with pytest.raises(WrongComponentError) as caught:
        check_component(path, component)
    message = str(caught.value)
    assert str(path) in message and family in message and "not an LTX-2" in message, message
    assert "re-saved" not in message and "missing key" not in message  # not called broken or incomplete
    desc = describe_file(path)  # described, not refused for its missing config
    assert family in desc.kind and desc.loader.startswith("none: it is a ") and family in desc.loader
    assert family in format_report(desc)


def test_taeltx_names_the_full_video_vae_to_use(tmp_path):
    path = _write(tmp_path / "taeltx2_3.safetensors", _taehv_tensors())
    with pytest.raises(WrongComponentError) as caught:
        check_component(path, "video_decoder")
    assert "AIPROD Video VAE Loader" in caught.value.hint and "latent previews" in caught.value.hint
    # before: "has no `config` metadata ... the file was probably re-saved by a tool that dropped it"
    assert "config" not in caught.value.problem


def test_a_diffusers_ltx2_transformer_is_named_as_the_diffusers_layout(diffusers_ltx2):
    with pytest.raises(WrongComponentError) as caught:
        check_component(diffusers_ltx2, "transformer")
    assert "diffusers-layout LTX-2 transformer" in caught.value.problem
    assert "*_transformer_only" in caught.value.hint


def test_a_file_of_a_diffusers_folder_is_named_with_its_class(tmp_path):
    folder = tmp_path / "LTX-2" / "audio_vae"
    path = _write(folder / "diffusion_pytorch_model.safetensors", {"encoder.conv_in.weight": _tensor(4, 1, 3, 3)})
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTX2Audio",
                                                    "_diffusers_version": "0.42.1"}))
    with pytest.raises(WrongComponentError) as caught:
        check_component(path, "audio_decoder")
    assert "diffusers-folder file: AutoencoderKLLTX2Audio (diffusers 0.42.1)" in caught.value.problem
    assert "not diffusers folders" in caught.value.hint
    (folder / "config.json").write_text('{"model_type": "gemma3"}')  # a transformers config is not diffusers'
    assert identify_foreign(read_header(path)) is None


def test_a_lora_of_another_family_is_named(tmp_path, tiny_set):
    path = _write(tmp_path / "flux_lora.safetensors", {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": _tensor(2, 4),
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": _tensor(12, 2)})
    with pytest.raises(CheckpointFormatError) as caught:
        check_lora_fits(path, tiny_set.ltx23)
    assert "Its keys look like a Flux / HunyuanVideo LoRA." in str(caught.value)
    assert foreign_lora_family(["diffusion_model.blocks.0.cross_attn.k.lora_A.weight"]).name == "Wan"
    assert foreign_lora_family(["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"]).name == \
        "CLIP text encoder"


def _ltx_files(*roots: Path) -> list[Path]:
    return sorted({p for root in roots for p in root.rglob("*.safetensors")})


def test_no_ltx_file_the_tests_build_is_taken_for_another_family(tiny_set, demo_models, demo25_models):
    """Every tiny LTX-2 / LTX-2.3 / LTX-2.5 file (checkpoints, split files, VAEs, upsamplers, LoRAs, IC-LoRAs,
    Gemma-3 / Gemma-4 files, duration head) in the layouts the suite builds: no family matches."""
    roots = [tiny_set.root, demo_models.root, demo25_models.root]
    files = _ltx_files(*roots)
    assert len(files) >= 12, files
    for path in files:
        header = read_header(path)
        assert identify_foreign(header) is None, path
        assert foreign_lora_family(header.tensors) is None, path


def test_the_loader_nodes_name_the_family_when_they_run(comfy_cpu, tmp_path):
    """At the node a user picks (issue 12: every check at the loader node, the file named as what it is)."""
    from aiprod.nodes.loader_nodes import AIPRODDiffusionModelLoader, AIPRODVideoVAELoader

    _write(tmp_path / "vae" / "taeltx_2.safetensors", _taehv_tensors())
    _write(tmp_path / "diffusion_models" / "flux1-dev.safetensors", _flux_tensors())
    with model_folders({"vae": tmp_path / "vae", "diffusion_models": tmp_path / "diffusion_models"}):
        with pytest.raises(WrongComponentError, match="is a TAEHV tiny preview VAE .*not an LTX-2 video VAE"):
            AIPRODVideoVAELoader.execute("vae/taeltx_2.safetensors", "fp32")
        with pytest.raises(WrongComponentError, match="is a Flux / HunyuanVideo file, not an LTX-2 transformer"):
            AIPRODDiffusionModelLoader.execute("diffusion_models/flux1-dev.safetensors", "fp32")
