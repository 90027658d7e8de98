"""The distilled workflow through a real ComfyUI server with the model files ComfyUI users have -> an MP4 with sound:

- ComfyUI's Gemma layout (tokenizer embedded, nothing beside it) and the LTX-2.3 split setup (Kijai's
  text_projection file in text_encoders/ plus the transformer-only file in diffusion_models/ holding the
  connectors);
- issue 12's end-to-end case: a checkpoint whose transformer is a ComfyUI ``comfy_quant`` file (float8_e4m3fn
  layers) and ComfyUI's quantized Gemma (``_fp4_mixed``: nvfp4 / float8 / bf16 layers, ``comfy_quant`` markers,
  tokenizer embedded), both kept quantized."""

from __future__ import annotations

import copy

import pytest
from e2e.test_generation_workflows import SIZES, probe, saved_video, tiny
from safetensors.torch import save_file
from support import comfy_gemma as cg
from support import quant_files as qf
from support import split_files as sf
from support.comfy_host import install_model_files

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def comfy_files(demo_host, demo_models, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("comfy-text-encoder-files")
    model = cg.spiece_model()
    gemma = root / "gemma_3_12B_it_aiprod_tiny.safetensors"
    comfy = cg.comfy_gemma_tensors(model, cg.gemma_text_tensors(cg.piece_count(model) + 16))
    save_file(comfy, str(gemma))
    quantized_gemma = root / "gemma_3_12B_it_fp4_mixed_aiprod_tiny.safetensors"
    tensors, metadata, _ = cg.quantize_comfy_gemma(comfy, "fp4_mixed")
    save_file(tensors, str(quantized_gemma), metadata=metadata)
    checkpoint, _ = qf.quantize_file(demo_models.checkpoint, root / "ltx-2.3-22b-distilled-comfy-fp8-aiprod-tiny"
                                     ".safetensors", "float8_e4m3fn")
    tensors, metadata = sf.read_checkpoint(demo_models.checkpoint)
    projection = sf.write(root / "ltx-2.3_text_projection_aiprod_tiny.safetensors",
                          sf.text_projection(tensors, metadata))
    transformer = sf.write(root / "ltx-2.3-22b_transformer_only_aiprod_tiny.safetensors",
                           sf.transformer_only(tensors, metadata))
    files = {"gemma": f"text_encoders/{gemma.name}", "quantized_gemma": f"text_encoders/{quantized_gemma.name}",
             "projection": f"text_encoders/{projection.name}", "transformer": f"diffusion_models/{transformer.name}",
             "quantized": f"checkpoints/{checkpoint.name}"}
    paths = {"gemma": gemma, "quantized_gemma": quantized_gemma, "projection": projection,
             "transformer": transformer, "quantized": checkpoint}
    placed = install_model_files(demo_host.base_dir, {key: paths[which] for which, key in files.items()})
    return {which: placed[key] for which, key in files.items()}  # the names ComfyUI lists


def _run(client, prompt) -> None:
    width, height, frames, fps = SIZES["distilled"]
    info = probe(saved_video(client, client.run(prompt, timeout=600)))
    assert (info["frames"], info["width"], info["height"]) == (frames, width, height)
    assert abs(info["audio_seconds"] - frames / fps) <= 1.0 / fps


def test_distilled_with_comfy_gemma_and_split_projection(demo_client, comfy_files):
    prompt = copy.deepcopy(tiny("distilled"))
    (loader,) = [n for n in prompt.values() if n["class_type"] == "AIPRODTextEncoderLoader"]
    loader["inputs"].update(gemma=comfy_files["gemma"],  # combo values as the node lists them
                            checkpoint=f"{comfy_files['projection']} (text_encoders)",
                            connectors=f"{comfy_files['transformer']} (diffusion_models)")
    _run(demo_client, prompt)


def test_distilled_on_a_comfy_quant_checkpoint_with_comfys_quantized_gemma(demo_client, comfy_files):
    prompt = copy.deepcopy(tiny("distilled"))
    checkpoint = comfy_files["quantized"]
    (model_loader,) = [n for n in prompt.values() if n["class_type"] == "AIPRODCheckpointLoader"]
    model_loader["inputs"].update(checkpoint=checkpoint, quantized_weights="keep")
    (loader,) = [n for n in prompt.values() if n["class_type"] == "AIPRODTextEncoderLoader"]
    loader["inputs"].update(gemma=comfy_files["quantized_gemma"], checkpoint=f"{checkpoint} "
                            "(checkpoints)", connectors="none", quantized_weights="keep")
    _run(demo_client, prompt)
