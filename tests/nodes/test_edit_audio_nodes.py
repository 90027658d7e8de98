"""The retake, extension, audio-to-video, text-to-audio and HQ nodes in-process on the tiny demo models: each
one-node pipeline equals the core pipeline for the same inputs, the stage nodes wired by hand give the one-node
result where the draws line up (one-stage flows), the audio-only model reads no video weight, the sampler's
res_2s choice, the WAV / FLAC saver, and bad inputs refused before the prompt is encoded."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from aiprod.aiprod_core import pipelines as core
from aiprod.aiprod_core.media import read_audio_file
from aiprod.aiprod_core.pipelines import AudioClip, PromptContexts, SourceClip
from aiprod.aiprod_core.pipelines.validation import tiling_config
from aiprod.aiprod_core.sampling import StreamGuider

W, H, FPS, SEED = 64, 64, 24.0, 5
TILING = {"spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 24}


@pytest.fixture
def nodes(demo_folders):
    from aiprod.nodes import (
        audio_nodes,
        edit_nodes,
        hq_nodes,
        latent_nodes,
        loader_nodes,
        output_nodes,
        sampling_nodes,
        text_nodes,
    )

    return type("Nodes", (), {"loaders": loader_nodes, "text": text_nodes, "edit": edit_nodes, "audio": audio_nodes,
                              "hq": hq_nodes, "sampling": sampling_nodes, "latents": latent_nodes,
                              "output": output_nodes})


@pytest.fixture
def graph(nodes, demo_models):
    c = demo_models.combos()
    model, video_vae, audio_vae = nodes.loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    (text_encoder,) = nodes.loaders.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    (conditioning,) = nodes.text.AIPRODTextEncode.execute(text_encoder, "waves on a beach", "blurry", True).args
    (upsampler,) = nodes.loaders.AIPRODUpsamplerLoader.execute(c["upsampler"], "fp32").args
    return {"model": model, "video_vae": video_vae, "audio_vae": audio_vae, "conditioning": conditioning,
            "upsampler": upsampler}


def _models(graph):
    a = graph["audio_vae"]
    return core.PipelineModels(
        transformer=graph["model"].module(), video_encoder=graph["video_vae"].encoder.get(),
        video_decoder=graph["video_vae"].decoder.get(), audio_decoder=a.decoder.get(), vocoder=a.vocoder.get(),
        audio_encoder=a.encoder.get(), upsampler=graph["upsampler"].get(), dtype=torch.float32,
    )  # fmt: skip


def _clip(frames: int = 17, rate: int = 32000) -> tuple[torch.Tensor, dict]:
    gen = torch.Generator().manual_seed(frames)
    images = torch.rand(frames, H, W, 3, generator=gen)
    waveform = torch.sin(torch.arange(round(frames / FPS * rate)) / 9.0).expand(2, -1) * 0.4
    return images, {"waveform": waveform[None].clone(), "sample_rate": rate}


def _edit_values(graph, images, audio, **extra):
    return {"model": graph["model"], "video_vae": graph["video_vae"], "audio_vae": graph["audio_vae"],
            "conditioning": graph["conditioning"], "images": images, "audio": audio, "fps": FPS, "seed": SEED,
            "schedule": "distilled", "steps": 2, **TILING, **extra}


def _source(images, audio) -> SourceClip:
    return SourceClip(images, FPS, AudioClip(audio["waveform"][0], audio["sample_rate"]))


def test_retake_node_equals_core_and_the_wired_stages(nodes, graph):
    images, audio = _clip()
    out = nodes.edit.AIPRODRetakePipeline.execute(**_edit_values(
        graph, images, audio, start_time=1 / FPS, end_time=9 / FPS, regenerate_video=True, regenerate_audio=True))
    request = core.RetakeRequest(source=_source(images, audio), seed=SEED, start_time=1 / FPS, end_time=9 / FPS,
                                 tiling=tiling_config(*TILING.values()))  # fmt: skip
    expected = core.retake(_models(graph), PromptContexts(graph["conditioning"].positive), request)
    frames, sound, fps, latent = out.args
    assert torch.equal(latent.latents.video, expected.latents.video) and fps == FPS
    assert torch.equal(frames, expected.frames)
    e = nodes.edit
    (encoded,) = e.AIPRODEncodeClip.execute(graph["video_vae"], graph["audio_vae"], 0, 25, FPS, images=images,
                                            audio=audio).args  # fmt: skip
    (marked,) = e.AIPRODRetakeWindow.execute(encoded, 1 / FPS, 9 / FPS, True, True).args
    (sampled,) = nodes.sampling.AIPRODSampler.execute(graph["model"], marked, PromptContexts(
        graph["conditioning"].positive), "distilled", 8, SEED).args
    assert torch.equal(sampled.latents.video, latent.latents.video)
    assert torch.equal(sampled.latents.audio, latent.latents.audio)


def test_extend_node_equals_core_and_the_wired_stages(nodes, graph):
    images, audio = _clip()
    out = nodes.edit.AIPRODExtendPipeline.execute(**_edit_values(graph, images, audio, extend_frames=8,
                                                                 context_frames=99))  # capped at the clip
    frames, sound, fps, latent = out.args
    assert frames.shape[0] == 25 and torch.equal(frames[:17], images)
    head = round(17 / FPS * 32000)
    assert torch.equal(sound["waveform"][0, :, :head], audio["waveform"][0, :, :head])
    request = core.ExtendRequest(source=_source(images, audio), seed=SEED, extend_frames=8, context_frames=17,
                                 tiling=tiling_config(*TILING.values()))
    expected = core.extend(_models(graph), PromptContexts(graph["conditioning"].positive), request)
    assert torch.equal(latent.latents.video, expected.latents.video)
    e = nodes.edit
    (canvas,) = e.AIPRODEncodeClip.execute(graph["video_vae"], graph["audio_vae"], 8, 99, FPS, images=images,
                                           audio=audio).args  # fmt: skip
    (sampled,) = nodes.sampling.AIPRODSampler.execute(graph["model"], canvas, PromptContexts(
        graph["conditioning"].positive), "distilled", 8, SEED).args
    decoded, _ = nodes.output.AIPRODVideoDecode.execute(graph["video_vae"], sampled, *TILING.values(), 0).args
    (canvas_audio,) = nodes.output.AIPRODAudioDecode.execute(graph["audio_vae"], sampled).args
    joined, joined_audio, _ = e.AIPRODAppendContinuation.execute(decoded, canvas_audio, 99, FPS, images=images,
                                                                audio=audio).args  # fmt: skip
    assert torch.equal(joined, frames) and torch.equal(joined_audio["waveform"], sound["waveform"])


def test_edit_nodes_refuse_bad_inputs_before_encoding_the_prompt(nodes, graph):
    images, audio = _clip()
    values = _edit_values(graph, images, audio, start_time=0.3, end_time=9 / FPS, regenerate_video=True,
                          regenerate_audio=True)  # fmt: skip
    del values["conditioning"]
    with pytest.raises(ValueError, match=r"start_time=0.3: not on a latent-frame boundary"):
        nodes.edit.AIPRODRetakePipeline.check_lazy_status(**values)
    values.update(start_time=1 / FPS, images=images[:16])
    with pytest.raises(ValueError, match="source: 16 frames, expected 8k"):
        nodes.edit.AIPRODRetakePipeline.check_lazy_status(**values)
    values["images"] = images
    assert nodes.edit.AIPRODRetakePipeline.check_lazy_status(**values) == ["conditioning"]
    extend = _edit_values(graph, images, audio, extend_frames=12, context_frames=9)
    del extend["conditioning"]
    with pytest.raises(ValueError, match="extend_frames=12: must be a multiple of 8"):
        nodes.edit.AIPRODExtendPipeline.check_lazy_status(**extend)


def _guider(nodes):
    values = {f"{s}_{k}": v for s, cfg in (("video", 3.0), ("audio", 7.0)) for k, v in
              (("cfg", cfg), ("stg", 1.0), ("stg_blocks", "1"), ("rescale", 0.7), ("modality_scale", 3.0),
               ("skip_step", 0))}
    return nodes.sampling.AIPRODGuider.execute(**values).args[0]


def test_audio_to_video_node_equals_core_and_returns_the_track(nodes, graph, demo_models):
    c = demo_models.combos()
    (refiner,) = nodes.loaders.AIPRODLoraLoader.execute(graph["model"], c["distilled_lora"], 1.0).args
    _, audio = _clip(25, 22050)
    g = _guider(nodes)
    values = {**{k: graph[k] for k in ("model", "video_vae", "audio_vae", "conditioning", "upsampler")},
              "refiner": refiner, "width": W, "height": H, "frames": 9, "fps": FPS, "seed": SEED, "steps": 2,
              "guider": g, "audio": audio, "start_time": 0.1, "max_duration": 0.0, "image_strength": 1.0, **TILING}
    frames, sound, fps, latent = nodes.audio.AIPRODAudioToVideoPipeline.execute(**values).args
    first = round(0.1 * 22050)
    assert sound["sample_rate"] == 22050
    assert torch.equal(sound["waveform"][0], audio["waveform"][0, :, first : first + round(9 / FPS * 22050)])
    models = replace(_models(graph), refiner=refiner.module())
    request = core.GenerationRequest(W, H, 9, FPS, SEED, tiling=tiling_config(*TILING.values()))
    expected = core.audio_to_video(models, graph["conditioning"], request,
                                   AudioClip(audio["waveform"][0], 22050), core.GuidedSampling(2, g.video, g.audio),
                                   start_time=0.1)  # fmt: skip
    assert torch.equal(latent.latents.video, expected.latents.video)
    (empty,) = nodes.latents.AIPRODEmptyLatent.execute(W // 2, H // 2, 9, FPS).args
    (frozen, cut) = nodes.audio.AIPRODEncodeAudio.execute(empty, graph["audio_vae"], audio, 0.1, 0.0).args
    assert torch.equal(cut["waveform"], sound["waveform"]) and torch.equal(frozen.latents.audio, latent.latents.audio)
    (sampled,) = nodes.sampling.AIPRODSampler.execute(graph["model"], frozen, graph["conditioning"], "ltx2", 2, SEED,
                                                      guider=g).args  # fmt: skip
    assert torch.equal(sampled.latents.audio, frozen.latents.audio)  # never denoised
    del values["conditioning"]
    with pytest.raises(ValueError, match=r"is shorter than the clip's 0.3750 s"):
        nodes.audio.AIPRODAudioToVideoPipeline.check_lazy_status(**{**values, "start_time": 0.9})


def test_text_to_audio_through_the_audio_only_model(nodes, graph):
    (audio_model,) = nodes.audio.AIPRODAudioOnlyModel.execute(graph["model"]).args
    g = _guider(nodes)
    sound, latent = nodes.audio.AIPRODTextToAudioPipeline.execute(audio_model, graph["audio_vae"],
                                                                  graph["conditioning"], 17, FPS, 2, SEED, g).args
    module = audio_model.module()
    assert not hasattr(module, "patchify_proj") and not hasattr(module.transformer_blocks[0], "attn1")
    assert sound["waveform"].shape[-1] == round(17 / FPS * sound["sample_rate"])
    (empty,) = nodes.audio.AIPRODEmptyAudioLatent.execute(17, FPS).args
    (sampled,) = nodes.sampling.AIPRODSampler.execute(audio_model, empty, graph["conditioning"], "ltx2", 2, SEED,
                                                      guider=replace(g, video=StreamGuider())).args
    assert torch.equal(sampled.latents.audio, latent.latents.audio)
    (decoded,) = nodes.output.AIPRODAudioDecode.execute(graph["audio_vae"], sampled).args
    assert torch.equal(decoded["waveform"], sound["waveform"])


def test_hq_node_equals_core_and_the_sampler_offers_res_2s(nodes, graph, demo_models):
    c = demo_models.combos()
    (refiner,) = nodes.loaders.AIPRODLoraLoader.execute(graph["model"], c["distilled_lora"], 0.5).args
    values = {**{k: graph[k] for k in ("model", "video_vae", "audio_vae", "conditioning", "upsampler")},
              "refiner": refiner, "width": W, "height": H, "frames": 9, "fps": FPS, "seed": SEED, "steps": 2,
              "image_strength": 1.0, **TILING}
    frames, _, _, latent = nodes.hq.AIPRODTwoStageHQPipeline.execute(**values).args
    hq = core.GuidedSampling.hq_defaults()
    expected = core.two_stage_hq(replace(_models(graph), refiner=refiner.module()), graph["conditioning"],
                                 core.GenerationRequest(W, H, 9, FPS, SEED, tiling=tiling_config(*TILING.values())),
                                 core.GuidedSampling(2, hq.video, hq.audio))
    assert torch.equal(latent.latents.video, expected.latents.video)
    (empty,) = nodes.latents.AIPRODEmptyLatent.execute(W // 2, H // 2, 9, FPS).args
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    euler, res = (nodes.sampling.AIPRODSampler.execute(graph["model"], empty, PromptContexts(
        graph["conditioning"].positive), "ltx2", 2, SEED, sigmas=sigmas, sampler=name).args[0]
        for name in ("euler", "res_2s"))  # fmt: skip
    assert not torch.equal(euler.latents.video, res.latents.video)
    assert nodes.sampling.AIPRODSampler.INPUT_TYPES()["optional"]["sampler"][0] == ["euler", "res_2s"]


@pytest.mark.parametrize("fmt", ["wav (16-bit PCM)", "flac (16-bit, lossless)"])
def test_save_audio_writes_a_readable_file(nodes, demo_folders, fmt):
    waveform = (torch.sin(torch.arange(4800) / 5.0) * 0.5).expand(2, -1)
    out = nodes.audio.AIPRODSaveAudio.execute({"waveform": waveform[None], "sample_rate": 24000}, "aiprod/t", fmt)
    (saved,) = out.ui.as_dict()["audio"]
    path = f"{demo_folders.get_output_directory()}/{saved['subfolder']}/{saved['filename']}"
    read, rate = read_audio_file(path)
    assert rate == 24000 and read.shape == (2, 4800)
    assert (read - waveform).abs().max() <= 1 / 32767
    assert nodes.audio.AIPRODSaveAudio.validate_inputs("/abs/x") != True  # noqa: E712
