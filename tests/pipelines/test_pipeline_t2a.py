"""Text-to-audio: audio alone, the video branch never loaded nor called. Parity with an audio-only run of
ltx-core 1.0.0's transformer (``video=None``) under its ``MultiModalGuider`` (CFG + STG + rescale) on both
generations; the audio-only transformer build reads only the audio stream's weights from the file and gives
the same audio as the full model; the duration is exactly frames / fps."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch
from pipeline_oracle import FPS, LATENT_ATOL, contexts, max_diff, tiny_pair
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import AudioRequest, GuidedSampling, PipelineModels, text_to_audio
from aiprod.aiprod_core.pipelines.audio_pipelines import text_to_audio_defaults
from aiprod.aiprod_core.sampling import StreamGuider
from aiprod.loaders.component_loader import load_component, plan_load
from aiprod.loaders.key_maps import AUDIO_STREAM_PARTS

FRAMES, STEPS, SEED = 17, 2, 4


def _guided(generation: str) -> GuidedSampling:
    block = 1 if generation == tc.LTX2 else 0
    return GuidedSampling(STEPS, StreamGuider(), StreamGuider.multimodal(7.0, 1.0, (block,), 0.7, 1.0))


def _models(generation: str, transformer: torch.nn.Module | None = None) -> PipelineModels:
    ours = tiny_pair(generation).ours
    return PipelineModels(transformer=transformer or ours.transformer, audio_decoder=ours.audio_decoder,
                          vocoder=ours.vocoder, dtype=torch.float32)  # fmt: skip


@functools.cache
def _ours(generation: str):
    with torch.no_grad():
        return text_to_audio(_models(generation), contexts(generation), AudioRequest(FRAMES, FPS, SEED),
                             _guided(generation))  # fmt: skip


def _reference(generation: str) -> torch.Tensor:
    """ltx-core's transformer called with ``video=None`` each step: cond, uncond and STG passes combined by its
    ``MultiModalGuider``, blended with the clean tokens, Euler-stepped."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.patchifiers import AudioPatchifier
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.guidance.perturbations import (
        BatchedPerturbationConfig,
        Perturbation,
        PerturbationConfig,
        PerturbationType,
    )
    from ltx_core.model.transformer import X0Model
    from ltx_core.tools import AudioLatentTools
    from ltx_core.types import AudioLatentShape, VideoPixelShape
    from ltx_pipelines.utils.helpers import modality_from_latent_state, post_process_latent

    block = 1 if generation == tc.LTX2 else 0
    ctx, model = contexts(generation), X0Model(tiny_pair(generation).ref.transformer)
    guider = MultiModalGuider(params=MultiModalGuiderParams(cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7,
                                                            stg_blocks=[block]), negative_context=ctx.negative.audio)
    skip = BatchedPerturbationConfig([PerturbationConfig([Perturbation(PerturbationType.SKIP_AUDIO_SELF_ATTN,
                                                                       [block])])])  # fmt: skip
    tools = AudioLatentTools(AudioPatchifier(1), AudioLatentShape.from_video_pixel_shape(
        VideoPixelShape(batch=1, frames=FRAMES, width=64, height=64, fps=FPS)))
    state = GaussianNoiser(torch.Generator().manual_seed(SEED))(tools.create_initial_state("cpu", torch.float32))
    sigmas = LTX2Scheduler().execute(steps=STEPS).float()
    for index in range(STEPS):
        positive = modality_from_latent_state(state, ctx.positive.audio, sigmas[index])
        negative = modality_from_latent_state(state, ctx.negative.audio, sigmas[index])
        cond = model(video=None, audio=positive, perturbations=None)[1]
        uncond = model(video=None, audio=negative, perturbations=None)[1]
        perturbed = model(video=None, audio=positive, perturbations=skip)[1]
        x0 = post_process_latent(guider.calculate(cond, uncond, perturbed, 0.0), state.denoise_mask,
                                 state.clean_latent)  # fmt: skip
        state = replace(state, latent=EulerDiffusionStep().step(state.latent, x0, sigmas, index))
    return tools.unpatchify(state).latent


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_text_to_audio_matches_an_audio_only_reference_run(generation: str) -> None:
    result = _ours(generation)
    max_diff(result.latent, _reference(generation), "audio latent", LATENT_ATOL)
    assert result.waveform.shape == (2, round(FRAMES / FPS * result.sample_rate))
    assert result.waveform.std() > 1e-4


