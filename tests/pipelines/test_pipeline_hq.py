"""HQ two-stage (res_2s): the sampler's step against a hand-derived second-order update on a toy field, and the
pipeline against ltx-pipelines 1.0.0's ``TI2VidTwoStagesHQPipeline`` flow (res_2s loop, float32) on both
generations' tiny models."""

from __future__ import annotations

import math

import pytest
import torch
from edit_oracle import ref_loop, ref_states
from pipeline_oracle import (
    DECODED_ATOL,
    FPS,
    LATENT_ATOL,
    contexts,
    guided,
    max_diff,
    pixel_shape,
    ref_decode,
    ref_guided_fn,
    ref_simple_fn,
    tiny_pair,
)
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import GenerationRequest, GuidedSampling, two_stage_hq
from aiprod.aiprod_core.sampling import LatentState, Res2s, StreamSteps
from aiprod.aiprod_core.sampling.samplers import res2s_coefficients

WIDTH, HEIGHT, FRAMES, STEPS = 64, 64, 9, 2


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _state(latent: torch.Tensor, mask: torch.Tensor | None = None, frozen: bool = False) -> LatentState:
    mask = torch.ones(*latent.shape[:2], 1) if mask is None else mask
    return LatentState(latent, mask, torch.zeros(1, 1, latent.shape[1], 2), torch.full_like(latent, 0.25),
                       frozen=frozen)  # fmt: skip


