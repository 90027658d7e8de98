"""Node outputs equal the core pipelines' outputs for the same inputs and seed (in-process, tiny demo models).

The nodes load through ComfyUI's model management (`ComfyModelHost`); the direct calls build the same modules with
the loaders and run `aiprod_core.pipelines` on a `LocalHost`.
"""

from __future__ import annotations

import pytest
import torch

from aiprod.aiprod_core import pipelines as core
from aiprod.aiprod_core.pipelines import GenerationRequest, ImageCondition, PipelineModels, PromptContexts
from aiprod.aiprod_core.text_encoder import encode_prompts
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.lora_apply import load_component_with_loras
from aiprod.loaders.text_encoder_files import load_gemma

W, H, F, FPS, SEED = 64, 64, 9, 24.0, 7
TILING = {"spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 24}
TINY_BLOCK = "1"


@pytest.fixture
def nodes(demo_folders):
    from aiprod.nodes import latent_nodes, loader_nodes, output_nodes, pipeline_nodes, sampling_nodes, text_nodes

    return type("Nodes", (), {"loaders": loader_nodes, "text": text_nodes, "pipelines": pipeline_nodes,
                              "sampling": sampling_nodes, "latents": latent_nodes, "output": output_nodes})


@pytest.fixture
def graph(nodes, demo_models):
    """Loader + text-encode node outputs shared by the tests."""
    c = demo_models.combos()
    model, video_vae, audio_vae = nodes.loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    (text_encoder,) = nodes.loaders.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    (conditioning,) = nodes.text.AIPRODTextEncode.execute(text_encoder, "a fox in the snow", "blurry", True).args
    (upsampler,) = nodes.loaders.AIPRODUpsamplerLoader.execute(c["upsampler"], "fp32").args
    return {"model": model, "video_vae": video_vae, "audio_vae": audio_vae, "conditioning": conditioning,
            "upsampler": upsampler, "text_encoder": text_encoder}


def core_models(demo_models, transformer_loras=(), refiner_loras=None) -> PipelineModels:
    ckpt = demo_models.checkpoint

    def load(component: str, loras=()):
        if loras:
            return load_component_with_loras(ckpt, component, list(loras), dtype=torch.float32).module
        return load_component(ckpt, component, dtype=torch.float32).module

    return PipelineModels(
        transformer=load("transformer", transformer_loras), video_encoder=load("video_encoder"),
        video_decoder=load("video_decoder"), audio_decoder=load("audio_decoder"), vocoder=load("vocoder"),
        upsampler=load_component(demo_models.upsampler, "latent_upsampler", dtype=torch.float32).module,
        refiner=None if refiner_loras is None else load("transformer", refiner_loras), dtype=torch.float32,
    )  # fmt: skip


def guider(nodes):
    values = {f"{s}_{k}": v for s, cfg in (("video", 3.0), ("audio", 7.0)) for k, v in
              (("cfg", cfg), ("stg", 1.0), ("stg_blocks", TINY_BLOCK), ("rescale", 0.7), ("modality_scale", 3.0),
               ("skip_step", 0))}
    return nodes.sampling.AIPRODGuider.execute(**values).args[0]


def base_values(graph, size=(W, H), **extra):
    values = {k: graph[k] for k in ("model", "video_vae", "audio_vae", "conditioning", "upsampler")}
    return {**values, "width": size[0], "height": size[1], "frames": F, "fps": FPS, "seed": SEED, "image_strength": 1.0,
            **TILING, **extra}


def request(images=(), size=(W, H)):
    from aiprod.nodes.output_nodes import tiling_config

    return GenerationRequest(*size, F, FPS, SEED, images=tuple(images), tiling=tiling_config(*TILING.values()))


def assert_same(node_output, result, size=(W, H)) -> None:
    images, audio, fps, latent = node_output.args
    assert torch.equal(images, result.frames)
    assert torch.equal(audio["waveform"][0], result.waveform)
    assert audio["sample_rate"] == result.sample_rate and fps == result.fps
    assert torch.equal(latent.latents.video, result.latents.video)
    assert images.shape == (F, size[1], size[0], 3)
    assert audio["waveform"].shape[-1] == round(F / FPS * result.sample_rate)


def test_text_encode_node_equals_core_encode(graph, demo_models):
    loaded = load_gemma(demo_models.text_encoder_dir, dtype=torch.float32)
    processor = load_component(demo_models.checkpoint, "text_embeddings", dtype=torch.float32).module
    expected = encode_prompts(["a fox in the snow"], loaded.tokenizer, loaded.encoder, processor)
    positive = graph["conditioning"].positive
    torch.testing.assert_close(positive.video, expected.video, rtol=0, atol=1e-6)
    torch.testing.assert_close(positive.audio, expected.audio, rtol=0, atol=1e-6)
    assert graph["conditioning"].negative is not None


def test_distilled_node_equals_core(nodes, graph, demo_models):
    image = torch.rand(1, 48, 80, 3, generator=torch.Generator().manual_seed(1))
    out = nodes.pipelines.AIPRODDistilledPipeline.execute(**base_values(graph, image=image))
    contexts = PromptContexts(graph["conditioning"].positive)
    expected = core.distilled(core_models(demo_models), contexts, request([ImageCondition(image[0])]))
    assert_same(out, expected)


def test_text_to_video_node_equals_core(nodes, graph, demo_models):
    g = guider(nodes)
    out = nodes.pipelines.AIPRODTextToVideoPipeline.execute(**base_values(graph, steps=2, guider=g))
    guided = core.GuidedSampling(2, g.video, g.audio)
    expected = core.text_to_video(core_models(demo_models), graph["conditioning"], request(), guided)
    assert_same(out, expected)


def test_staged_nodes_equal_the_one_stage_pipeline(nodes, graph, demo_models):
    """Empty latent -> sampler -> decodes gives the one-stage pipeline's clip (same seed: same noise draws)."""
    g = guider(nodes)
    (latent,) = nodes.latents.AIPRODEmptyLatent.execute(W, H, F, FPS).args
    (sampled,) = nodes.sampling.AIPRODSampler.execute(graph["model"], latent, graph["conditioning"], "ltx2", 2, SEED,
                                                      guider=g).args
    frames, fps = nodes.output.AIPRODVideoDecode.execute(graph["video_vae"], sampled, *TILING.values(), SEED).args
    (audio,) = nodes.output.AIPRODAudioDecode.execute(graph["audio_vae"], sampled).args
    expected = core.text_to_video(core_models(demo_models), graph["conditioning"], request(),
                                  core.GuidedSampling(2, g.video, g.audio))
    torch.testing.assert_close(sampled.latents.video, expected.latents.video, rtol=0, atol=0)
    torch.testing.assert_close(frames, expected.frames, rtol=0, atol=0)
    torch.testing.assert_close(audio["waveform"][0], expected.waveform, rtol=0, atol=0)
    assert fps == FPS


def test_two_stage_node_equals_core(nodes, graph, demo_models):
    c = demo_models.combos()
    (refiner,) = nodes.loaders.AIPRODLoraLoader.execute(graph["model"], c["distilled_lora"], 1.0).args
    g = guider(nodes)
    out = nodes.pipelines.AIPRODTwoStagePipeline.execute(**base_values(graph, steps=2, guider=g, refiner=refiner))
    models = core_models(demo_models, refiner_loras=[(str(demo_models.distilled_lora), 1.0)])
    expected = core.two_stage(models, graph["conditioning"], request(), core.GuidedSampling(2, g.video, g.audio))
    assert_same(out, expected)


def test_keyframe_node_equals_core(nodes, graph, demo_models):
    c = demo_models.combos()
    (refiner,) = nodes.loaders.AIPRODLoraLoader.execute(graph["model"], c["distilled_lora"], 1.0).args
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    g = guider(nodes)
    out = nodes.pipelines.AIPRODKeyframePipeline.execute(**base_values(
        graph, steps=2, guider=g, refiner=refiner, images=images, frame_indices="0, -1", strength=1.0))
    models = core_models(demo_models, refiner_loras=[(str(demo_models.distilled_lora), 1.0)])
    keyframes = [ImageCondition(images[0], 0), ImageCondition(images[1], -1)]
    expected = core.keyframe_interpolation(models, graph["conditioning"], request(keyframes),
                                           core.GuidedSampling(2, g.video, g.audio))
    assert_same(out, expected)


def test_ic_lora_node_reads_the_factor_and_equals_core(nodes, graph, demo_models):
    c = demo_models.combos()
    model, factor = nodes.loaders.AIPRODICLoraLoader.execute(graph["model"], c["ic_lora"], 1.0).args
    assert factor == 2  # from the IC-LoRA's metadata
    size = (128, 128)  # IC-LoRA: sides a multiple of 64 x the factor
    reference = torch.rand(F, 32, 32, 3, generator=torch.Generator().manual_seed(3))
    values = base_values(graph, size, model=model, refiner=graph["model"], reference_frames=reference,
                         reference_strength=1.0)
    out = nodes.pipelines.AIPRODICLoraPipeline.execute(**values)
    models = core_models(demo_models, transformer_loras=[(str(demo_models.ic_lora), 1.0)], refiner_loras=())
    expected = core.ic_lora(models, PromptContexts(graph["conditioning"].positive), request(size=size),
                            [core.ReferenceCondition(reference)], downscale_factor=2)
    assert_same(out, expected, size)
