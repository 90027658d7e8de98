"""The batched-pass planner and a full sampler run vs ltx-core / ltx-pipelines 1.0.0, through the tiny transformer
of both generations with the same seeded weights: one batched call equals the reference's separate guided passes and
our own per-pass calls, passes can be capped per call, a full guided Euler / gradient-estimation run matches the
reference loop, and bf16 stays close to float32. Shared shapes and noised states come from sampling_support."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from sampling_support import FPS, VIDEO_SHAPE, assert_close, our_noised, ref_video_tools, reference_noised
from support import tiny_configs as tc
from transformer_pairs import reference_and_ours

from aiprod.aiprod_core.sampling import (
    EulerStep,
    GradientEstimationStep,
    Guidance,
    LatentState,
    Prompt,
    StreamGuider,
    VideoLayout,
    X0Denoiser,
    denoise,
    ltx2_sigmas,
)
from aiprod.aiprod_core.transformer import AVTransformer, ModalityInput

CONTEXT_TOKENS = 6


def _ours_state(ref: Any) -> LatentState:
    return LatentState(ref.latent, ref.denoise_mask, ref.positions, ref.clean_latent, ref.attention_mask)


@pytest.fixture(scope="module", params=tc.GENERATIONS)
def models(request: pytest.FixtureRequest) -> tuple[str, Any, AVTransformer]:
    """(generation, reference X0Model, our AVTransformer) with the same seeded honest weights."""
    from ltx_core.model.transformer import X0Model

    reference, ours = reference_and_ours(request.param, seed=7)
    return request.param, X0Model(reference).eval(), ours


def _contexts(generation: str, seed: int = 9) -> tuple[Prompt, Prompt]:
    gen = torch.Generator().manual_seed(seed)
    ltx2 = generation == tc.LTX2
    video_dim = tc.CAPTION_CHANNELS if ltx2 else tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM
    audio_dim = tc.CAPTION_CHANNELS if ltx2 else tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM

    def prompt() -> Prompt:
        return Prompt(
            torch.randn(1, CONTEXT_TOKENS, video_dim, generator=gen),
            torch.randn(1, CONTEXT_TOKENS, audio_dim, generator=gen),
        )

    return prompt(), prompt()


def _guiders(generation: str, video_skip: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    block = 1 if generation == tc.LTX2 else 0
    video = {"cfg_scale": 3.0, "stg_scale": 1.0, "rescale_scale": 0.7, "modality_scale": 3.0, "stg_blocks": [block]}
    audio = {"cfg_scale": 7.0, "stg_scale": 1.0, "rescale_scale": 0.7, "modality_scale": 3.0, "stg_blocks": [1 - block]}
    video["skip_step"] = video_skip
    return video, audio


def _reference_denoise_fn(reference: Any, generation: str, video_skip: int = 0) -> Any:
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func

    positive, negative = _contexts(generation)
    video_params, audio_params = _guiders(generation, video_skip)
    return multi_modal_guider_denoising_func(
        MultiModalGuider(MultiModalGuiderParams(**video_params), negative_context=negative.video),
        MultiModalGuider(MultiModalGuiderParams(**audio_params), negative_context=negative.audio),
        positive.video,
        positive.audio,
        reference,
    )


def _our_guidance(generation: str, video_skip: int = 0) -> Guidance:
    positive, negative = _contexts(generation)
    video_params, audio_params = _guiders(generation, video_skip)
    return Guidance(
        positive, negative, StreamGuider.multimodal(**video_params), StreamGuider.multimodal(**audio_params)
    )


class _CountingModel:
    def __init__(self, model: Any) -> None:
        self.model, self.batches = model, []

    def __call__(self, video: ModalityInput | None, audio: ModalityInput | None, perturbations: Any) -> Any:
        self.batches.append(video.latent.shape[0])
        return self.model(video, audio, perturbations)


@pytest.mark.oracle
def test_planner_matches_reference_guided_passes(models) -> None:
    """One batched call (positive, negative, STG, isolated) == the reference's four separate guided passes."""
    generation, reference, ours = models
    ref_video, ref_audio = reference_noised(21, torch.float32, 1.0)
    sigmas = ltx2_sigmas(4, tokens=VIDEO_SHAPE.tokens)
    with torch.no_grad():
        ref = _reference_denoise_fn(reference, generation)(ref_video, ref_audio, sigmas, 1)
        counting = _CountingModel(X0Denoiser(ours))
        got = _our_guidance(generation).predict(
            counting, _ours_state(ref_video), _ours_state(ref_audio), sigmas[1], step_index=1
        )
    assert counting.batches == [4]
    for o, r, name in zip(got, ref, ("video", "audio"), strict=True):
        assert_close(o, r, f"{generation} {name}")


@pytest.mark.oracle
def test_planner_batched_equals_separate_passes(models) -> None:
    """The batched call splits back into exactly what each pass gives through our transformer on its own."""
    generation, _, ours = models
    video, audio = our_noised(22, torch.float32, 1.0)
    guidance = _our_guidance(generation)
    sigma = torch.tensor(0.8)
    model = X0Denoiser(ours)
    captured: dict[str, Any] = {}

    def keep(video_in, audio_in, perturbations):
        captured.update(video=video_in, audio=audio_in, perturbations=perturbations)
        return model(video_in, audio_in, perturbations)

    with torch.no_grad():
        guidance.predict(keep, video, audio, sigma, 0)
        batched = model(captured["video"], captured["audio"], captured["perturbations"])
        for index, sample in enumerate(captured["perturbations"].samples):
            rows = [replace(captured[k], **_rows(captured[k], index)) for k in ("video", "audio")]
            single = model(*rows, type(captured["perturbations"])((sample,)))
            for b, s, name in zip(batched, single, ("video", "audio"), strict=True):
                assert_close(b[index : index + 1], s, f"{generation} pass {index} {name}")


