"""The tiny LTX-2.5 demo set (``scripts/demo_models_ltx25.py``, official file names, AIPROD's own modules): every
file is told apart and names its node, and the distilled graph runs through the nodes in-process to an MP4 with
sound (diffusion decoder), with "auto" frames from the duration head, and the two-stage graph with the conv VAE."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import torch

from aiprod.loaders.detect import describe_file

W, H, FPS, SEED = 64, 64, 24.0, 5
TILING = (512, 64, 64, 24)
PROMPT = "a cat runs over the red car at night while rain falls"


@pytest.fixture(scope="module")
def demo25(tmp_path_factory):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "demo_models_ltx25.py"
    spec = importlib.util.spec_from_file_location("aiprod_demo_models_ltx25", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.write_ltx25_demo_models(tmp_path_factory.mktemp("demo25"))


@pytest.fixture
def n(demo_folders, demo25):
    for folder in {Path(rel).parts[0] for rel in demo25.install_map()}:
        entry = demo_folders.folder_names_and_paths.get(folder, ([], set()))
        demo_folders.folder_names_and_paths[folder] = ([str(demo25.root / folder), *entry[0]],
                                                       set(demo_folders.supported_pt_extensions))
    demo_folders.filename_list_cache.clear()
    from aiprod.nodes import loader_nodes, ltx25_nodes, output_nodes, pipeline_nodes, sampling_nodes, text_nodes

    return type("Nodes", (), {"loaders": loader_nodes, "ltx25": ltx25_nodes, "pipelines": pipeline_nodes,
                              "sampling": sampling_nodes, "output": output_nodes, "text": text_nodes})


def test_every_file_is_ltx25_and_names_its_node(demo25) -> None:
    nodes = {"dev": "AIPROD Diffusion Model Loader", "distilled": "AIPROD Diffusion Model Loader",
             "video_vae": "AIPROD Video VAE Loader", "video_vae_conv": "AIPROD Video VAE Loader",
             "audio_vae": "AIPROD Audio VAE Loader", "spatial_upscaler": "AIPROD Latent Upsampler Loader",
             "temporal_upscaler": "AIPROD Latent Upsampler Loader", "distilled_lora": "AIPROD LoRA Loader",
             "duration_head": "AIPROD Duration Head Loader", "text_encoder": "AIPROD Text Encoder Loader"}
    for name, node in nodes.items():
        description = describe_file(demo25.paths[name])
        assert description.loader.startswith(node), (name, description.loader)
        if name != "text_encoder":
            assert description.generation.startswith("LTX-2.5"), (name, description.generation)


def _text_encoder(demo25):
    """The Gemma-4 encoder + the split text path, as the Text Encoder Loader assembles them for LTX-2.5."""
    from aiprod.loaders.text_embeddings import load_split_text_embeddings
    from aiprod.loaders.text_encoder_generation import load_text_encoder
    from aiprod.nodes.types import LazyModule, TextEncoder

    bundle, transformer = demo25.paths["text_encoder"], demo25.paths["distilled"]
    gemma = LazyModule(lambda: load_text_encoder(bundle, dtype=torch.float32), "gemma4")
    processor = LazyModule(lambda: load_split_text_embeddings(bundle, transformer, dtype=torch.float32).module,
                           "text path")
    return TextEncoder(gemma, processor, bundle.name)


def _name(demo25, key: str, folder: str | None = None) -> str:
    name = demo25.paths[key].name
    return f"{name} ({folder})" if folder else name


def test_distilled_graph_with_auto_frames_to_an_mp4_with_sound(n, demo25, demo_folders) -> None:
    (model,) = n.loaders.AIPRODDiffusionModelLoader.execute(_name(demo25, "distilled"), "fp32", "upcast").args
    (video_vae,) = n.loaders.AIPRODVideoVAELoader.execute(_name(demo25, "video_vae", "vae"), "fp32", "auto").args
    (audio_vae,) = n.loaders.AIPRODAudioVAELoader.execute(_name(demo25, "audio_vae", "vae"), "fp32").args
    (upsampler,) = n.loaders.AIPRODUpsamplerLoader.execute(_name(demo25, "spatial_upscaler"), "fp32").args
    (conditioning,) = n.text.AIPRODTextEncode.execute(_text_encoder(demo25), PROMPT, "", False).args
    (head,) = n.ltx25.AIPRODDurationHeadLoader.execute(_name(demo25, "duration_head")).args
    frames, seconds = n.ltx25.AIPRODPredictFrames.execute(head, conditioning, FPS, 0.0, 0.5).args
    assert frames == 9 and seconds > 0  # clamped to 0.5 s: 12 frames, down to 8 k + 1
    images, audio, fps, _ = n.pipelines.AIPRODDistilledPipeline.execute(
        model=model, video_vae=video_vae, audio_vae=audio_vae, conditioning=conditioning, upsampler=upsampler,
        width=W, height=H, frames=frames, fps=FPS, seed=SEED, image_strength=1.0, spatial_tile=TILING[0],
        spatial_overlap=TILING[1], temporal_tile=TILING[2], temporal_overlap=TILING[3]).args
    assert images.shape == (frames, H, W, 3) and torch.isfinite(images).all() and images.std() > 0
    assert audio["waveform"].abs().max() > 0
    n.output.AIPRODSaveVideo.execute(images, fps, "aiprod/ltx25", "mp4 (H.264 + AAC)", 19, audio)
    (saved,) = Path(demo_folders.get_output_directory()).glob("aiprod/ltx25*.mp4")
    with av.open(str(saved)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        assert kinds == ["audio", "video"] and container.streams.video[0].frames in (0, frames)


def test_two_stage_graph_with_the_conv_vae_and_the_distilled_lora(n, demo25) -> None:
    (model,) = n.loaders.AIPRODDiffusionModelLoader.execute(_name(demo25, "dev"), "fp32", "upcast").args
    (refiner,) = n.loaders.AIPRODLoraLoader.execute(model, _name(demo25, "distilled_lora"), 1.0).args
    (video_vae,) = n.loaders.AIPRODVideoVAELoader.execute(_name(demo25, "video_vae_conv", "vae"), "fp32",
                                                         "conv").args
    (audio_vae,) = n.loaders.AIPRODAudioVAELoader.execute(_name(demo25, "audio_vae", "vae"), "fp32").args
    (upsampler,) = n.loaders.AIPRODUpsamplerLoader.execute(_name(demo25, "spatial_upscaler"), "fp32").args
    (conditioning,) = n.text.AIPRODTextEncode.execute(_text_encoder(demo25), PROMPT, "blurry", True).args
    images, audio, fps, latent = n.pipelines.AIPRODTwoStagePipeline.execute(
        model=model, refiner=refiner, video_vae=video_vae, audio_vae=audio_vae, conditioning=conditioning,
        upsampler=upsampler, width=W, height=H, frames=9, fps=FPS, seed=SEED, image_strength=1.0, steps=2,
        spatial_tile=TILING[0], spatial_overlap=TILING[1], temporal_tile=TILING[2], temporal_overlap=TILING[3]).args
    assert images.shape == (9, H, W, 3) and torch.isfinite(images).all() and fps == FPS
    assert audio["waveform"].shape[-1] == round(9 / FPS * audio["sample_rate"])