def _video_branch(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    names = ("patchify_proj", "adaln_single", "prompt_adaln_single", "proj_out", "caption_projection",
             "av_ca_video_scale_shift_adaln_single", "av_ca_audio_scale_shift_adaln_single",
             "av_ca_a2v_gate_adaln_single", "av_ca_v2a_gate_adaln_single")  # fmt: skip
    modules = [getattr(transformer, n) for n in names if hasattr(transformer, n)]
    for block in transformer.transformer_blocks:
        modules += [getattr(block, n) for n in ("attn1", "attn2", "ff", "audio_to_video_attn", "video_to_audio_attn")]
    return modules


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_text_to_audio_never_calls_the_video_branch(generation: str) -> None:
    transformer = tiny_pair(generation).ours.transformer
    called: list[str] = []
    video = _video_branch(transformer)
    assert len(video) >= 5 * tc.NUM_LAYERS
    handles = [m.register_forward_pre_hook(lambda m, a: called.append(type(m).__name__)) for m in video]
    audio_calls: list[int] = []
    handles.append(transformer.audio_patchify_proj.register_forward_pre_hook(lambda m, a: audio_calls.append(1)))
    try:
        text_to_audio(_models(generation), contexts(generation), AudioRequest(FRAMES, FPS, SEED + 1),
                      _guided(generation))  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    assert called == [] and len(audio_calls) == STEPS  # cond, uncond and STG share one call per step


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_audio_only_build_reads_no_video_weight_and_gives_the_same_audio(generation: str, tiny_set) -> None:
    path = tiny_set.checkpoint(generation)
    plan = plan_load(path, "audio_transformer")
    assert plan.keys and all(any(p in f for p in AUDIO_STREAM_PARTS) for f in plan.keys.values())
    full_keys = plan_load(path, "transformer").keys
    video_keys = set(full_keys.values()) - set(plan.keys.values())
    assert any(".attn1." in k and ".audio_attn1." not in k for k in video_keys)  # the video weights are left out
    audio_only = load_component(path, "audio_transformer", dtype=torch.float32).module
    full = load_component(path, "transformer", dtype=torch.float32).module
    assert not hasattr(audio_only, "patchify_proj") and not hasattr(audio_only.transformer_blocks[0], "attn1")
    assert not any(n.startswith(("patchify_proj", "av_ca_")) for n, _ in audio_only.named_parameters())
    request, ctx = AudioRequest(FRAMES, FPS, SEED), contexts(generation)
    a = text_to_audio(_models(generation, audio_only), ctx, request, _guided(generation))
    b = text_to_audio(_models(generation, full), ctx, request, _guided(generation))
    assert torch.equal(a.latent, b.latent) and torch.equal(a.waveform, b.waveform)
    with pytest.raises(ValueError, match="video input given to an audio-only transformer"):
        audio_only._check_inputs(object(), None)


def test_defaults_follow_the_reference_t2a_parser() -> None:
    for ltx23, steps, block in ((True, 30, 28), (False, 40, 29)):
        defaults = text_to_audio_defaults(ltx23)
        assert defaults.steps == steps and defaults.video.active_terms() == ()
        terms = {type(t).__name__: t for t in defaults.audio.active_terms()}
        assert set(terms) == {"CFG", "STG"} and terms["CFG"].scale == 7.0 and terms["STG"].blocks == (block,)
        assert defaults.audio.rescale == 0.7


@pytest.mark.parametrize(("frames", "fps", "message"), [(16, FPS, "frames=16"), (17, 0.5, "fps=0.5"),
                                                        (17, float("nan"), "fps=nan")])  # fmt: skip
def test_bad_requests_are_refused_before_any_model_work(frames: int, fps: float, message: str) -> None:
    class Untouched(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the model ran")

    with pytest.raises(ValueError, match=message):
        text_to_audio(_models(tc.LTX2, Untouched()), contexts(tc.LTX2), AudioRequest(frames, fps, 1),
                      _guided(tc.LTX2))  # fmt: skip
