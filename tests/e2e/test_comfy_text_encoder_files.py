"""The distilled workflow through a real ComfyUI server with the text encoder files ComfyUI users have: ComfyUI's
Gemma layout (tokenizer embedded, nothing beside it) and the LTX-2.3 split setup (Kijai's text_projection file in
text_encoders/ plus the transformer-only file in diffusion_models/ holding the connectors) -> an MP4 with sound."""

from __future__ import annotations

import copy

import pytest
from e2e.test_generation_workflows import SIZES, probe, saved_video, tiny
from safetensors.torch import save_file
from support import comfy_gemma as cg
from support import split_files as sf
from support.comfy_host import install_model_files

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def comfy_files(demo_host, demo_models, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("comfy-text-encoder-files")
    model = cg.spiece_model()
    gemma = root / "gemma_3_12B_it_aiprod_tiny.safetensors"
    save_file(cg.comfy_gemma_tensors(model, cg.gemma_text_tensors(cg.piece_count(model) + 16)), str(gemma))
    tensors, metadata = sf.read_checkpoint(demo_models.checkpoint)
    projection = sf.write(root / "ltx-2.3_text_projection_aiprod_tiny.safetensors",
                          sf.text_projection(tensors, metadata))
    transformer = sf.write(root / "ltx-2.3-22b_transformer_only_aiprod_tiny.safetensors",
                           sf.transformer_only(tensors, metadata))
    return install_model_files(demo_host.base_dir, {"text_encoders/gemma": gemma,
                                                    "text_encoders/projection": projection,
                                                    "diffusion_models/transformer": transformer})


def test_distilled_with_comfy_gemma_and_split_projection(demo_client, comfy_files):
    prompt = copy.deepcopy(tiny("distilled"))
    (loader,) = [n for n in prompt.values() if n["class_type"] == "AIPRODTextEncoderLoader"]
    loader["inputs"].update(gemma=comfy_files["text_encoders/gemma"],
                            checkpoint=comfy_files["text_encoders/projection"],
                            connectors=comfy_files["diffusion_models/transformer"])
    width, height, frames, fps = SIZES["distilled"]
    info = probe(saved_video(demo_client, demo_client.run(prompt, timeout=240)))
    assert (info["frames"], info["width"], info["height"]) == (frames, width, height)
    assert abs(info["audio_seconds"] - frames / fps) <= 1.0 / fps
