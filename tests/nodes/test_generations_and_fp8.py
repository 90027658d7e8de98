"""Nodes on the other generation and formats: the reference-built tiny LTX-2 (19B family) checkpoint through the
distilled pipeline node (equal to the core call), the x1.5 upsampler node, and fp8 checkpoints kept or up-cast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from support import tiny_configs as tc

from aiprod.aiprod_core import pipelines as core
from aiprod.aiprod_core.pipelines import GenerationRequest, PipelineModels, PromptContexts
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.fp8 import Fp8Linear

W, H, F, FPS, SEED = 64, 64, 9, 25.0, 3
NO_TILING = {"spatial_tile": 0, "spatial_overlap": 0, "temporal_tile": 0, "temporal_overlap": 0}


def _link(folder_paths, tmp_path: Path, folder: str, files: dict[str, Path]) -> None:
    """Make ``files`` listed in ComfyUI's ``folder`` (beside what is there)."""
    target = tmp_path / "extra" / folder
    target.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        (target / name).symlink_to(Path(path).resolve())
    paths, extensions = folder_paths.folder_names_and_paths[folder]
    folder_paths.folder_names_and_paths[folder] = ([*paths, str(target)], extensions)
    folder_paths.filename_list_cache.clear()


@pytest.fixture
def nodes(demo_folders):
    from aiprod.nodes import loader_nodes, pipeline_nodes, sampling_nodes

    return type("Nodes", (), {"loaders": loader_nodes, "pipelines": pipeline_nodes, "sampling": sampling_nodes})


def _contexts(generation: str) -> PromptContexts:
    ltx2 = generation == tc.LTX2
    gen = torch.Generator().manual_seed(5)
    video = tc.CAPTION_CHANNELS if ltx2 else tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM
    audio = tc.CAPTION_CHANNELS if ltx2 else tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM
    return PromptContexts.from_tensors(torch.randn(1, 16, video, generator=gen),
                                       torch.randn(1, 16, audio, generator=gen))


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_distilled_node_on_both_generations_equals_core(nodes, demo_folders, tiny_set, tmp_path, generation):
    path = tiny_set.checkpoint(generation)
    _link(demo_folders, tmp_path, "checkpoints", {f"tiny-{generation}.safetensors": path})
    _link(demo_folders, tmp_path, "latent_upscale_models", {"tiny-x2.safetensors": tiny_set.upsampler_x2})
    model, video_vae, audio_vae = nodes.loaders.AIPRODCheckpointLoader.execute(
        f"checkpoints/tiny-{generation}.safetensors", "fp32", "upcast").args
    (upsampler,) = nodes.loaders.AIPRODUpsamplerLoader.execute("latent_upscale_models/tiny-x2.safetensors",
                                                               "fp32").args
    contexts = _contexts(generation)
    out = nodes.pipelines.AIPRODDistilledPipeline.execute(
        model=model, video_vae=video_vae, audio_vae=audio_vae, conditioning=contexts, upsampler=upsampler, width=W,
        height=H, frames=F, fps=FPS, seed=SEED, image_strength=1.0, **NO_TILING)
    images, audio, fps, _ = out.args

    def load(component: str, file: Path = path):
        return load_component(file, component, dtype=torch.float32).module

    models = PipelineModels(load("transformer"), load("video_encoder"), load("video_decoder"), load("audio_decoder"),
                            load("vocoder"), load("latent_upsampler", tiny_set.upsampler_x2), dtype=torch.float32)
    expected = core.distilled(models, contexts, GenerationRequest(W, H, F, FPS, SEED))
    assert torch.equal(images, expected.frames) and torch.equal(audio["waveform"][0], expected.waveform)
    assert images.shape == (F, H, W, 3) and fps == FPS
    assert audio["waveform"].shape[-1] == round(F / FPS * audio["sample_rate"])


def test_x1_5_upsampler_node(nodes, demo_folders, demo_models, tiny_set, tmp_path):
    from aiprod.nodes.latent_nodes import AIPRODEmptyLatent

    _link(demo_folders, tmp_path, "latent_upscale_models", {"tiny-x1.5.safetensors": tiny_set.upsampler_x1_5})
    (upsampler,) = nodes.loaders.AIPRODUpsamplerLoader.execute("latent_upscale_models/tiny-x1.5.safetensors",
                                                               "fp32").args
    _, video_vae, _ = nodes.loaders.AIPRODCheckpointLoader.execute(demo_models.combo("checkpoint"), "fp32",
                                                                   "upcast").args
    (bundle,) = AIPRODEmptyLatent.execute(128, 64, 9, 24.0).args
    bundle = bundle.with_latents(bundle.latents.with_video(torch.randn_like(bundle.latents.video)), denoised=True)
    (up,) = nodes.sampling.AIPRODLatentUpsample.execute(bundle, upsampler, video_vae).args
    assert up.latents.video.shape == (1, 128, 2, 3, 6) and up.latents.frames == 9
    assert torch.isfinite(up.latents.video).all()


def _fp8_copy(source: Path, target: Path) -> int:
    """The checkpoint with every 2-D transformer weight stored as float8_e4m3fn (metadata kept)."""
    tensors, count = {}, 0
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
        for key in handle.keys():
            value = handle.get_tensor(key)
            if key.startswith("model.diffusion_model.transformer_blocks.") and key.endswith(".weight") and \
                    value.ndim == 2:  # fmt: skip
                value, count = value.to(torch.float8_e4m3fn), count + 1
            tensors[key] = value
    save_file(tensors, str(target), metadata=metadata)
    return count


@pytest.mark.parametrize("mode", ["keep", "upcast"])
def test_fp8_checkpoint_kept_or_upcast(nodes, demo_folders, demo_models, tmp_path, mode):
    fp8_file = tmp_path / "demo-fp8.safetensors"
    assert _fp8_copy(demo_models.checkpoint, fp8_file) > 0
    assert json.loads(safe_open(str(fp8_file), framework="pt").metadata()["config"])
    _link(demo_folders, tmp_path, "checkpoints", {fp8_file.name: fp8_file})
    model, _, _ = nodes.loaders.AIPRODCheckpointLoader.execute(f"checkpoints/{fp8_file.name}", "fp32", mode).args
    (with_lora,) = nodes.loaders.AIPRODLoraLoader.execute(model, demo_models.combo("distilled_lora"), 1.0).args
    kept = [m for m in with_lora.module().modules() if isinstance(m, Fp8Linear)]
    assert bool(kept) == (mode == "keep")
    dtypes = {p.dtype for p in with_lora.module().parameters()}
    assert (torch.float8_e4m3fn in dtypes) == (mode == "keep")
