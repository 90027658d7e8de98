"""LTX-2.5 through the nodes (in-process ComfyUI on the CPU, the tiny 2.5 set under the official file names): the
loaders take the per-component files, a LoRA of the other generation is refused naming both, the video VAE's
decoder choice, the pipeline and stage nodes with 2.5's defaults (equal to the core pipelines), temporal upsample
and "auto" frames from the duration head."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from support import tiny_configs as tc
from support.ltx25_files import register_folders

from aiprod.aiprod_core import pipelines as core
from aiprod.aiprod_core.duration_head import frames_for_seconds
from aiprod.aiprod_core.pipelines import GenerationRequest, ImageCondition, PipelineModels, PromptContexts
from aiprod.aiprod_core.pipelines.generations import generation_defaults
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.detect import describe_file

W, H, F, FPS, SEED = 64, 64, 9, 24.0, 3
TILING = {"spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 24}
CONTEXT = 32


@pytest.fixture
def n(demo_folders, files25):
    register_folders(demo_folders, files25)
    from aiprod.nodes import loader_nodes, ltx25_nodes, output_nodes, pipeline_nodes, sampling_nodes

    return type("Nodes", (), {"loaders": loader_nodes, "ltx25": ltx25_nodes, "pipelines": pipeline_nodes,
                              "sampling": sampling_nodes, "output": output_nodes})


def _contexts(seed: int = 0) -> PromptContexts:
    gen = torch.Generator().manual_seed(seed)
    video, audio = (torch.randn(2, 1, CONTEXT, width, generator=gen) for width in
                    (tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM, tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM))
    return PromptContexts.from_tensors(video[0], audio[0], video[1], audio[1])


def _vae(files25, name: str) -> str:
    return f"{files25.combo(name)} (vae)"  # the Video VAE Loader lists models/vae and models/checkpoints


def _graph(n, files25, demo_models, variant: str = "distilled", vae: str = "diffusion_vae") -> dict:
    (model,) = n.loaders.AIPRODDiffusionModelLoader.execute(files25.combo(variant), "fp32", "upcast").args
    (video_vae,) = n.loaders.AIPRODVideoVAELoader.execute(_vae(files25, vae), "fp32", "auto").args
    (audio_vae,) = n.loaders.AIPRODAudioVAELoader.execute(f"{demo_models.checkpoint.name} (checkpoints)",
                                                         "fp32").args
    (upsampler,) = n.loaders.AIPRODUpsamplerLoader.execute(demo_models.combo("upsampler"), "fp32").args
    return {"model": model, "video_vae": video_vae, "audio_vae": audio_vae, "upsampler": upsampler,
            "conditioning": _contexts(), "width": W, "height": H, "frames": F, "fps": FPS, "seed": SEED,
            "image_strength": 1.0, **TILING}


def _guider(n):
    values = {f"{s}_{k}": v for s, cfg in (("video", 3.0), ("audio", 7.0)) for k, v in
              (("cfg", cfg), ("stg", 1.0), ("stg_blocks", "1"), ("rescale", 0.7), ("modality_scale", 3.0),
               ("skip_step", 0))}
    return n.sampling.AIPRODGuider.execute(**values).args[0]


def _core_models(files25, demo_models, transformer: str = "distilled", refiner_loras=None) -> PipelineModels:
    from aiprod.loaders.lora_apply import load_component_with_loras

    path = files25.paths[transformer]

    def dit(loras):
        if loras:
            return load_component_with_loras(path, "transformer", list(loras), dtype=torch.float32).module
        return load_component(path, "transformer", dtype=torch.float32).module

    vae, ckpt = files25.paths["diffusion_vae"], demo_models.checkpoint
    return PipelineModels(
        transformer=dit(()), video_encoder=load_component(vae, "video_encoder", dtype=torch.float32).module,
        video_decoder=load_component(vae, "diffusion_video_decoder", dtype=torch.float32).module,
        audio_decoder=load_component(ckpt, "audio_decoder", dtype=torch.float32).module,
        vocoder=load_component(ckpt, "vocoder", dtype=torch.float32).module,
        upsampler=load_component(demo_models.upsampler, "latent_upsampler", dtype=torch.float32).module,
        refiner=None if refiner_loras is None else dit(refiner_loras), dtype=torch.float32,
    )  # fmt: skip


def _request(images=()) -> GenerationRequest:
    from aiprod.nodes.output_nodes import tiling_config

    return GenerationRequest(W, H, F, FPS, SEED, images=tuple(images), tiling=tiling_config(*TILING.values()))


def _assert_same(node_output, result) -> None:
    images, audio, fps, latent = node_output.args
    assert torch.equal(images, result.frames) and images.shape == (F, H, W, 3)
    assert torch.equal(audio["waveform"][0], result.waveform) and fps == result.fps == FPS
    assert torch.equal(latent.latents.video, result.latents.video)
    assert torch.isfinite(images).all() and images.std() > 0


def test_generation_defaults_follow_the_reference_constants() -> None:
    assert generation_defaults("LTX-2.5 (22B family)") == generation_defaults("2.5.0")
    assert (generation_defaults("2.5.0").steps, generation_defaults("2.5.0").stg_block) == (30, 28)
    assert generation_defaults("2.5.0").image_crf == 18  # ltx-pipelines 1.2.0: LTX_2_4_IMAGE_CRF
    assert generation_defaults("LTX-2.3 (22B family)").image_crf == 33
    assert (generation_defaults("2.0.0").steps, generation_defaults("ltx2").stg_block) == (40, 29)
    assert generation_defaults(None) == generation_defaults("2.3.0")
    # ancestral distilled stage 1 from 2.5 (ANCESTRAL_SAMPLER_SINCE_VERSION), CRF 18 already from 2.4
    assert generation_defaults("LTX-2.5 (22B family)").distilled_stage_1 == "euler_ancestral"
    prerelease = generation_defaults("LTX-2.5 (22B family, pre-release model_version 2.4)")
    assert (prerelease.distilled_stage_1, prerelease.image_crf) == ("euler", 18)
    assert generation_defaults("2.3.0").distilled_stage_1 == "euler"


def test_detect_names_the_node_for_each_25_file(files25) -> None:
    expected = {
        "dev": "AIPROD Diffusion Model Loader", "distilled": "AIPROD Diffusion Model Loader",
        "diffusion_vae": "AIPROD Video VAE Loader", "conv_vae": "AIPROD Video VAE Loader",
        "temporal": "AIPROD Latent Upsampler Loader", "duration_head": "AIPROD Duration Head Loader",
        "lora25": "AIPROD LoRA Loader",
    }
    for name, node in expected.items():
        description = describe_file(files25.paths[name])
        assert description.loader.startswith(node), (name, description.loader)
    assert "Temporal Upsample" in describe_file(files25.paths["temporal"]).loader
    assert describe_file(files25.paths["distilled"]).generation == "LTX-2.5 (22B family)"


def test_loras_of_the_other_generation_are_refused_naming_both(n, files25, demo_models) -> None:
    (model25,) = n.loaders.AIPRODDiffusionModelLoader.execute(files25.combo("dev"), "fp32", "upcast").args
    assert model25.generation == "LTX-2.5 (22B family)"
    with pytest.raises(ValueError) as info:
        n.loaders.AIPRODLoraLoader.execute(model25, files25.combo("lora23"), 1.0)
    assert "(LTX-2.3) does not match the model's 'LTX-2.5 (22B family)' (LTX-2.5)" in str(info.value)
    assert files25.combo("lora23") in str(info.value)
    model23 = n.loaders.AIPRODCheckpointLoader.execute(demo_models.combo("checkpoint"), "fp32", "upcast").args[0]
    with pytest.raises(ValueError, match=r"\(LTX-2.5\) does not match the model's 'LTX-2.3 \(22B family\)'"):
        n.loaders.AIPRODICLoraLoader.execute(model23, files25.combo("lora25"), 1.0)
    (fused,) = n.loaders.AIPRODLoraLoader.execute(model25, files25.combo("lora25"), 1.0).args  # same generation
    assert fused.loras[-1][0] == str(files25.paths["lora25"])
    n.loaders.AIPRODLoraLoader.execute(model25, files25.combo("lora23"), 0.0)  # 0 = disabled: not checked


def test_video_vae_decoder_choice(n, files25) -> None:
    from aiprod.aiprod_core.video_vae import DiffusionVideoDecoder, VideoDecoder

    (diffusion,) = n.loaders.AIPRODVideoVAELoader.execute(_vae(files25, "diffusion_vae"), "fp32", "auto").args
    assert isinstance(diffusion.decoder.get(), DiffusionVideoDecoder)
    (conv,) = n.loaders.AIPRODVideoVAELoader.execute(_vae(files25, "conv_vae"), "fp32", "conv").args
    assert isinstance(conv.decoder.get(), VideoDecoder)
    with pytest.raises(ValueError) as info:
        n.loaders.AIPRODVideoVAELoader.execute(_vae(files25, "diffusion_vae"), "fp32", "conv")
    message = str(info.value)
    assert message.startswith("decoder='conv': vae='ltx-2.5-video-vae-bf16.safetensors (vae)' holds the LTX-2.5 "
                              "diffusion")
    assert "ltx-2.5-video-vae-conv-bf16.safetensors (conv)" in message
    with pytest.raises(ValueError, match="holds the convolutional video decoder, not the LTX-2.5 diffusion"):
        n.loaders.AIPRODVideoVAELoader.execute(_vae(files25, "conv_vae"), "fp32", "diffusion")


def test_distilled_node_on_25_uses_its_image_crf_and_equals_core(n, files25, demo_models) -> None:
    values = _graph(n, files25, demo_models)
    image = torch.rand(1, 48, 80, 3, generator=torch.Generator().manual_seed(1))
    out = n.pipelines.AIPRODDistilledPipeline.execute(**values, image=image)
    contexts = PromptContexts(values["conditioning"].positive)
    # LTX-2.5 (ltx-pipelines 1.2.0): conditioning images re-compressed at CRF 18 (LTX-2.3: 33), stage 1 sampled
    # with the ancestral Euler step
    models = _core_models(files25, demo_models)
    request = replace(_request([ImageCondition(image[0], crf=18)]), distilled_stage_1="euler_ancestral")
    _assert_same(out, core.distilled(models, contexts, request))
    euler = core.distilled(models, contexts, replace(request, distilled_stage_1="euler"))
    assert not torch.equal(euler.latents.video, out.args[3].latents.video)


def test_two_stage_node_on_25_equals_core(n, files25, demo_models) -> None:
    values = _graph(n, files25, demo_models, variant="dev")
    (refiner,) = n.loaders.AIPRODLoraLoader.execute(values["model"], files25.combo("lora25"), 1.0).args
    guider = _guider(n)
    out = n.pipelines.AIPRODTwoStagePipeline.execute(**values, steps=2, guider=guider, refiner=refiner)
    models = _core_models(files25, demo_models, "dev", refiner_loras=[(str(files25.paths["lora25"]), 1.0)])
    expected = core.two_stage(models, values["conditioning"], _request(), core.GuidedSampling(2, guider.video,
                                                                                              guider.audio))
    _assert_same(out, expected)


def test_text_to_video_keyframe_and_ic_lora_nodes_on_25_equal_core(n, files25, demo_models) -> None:
    values = _graph(n, files25, demo_models, variant="dev")
    guider = _guider(n)
    guided = core.GuidedSampling(2, guider.video, guider.audio)
    out = n.pipelines.AIPRODTextToVideoPipeline.execute(**values, steps=2, guider=guider)
    _assert_same(out, core.text_to_video(_core_models(files25, demo_models, "dev"), values["conditioning"],
                                         _request(), guided))
    (refiner,) = n.loaders.AIPRODLoraLoader.execute(values["model"], files25.combo("lora25"), 1.0).args
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    out = n.pipelines.AIPRODKeyframePipeline.execute(**values, steps=2, guider=guider, refiner=refiner,
                                                     images=images, frame_indices="0, -1", strength=1.0)
    models = _core_models(files25, demo_models, "dev", refiner_loras=[(str(files25.paths["lora25"]), 1.0)])
    keyframes = [ImageCondition(images[0], 0, crf=18), ImageCondition(images[1], -1, crf=18)]
    _assert_same(out, core.keyframe_interpolation(models, values["conditioning"], _request(keyframes), guided))
    (distilled,) = n.loaders.AIPRODDiffusionModelLoader.execute(files25.combo("distilled"), "fp32", "upcast").args
    model, factor = n.loaders.AIPRODICLoraLoader.execute(distilled, files25.combo("ic_lora25"), 1.0).args
    reference = torch.rand(F, 32, 32, 3, generator=torch.Generator().manual_seed(3))
    size = {"width": 128, "height": 128}  # IC-LoRA: sides a multiple of 64 x the factor
    out = n.pipelines.AIPRODICLoraPipeline.execute(**{**values, **size, "model": model}, refiner=distilled,
                                                   reference_frames=reference, reference_strength=1.0)
    models = _core_models(files25, demo_models)
    from aiprod.loaders.lora_apply import load_component_with_loras

    models = PipelineModels(**{**models.__dict__, "refiner": models.transformer, "transformer": (
        load_component_with_loras(files25.paths["distilled"], "transformer", [(str(files25.paths["ic_lora25"]), 1.0)],
                                  dtype=torch.float32).module)})
    expected = core.ic_lora(models, PromptContexts(values["conditioning"].positive),
                            GenerationRequest(128, 128, F, FPS, SEED, tiling=_request().tiling),
                            [core.ReferenceCondition(reference)], downscale_factor=factor)
    images_out = out.args[0]
    assert torch.equal(images_out, expected.frames) and images_out.shape == (F, 128, 128, 3)


def test_default_guidance_on_25_is_the_reference_one(n, files25, demo_models) -> None:
    """No guider: 2.5's defaults (ltx-pipelines LTX_2_4_PARAMS: STG block 28), refused on a 2-block tiny model
    by name before anything is encoded."""
    values = _graph(n, files25, demo_models, variant="dev")
    from aiprod.nodes.pipeline_base import default_streams

    streams = default_streams(values["model"])
    assert streams["video"] == core.GuidedSampling.defaults(ltx23=True).video
    with pytest.raises(ValueError, match="28"):
        n.pipelines.AIPRODTextToVideoPipeline.check_lazy_status(**{**values, "steps": 2, "conditioning": None})


def test_stage_nodes_temporal_upsample_and_diffusion_decode(n, files25, demo_models) -> None:
    values = _graph(n, files25, demo_models)
    from aiprod.nodes import latent_nodes

    (latent,) = latent_nodes.AIPRODEmptyLatent.execute(W, H, F, FPS).args
    (sampled,) = n.sampling.AIPRODSampler.execute(values["model"], latent, values["conditioning"], "distilled", 8,
                                                  SEED).args
    (temporal,) = n.loaders.AIPRODUpsamplerLoader.execute(files25.combo("temporal"), "fp32").args
    (doubled,) = n.ltx25.AIPRODTemporalUpsample.execute(sampled, temporal, values["video_vae"]).args
    assert (doubled.latents.frames, doubled.latents.fps) == ((F - 1) * 2 + 1, 2 * FPS)
    assert doubled.latents.video.shape[2] == 2 * sampled.latents.video.shape[2] - 1
    assert torch.equal(doubled.latents.audio, sampled.latents.audio)
    frames, fps = n.output.AIPRODVideoDecode.execute(values["video_vae"], doubled, *TILING.values(), SEED).args
    assert frames.shape == ((F - 1) * 2 + 1, H, W, 3) and fps == 2 * FPS and torch.isfinite(frames).all()
    with pytest.raises(ValueError, match="use AIPROD Temporal Upsample"):
        n.sampling.AIPRODLatentUpsample.execute(sampled, temporal, values["video_vae"])
    with pytest.raises(ValueError, match="use AIPROD Latent Upsample for this file"):
        n.ltx25.AIPRODTemporalUpsample.execute(sampled, values["upsampler"], values["video_vae"])


def test_auto_frames_from_the_duration_head(n, files25) -> None:
    (head,) = n.ltx25.AIPRODDurationHeadLoader.execute(files25.combo("duration_head")).args
    contexts = _contexts(seed=5)
    frames, seconds = n.ltx25.AIPRODPredictFrames.execute(head, contexts, FPS, 1.0, 20.0).args
    with torch.no_grad():
        expected = float(files25.tiny.duration_head(contexts.positive.video, contexts.positive.audio)[0])
    assert abs(seconds - expected) <= 0.05 * expected  # bf16 file weights, float32 head
    assert frames == frames_for_seconds(seconds, FPS) and (frames - 1) % 8 == 0 and 24 <= frames <= 480
    short, _ = n.ltx25.AIPRODPredictFrames.execute(head, contexts, FPS, 0.0, 1.0).args
    assert short == 17  # clamped to 1 s at 24 fps: 24 frames, down to the 8 k + 1 grid
    with pytest.raises(ValueError, match="min_seconds=3.0, max_seconds=2.0"):
        n.ltx25.AIPRODPredictFrames.execute(head, contexts, FPS, 3.0, 2.0)


def test_comfy_int8_convrot_25_transformer_loads_and_samples_close_to_bf16(n, files25, demo_models, demo_folders,
                                                                          tmp_path) -> None:
    """Comfy-Org's repackaged 2.5 transformer (int8 + ConvRot per block Linear, ``comfy_quant``) through the
    Diffusion Model Loader, kept quantized and upcast: the same generation, a sample close to the bf16 file's."""
    from support.quant_files import quantize_file

    from aiprod.nodes import latent_nodes

    folder = tmp_path / "diffusion_models"
    target = folder / "ltx-2.5-22b-distilled-transformer-int8-convrot.safetensors"
    folder.mkdir()
    quantize_file(files25.paths["distilled"], target, "int8_convrot")
    paths = demo_folders.folder_names_and_paths["diffusion_models"]
    demo_folders.folder_names_and_paths["diffusion_models"] = ([str(folder), *paths[0]], paths[1])
    demo_folders.filename_list_cache.clear()
    (latent,) = latent_nodes.AIPRODEmptyLatent.execute(W, H, F, FPS).args
    contexts = _contexts()
    outputs = {}
    for name, mode in (("dense", "upcast"), ("keep", "keep"), ("upcast", "upcast")):
        file = files25.combo("distilled") if name == "dense" else target.name
        (model,) = n.loaders.AIPRODDiffusionModelLoader.execute(file, "fp32", mode).args
        assert model.generation == "LTX-2.5 (22B family)"
        (sampled,) = n.sampling.AIPRODSampler.execute(model, latent, contexts, "distilled", 8, SEED).args
        outputs[name] = sampled.latents.video
    for name in ("keep", "upcast"):
        error = (outputs[name] - outputs["dense"]).abs().max() / outputs["dense"].abs().max()
        assert 0 < error < 0.05, (name, float(error))  # int8 rounding of every block Linear, over 8 steps
    torch.testing.assert_close(outputs["keep"], outputs["upcast"], rtol=1e-4, atol=1e-4)