@pytest.mark.oracle
def test_planner_can_cap_passes_per_call(models) -> None:
    generation, _, ours = models
    video, audio = our_noised(23, torch.float32, 1.0)
    with torch.no_grad():
        batched = _our_guidance(generation).predict(X0Denoiser(ours), video, audio, torch.tensor(0.6), 0)
        counting = _CountingModel(X0Denoiser(ours))
        capped = replace(_our_guidance(generation), max_passes_per_call=3)
        got = capped.predict(counting, video, audio, torch.tensor(0.6), 0)
    assert counting.batches == [3, 1]
    for o, r, name in zip(got, batched, ("video", "audio"), strict=True):
        assert_close(o, r, f"{generation} {name}")
    with pytest.raises(ValueError, match="max_passes_per_call"):
        replace(capped, max_passes_per_call=0)


def _rows(stream: ModalityInput, index: int) -> dict[str, Any]:
    fields = ("latent", "sigma", "timesteps", "positions", "context", "attention_mask")
    return {f: getattr(stream, f)[index : index + 1] for f in fields if getattr(stream, f) is not None}


@pytest.mark.oracle
@pytest.mark.parametrize("sampler", ["euler", "gradient_estimation"])
def test_full_sampler_matches_reference(models, sampler: str) -> None:
    """Noise -> conditioning -> 3 guided steps (video guider skipping every other step) -> strip guide tokens."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils.samplers import euler_denoising_loop, gradient_estimating_euler_denoising_loop

    generation, reference, ours = models
    sigmas = ltx2_sigmas(3, tokens=VIDEO_SHAPE.tokens)
    ref_loop = euler_denoising_loop if sampler == "euler" else gradient_estimating_euler_denoising_loop
    with torch.no_grad():
        ref_video, ref_audio = reference_noised(31, torch.float32, 1.0)
        ref_denoise = _reference_denoise_fn(reference, generation, video_skip=1)
        ref_video, ref_audio = ref_loop(sigmas, ref_video, ref_audio, EulerDiffusionStep(), ref_denoise)
        tools = ref_video_tools()
        ref_pixels = tools.unpatchify(tools.clear_conditioning(ref_video)).latent

        video, audio = our_noised(31, torch.float32, 1.0)
        step = EulerStep() if sampler == "euler" else GradientEstimationStep()
        counting = _CountingModel(X0Denoiser(ours))
        guidance = _our_guidance(generation, video_skip=1)
        video, audio = denoise(counting, sigmas, video, audio, guidance=guidance, step=step)
        layout = VideoLayout(VIDEO_SHAPE, FPS)
    # Step 1 (video skipped): negative pass runs with video enabled upstream, so it gets its own call.
    assert counting.batches == [4, 3, 1, 4]
    assert_close(layout.unpatchify(layout.strip_conditioning(video).latent), ref_pixels, f"{generation} video")
    assert_close(audio.latent, ref_audio.latent, f"{generation} audio")


@pytest.mark.oracle
@pytest.mark.parametrize("guided", [False, True])
def test_planner_bf16_close_to_float32(models, guided: bool) -> None:
    """bf16 weights and latents vs float32: the single positive pass within 3e-2 relative; the guided prediction
    (cond + 6 (cond - neg) + (cond - ptb) + 2 (cond - iso) for audio) amplifies each pass's bf16 rounding by the
    guidance coefficients, so it gets 6e-2."""
    generation, _, ours = models
    video, audio = our_noised(41, torch.float32, 1.0)
    guidance = _our_guidance(generation)
    if not guided:
        guidance = Guidance(guidance.positive)
    with torch.no_grad():
        f32 = guidance.predict(X0Denoiser(ours), video, audio, torch.tensor(0.7), 0)
        bf16_model = X0Denoiser(AVTransformer(ours.config, dtype=torch.bfloat16, device="meta"))
        bf16_model.velocity_model.load_state_dict(
            {k: v.to(torch.bfloat16) for k, v in ours.state_dict().items()}, strict=True, assign=True
        )

        def to_bf16(x: Any) -> Any:
            names = ("latent", "clean_latent") if isinstance(x, LatentState) else ("video", "audio")
            return None if x is None else replace(x, **{k: getattr(x, k).to(torch.bfloat16) for k in names})

        bf16_guidance = replace(guidance, positive=to_bf16(guidance.positive), negative=to_bf16(guidance.negative))
        bf16 = bf16_guidance.predict(bf16_model, to_bf16(video), to_bf16(audio), torch.tensor(0.7), 0)
    for lo, hi, name in zip(bf16, f32, ("video", "audio"), strict=True):
        assert lo.dtype == torch.bfloat16 and torch.isfinite(lo).all()
        rel = ((lo.float() - hi).norm() / hi.norm()).item()
        assert rel < (6e-2 if guided else 3e-2), f"{generation} {name}: bf16 relative error {rel:.3e}"
