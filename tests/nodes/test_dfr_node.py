"""The DFR pipeline node on the tiny LTX-2.5 set (in-process ComfyUI, official 2.5 file names): equal to the core
pipeline with the detailing IC-LoRA and a temporal round, the stated frame count and frame rate, and its
refusals (an LTX-2.3 model by name, a missing temporal upscaler, bad rounds / frames) before the prompt is
encoded."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from support import tiny_configs as tc
from support.ltx25_files import register_folders

from aiprod.aiprod_core.pipelines import GenerationRequest, PipelineModels, PromptContexts
from aiprod.aiprod_core.pipelines.dfr import dfr
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.lora_apply import load_component_with_loras

SIZE, FRAMES, FPS, SEED = 128, 9, 24.0, 5  # half size 64: a 2 x 2 latent
TILING = {"spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 24}


@pytest.fixture
def nodes(demo_folders, files25):
    register_folders(demo_folders, files25)
    from aiprod.nodes import dfr_nodes, loader_nodes

    return dfr_nodes, loader_nodes


def _contexts() -> PromptContexts:
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(1, 32, tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM, generator=gen)
    audio = torch.randn(1, 32, tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM, generator=gen)
    return PromptContexts.from_tensors(video, audio)


def _values(loaders, files25, demo_models) -> dict:
    (model,) = loaders.AIPRODDiffusionModelLoader.execute(files25.combo("distilled"), "fp32", "upcast").args
    (video_vae,) = loaders.AIPRODVideoVAELoader.execute(f"{files25.combo('conv_vae')} (vae)", "fp32", "auto").args
    (audio_vae,) = loaders.AIPRODAudioVAELoader.execute(f"{demo_models.checkpoint.name} (checkpoints)", "fp32").args
    (upsampler,) = loaders.AIPRODUpsamplerLoader.execute(demo_models.combo("upsampler"), "fp32").args
    (temporal,) = loaders.AIPRODUpsamplerLoader.execute(files25.combo("temporal"), "fp32").args
    return {"model": model, "video_vae": video_vae, "audio_vae": audio_vae, "upsampler": upsampler,
            "temporal_upsampler": temporal, "conditioning": _contexts(), "width": SIZE, "height": SIZE,
            "frames": FRAMES, "fps": FPS, "seed": SEED, "image_strength": 1.0, "temporal_rounds": 1, **TILING}


def test_dfr_node_equals_core_with_detailing_and_a_temporal_round(nodes, files25, demo_models) -> None:
    dfr_nodes, loaders = nodes
    values = _values(loaders, files25, demo_models)
    detailing, factor = loaders.AIPRODICLoraLoader.execute(values["model"], files25.combo("ic_lora25"), 0.5).args
    images, audio, fps, latent = dfr_nodes.AIPRODDFRPipeline.execute(**values, detailing_model=detailing).args
    assert images.shape == ((FRAMES - 1) * 2 + 1, SIZE, SIZE, 3) and fps == 2 * FPS
    assert audio["waveform"].shape[-1] == round(images.shape[0] / fps * audio["sample_rate"])

    from aiprod.nodes.output_nodes import tiling_config

    dit, vae, ckpt = files25.paths["distilled"], files25.paths["conv_vae"], demo_models.checkpoint
    models = PipelineModels(
        transformer=load_component(dit, "transformer", dtype=torch.float32).module,
        video_encoder=load_component(vae, "video_encoder", dtype=torch.float32).module,
        video_decoder=load_component(vae, "video_decoder", dtype=torch.float32).module,
        audio_decoder=load_component(ckpt, "audio_decoder", dtype=torch.float32).module,
        vocoder=load_component(ckpt, "vocoder", dtype=torch.float32).module,
        upsampler=load_component(demo_models.upsampler, "latent_upsampler", dtype=torch.float32).module,
        refiner=load_component_with_loras(dit, "transformer", [(str(files25.paths["ic_lora25"]), 0.5)],
                                          dtype=torch.float32).module, dtype=torch.float32,
    )  # fmt: skip
    temporal = load_component(files25.paths["temporal"], "latent_upsampler", dtype=torch.float32).module
    request = GenerationRequest(SIZE, SIZE, FRAMES, FPS, SEED, tiling=tiling_config(*TILING.values()))
    expected = dfr(models, PromptContexts(values["conditioning"].positive), request, temporal_rounds=1,
                   temporal_upsampler=temporal, detailing_downscale=factor, generation="2.5.0")  # fmt: skip
    assert torch.equal(images, expected.frames) and torch.equal(latent.latents.video, expected.latents.video)
    assert torch.isfinite(images).all() and images.std() > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"generation": "2.3.0"}, "model: generation='2.3.0' \\(LTX-2.3\\); DFR needs an LTX-2.5 model"),
        ({"temporal_upsampler": None}, "temporal_upsampler: not connected; temporal_rounds=1"),
        ({"temporal_rounds": 3}, "temporal_rounds=3, expected one of \\[0, 1, 2\\]"),
        ({"frames": 1}, "frames=1, expected at least 9"),
        ({"width": 96}, "width=96"),
    ],
)
def test_dfr_node_refuses_before_encoding(nodes, files25, demo_models, change: dict, message: str) -> None:
    dfr_nodes, loaders = nodes
    values = _values(loaders, files25, demo_models)
    if "generation" in change:
        values["model"] = replace(values["model"], generation=change.pop("generation"))
    values.update(change)
    values.pop("conditioning")
    with pytest.raises(ValueError, match=message):
        dfr_nodes.AIPRODDFRPipeline.check_lazy_status(conditioning=None, **values)


@pytest.fixture(scope="module")
def demo25(tmp_path_factory):
    """The tiny LTX-2.5 demo set under the official names (scripts/demo_models_ltx25.py)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "demo_models_ltx25.py"
    spec = importlib.util.spec_from_file_location("aiprod_demo_models_ltx25", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.write_ltx25_demo_models(tmp_path_factory.mktemp("demo25-dfr"))


def test_dfr_graph_on_the_25_demo_set_with_the_gemma4_text_encoder_loader(demo_folders, demo25) -> None:
    """The template's graph in-process: the Text Encoder Loader takes the Gemma 4 bundle with the transformer
    file's connectors, DFR x2 to an MP4 with sound at twice the frame rate."""
    from pathlib import Path

    import av

    for folder in {Path(rel).parts[0] for rel in demo25.install_map()}:
        entry = demo_folders.folder_names_and_paths.get(folder, ([], set()))
        demo_folders.folder_names_and_paths[folder] = ([str(demo25.root / folder), *entry[0]],
                                                       set(demo_folders.supported_pt_extensions))
    demo_folders.filename_list_cache.clear()
    from aiprod.nodes import dfr_nodes, loader_nodes, output_nodes, text_nodes

    name = {key: demo25.paths[key].name for key in demo25.paths}
    (encoder,) = loader_nodes.AIPRODTextEncoderLoader.execute(  # projection in the Gemma 4 file, connectors in the
        name["text_encoder"], f"{name['text_encoder']} (text_encoders)", "fp32",  # transformer file
        f"{name['distilled']} (diffusion_models)").args
    (conditioning,) = text_nodes.AIPRODTextEncode.execute(encoder, "a red fox in the snow", "", False).args
    (model,) = loader_nodes.AIPRODDiffusionModelLoader.execute(name["distilled"], "fp32", "upcast").args
    (video_vae,) = loader_nodes.AIPRODVideoVAELoader.execute(f"{name['video_vae_conv']} (vae)", "fp32", "auto").args
    (audio_vae,) = loader_nodes.AIPRODAudioVAELoader.execute(f"{name['audio_vae']} (vae)", "fp32").args
    (upsampler,) = loader_nodes.AIPRODUpsamplerLoader.execute(name["spatial_upscaler"], "fp32").args
    (temporal,) = loader_nodes.AIPRODUpsamplerLoader.execute(name["temporal_upscaler"], "fp32").args
    images, audio, fps, _ = dfr_nodes.AIPRODDFRPipeline.execute(
        model=model, video_vae=video_vae, audio_vae=audio_vae, conditioning=conditioning, upsampler=upsampler,
        temporal_upsampler=temporal, width=SIZE, height=SIZE, frames=FRAMES, fps=FPS, seed=SEED, temporal_rounds=1,
        image_strength=1.0, **TILING).args  # fmt: skip
    output_nodes.AIPRODSaveVideo.execute(images, fps, "aiprod/dfr", "mp4 (H.264 + AAC)", 19, audio)
    (saved,) = Path(demo_folders.get_output_directory()).glob("aiprod/dfr*.mp4")
    with av.open(str(saved)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        assert float(container.streams.video[0].average_rate) == 2 * FPS and container.streams.audio
    assert frames == (FRAMES - 1) * 2 + 1