def _toy_x0(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A toy denoiser (velocity field v = (x - D) / sigma) that depends on both x and sigma."""
    return 0.6 * x * (1.0 - sigma) + 0.3 * torch.sin(x) + 0.2 * sigma


def test_res2s_step_is_the_hand_derived_second_order_update() -> None:
    """Without SDE noise (eta = substep_eta = 0) one step is, with h = ln(s / s'), c2 = 1/2:
    x_m = x + h a21 (D(x, s) - x), a21 = c2 (1 - e^(-c2 h)) / (c2 h) at s_m = sqrt(s s');
    x' = x + h [b1 (D(x, s) - x) + b2 (D(x_m, s_m) - x)], b2 = ((e^-h - 1 + h) / h^2) / c2, b1 = (1 - e^-h) / h - b2.
    Tokens with denoise strength 0 keep their clean value; the bong anchor correction is the identity here."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 4, generator=gen, dtype=torch.float64)
    mask = torch.tensor([1.0, 1, 1, 1, 0, 0]).view(1, 6, 1)
    sigmas = torch.tensor([0.8, 0.45, 0.0], dtype=torch.float64)
    calls: list[float] = []

    def predict(states, sigma, index):
        calls.append(float(sigma))
        video = states[0]
        x0 = _toy_x0(video.latent, float(sigma))
        return x0 * video.denoise_mask + video.clean_latent * (1 - video.denoise_mask), None

    sampler = Res2s(eta=0.0, substep_eta=0.0)
    (moved, _), x0, _ = sampler(predict, (_state(x, mask), None), sigmas, 0, None)
    s, s_next = 0.8, 0.45
    h = math.log(s / s_next)
    a21 = 0.5 * (1 - math.exp(-h / 2)) / (h / 2)
    b2 = ((math.exp(-h) - 1 + h) / h**2) / 0.5
    b1 = (1 - math.exp(-h)) / h - b2
    assert res2s_coefficients(h) == pytest.approx((a21, b1, b2), rel=1e-12)
    d1 = _toy_x0(x, s)
    x_mid = x + h * a21 * (d1 - x)
    d2 = _toy_x0(x_mid, math.sqrt(s * s_next))
    expected = x + h * (b1 * (d1 - x) + b2 * (d2 - x))
    assert calls == pytest.approx([s, math.sqrt(s * s_next)])
    assert torch.allclose(moved.latent[:, :4], expected[:, :4], rtol=0, atol=1e-12)
    assert torch.equal(moved.latent[:, 4:], torch.full_like(x[:, 4:], 0.25))  # kept tokens: the clean value
    assert torch.equal(x0[0][:, :4], d1[:, :4])


def test_res2s_is_exact_for_a_constant_prediction_and_ends_on_x0() -> None:
    """For D = x0 constant the exponential integrator solves dx/dsigma = (x - x0) / sigma exactly:
    x' = x0 + (s' / s) (x - x0); a last step to sigma 0 stops at final_sigma and returns the prediction there
    (three predictions)."""
    x = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.full_like(x, 0.7)
    calls: list[tuple[float, int]] = []

    def predict(states, sigma, index):
        calls.append((float(sigma), index))
        return target.clone(), None

    sampler = Res2s(eta=0.0, substep_eta=0.0)
    (moved, _), _, _ = sampler(predict, (_state(x), None), torch.tensor([0.9, 0.3, 0.0], dtype=torch.float64), 0,
                               None)  # fmt: skip
    assert torch.allclose(moved.latent, target + (0.3 / 0.9) * (x - target), atol=1e-12)
    (last, _), _, _ = sampler(predict, (moved, None), torch.tensor([0.9, 0.3, 0.0], dtype=torch.float64), 1, None)
    assert torch.equal(last.latent, target)
    assert [i for _, i in calls[2:]] == [1, 0, 2] and calls[-1][0] == pytest.approx(0.0011, rel=1e-6)


def test_samplers_never_move_a_frozen_stream() -> None:
    x = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(2))
    frozen = _state(x, torch.zeros(1, 4, 1), frozen=True)

    def predict(states, sigma, index):
        return states[0].latent * 0.5, states[1].latent * 0.5

    sigmas = torch.tensor([1.0, 0.5, 0.0])
    for sampler in (Res2s(), StreamSteps()):
        (video, audio), _, _ = sampler(predict, (frozen, _state(x.clone())), sigmas, 0, None)
        assert video is frozen and not torch.equal(audio.latent, x)


def _reference(generation: str, seed: int, guidance: GuidedSampling) -> tuple[torch.Tensor, torch.Tensor, object]:
    """1.0.0's HQ flow: res_2s stage 1 (schedule shifted for the half-size latent's tokens) with the guided
    denoiser, x2 upsample, res_2s stage 2 positive-only; 1.2.0 keeps stage 1's audio."""
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.model.transformer import X0Model
    from ltx_core.model.upsampler import upsample_video
    from ltx_pipelines.utils.constants import STAGE_2_DISTILLED_SIGMA_VALUES

    from aiprod.aiprod_core.pipelines.latents import empty_latents

    pair, ctx = tiny_pair(generation), contexts(generation)
    generator = torch.Generator().manual_seed(seed)
    noiser = GaussianNoiser(generator=generator)
    half = (WIDTH // 2, HEIGHT // 2)
    empty = empty_latents(*half, FRAMES, FPS).video
    sigmas = LTX2Scheduler().execute(latent=empty, steps=guidance.steps).float()
    states = ref_states(pixel_shape(*half, FRAMES), noiser, [], [], 1.0, None, None)
    video, audio = ref_loop(states, sigmas, ref_guided_fn(X0Model(pair.ref.transformer), ctx, generation), res2s=True)
    upscaled = upsample_video(latent=video[:1], video_encoder=pair.ref.video_encoder, upsampler=pair.ref.upsampler)
    distilled = torch.tensor(STAGE_2_DISTILLED_SIGMA_VALUES)
    states = ref_states(pixel_shape(WIDTH, HEIGHT, FRAMES), noiser, [], [], float(distilled[0]), upscaled, audio)
    video_2, _ = ref_loop(states, distilled, ref_simple_fn(X0Model(pair.ref.refiner), ctx), res2s=True)
    return video_2, audio, generator


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_hq_two_stage_matches_reference(generation: str) -> None:
    guidance = guided(generation, STEPS)
    ref_video, ref_audio, generator = _reference(generation, 5, guidance)
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 5)
    result = two_stage_hq(tiny_pair(generation).ours, contexts(generation), request, guidance)
    max_diff(result.latents.video, ref_video, "video latent", LATENT_ATOL)
    max_diff(result.latents.audio, ref_audio, "audio latent (stage 1's)", LATENT_ATOL)
    ref_frames, _, _ = ref_decode(tiny_pair(generation), ref_video, ref_audio, generator)
    max_diff(result.frames, ref_frames, "frames", DECODED_ATOL)
    assert result.waveform.shape[-1] == round(FRAMES / FPS * result.sample_rate)


@pytest.mark.oracle
def test_hq_defaults_are_the_reference_preset() -> None:
    from ltx_pipelines.utils.constants import LTX_2_3_HQ_PARAMS

    hq = GuidedSampling.hq_defaults()
    assert hq.steps == LTX_2_3_HQ_PARAMS.num_inference_steps == 15
    for ours, ref in ((hq.video, LTX_2_3_HQ_PARAMS.video_guider_params),
                      (hq.audio, LTX_2_3_HQ_PARAMS.audio_guider_params)):  # fmt: skip
        assert ours.rescale == ref.rescale_scale and ref.stg_scale == 0.0
        assert {type(t).__name__: t.scale for t in ours.active_terms()} == {
            "CFG": ref.cfg_scale, "ModalityIsolation": ref.modality_scale}
