"""Audio-to-video, two stages: parity with ltx-pipelines 1.0.0's ``A2VidPipelineTwoStage`` flow (float32; the
frozen audio seen at sigma 0, ltx-pipelines 1.2.0's rule) on both generations; the output audio is the input
waveform, sample-exact; the audio latent is never denoised; every input checked before any model work."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch
from edit_oracle import FrozenAudioSigma, models, ref_audio_latent, ref_loop, ref_states, tone
from pipeline_oracle import (
    FPS,
    LATENT_ATOL,
    contexts,
    guided,
    max_diff,
    pixel_shape,
    reference_guider_params,
    tiny_pair,
)
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import (
    AudioClip,
    GenerationRequest,
    LocalHost,
    audio_to_video,
    encode_audio,
)
from aiprod.aiprod_core.pipelines.latents import audio_latent_frames

WIDTH, HEIGHT, FRAMES, STEPS, SEED = 64, 64, 9, 2, 11
START = 0.25  # seconds into the track


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _track(channels: int = 2, rate: int = 44100) -> AudioClip:
    return tone(1.0, rate, channels, seed=channels)


@functools.cache
def _ours(generation: str, channels: int = 2, rate: int = 44100):
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, SEED)
    with torch.no_grad():
        return audio_to_video(models(generation), contexts(generation), request, _track(channels, rate),
                              guided(generation, STEPS), start_time=START)  # fmt: skip


def _reference(generation: str) -> torch.Tensor:
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.model.transformer import X0Model
    from ltx_core.model.upsampler import upsample_video
    from ltx_pipelines.utils.constants import STAGE_2_DISTILLED_SIGMA_VALUES
    from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func, simple_denoising_func

    ref, ctx = tiny_pair(generation).ref, contexts(generation)
    clip = _track().cut(START, FRAMES / FPS)
    audio = ref_audio_latent(generation, clip, audio_latent_frames(FRAMES, FPS))
    noiser = GaussianNoiser(generator=torch.Generator().manual_seed(SEED))

    def frozen_audio(states):
        video, video_tools, audio_state, audio_tools = states
        audio_state = replace(audio_state, denoise_mask=torch.zeros_like(audio_state.denoise_mask))
        return video, video_tools, audio_state, audio_tools

    video_params, _ = reference_guider_params(generation)
    stage_1 = multi_modal_guider_denoising_func(
        video_guider=MultiModalGuider(params=video_params, negative_context=ctx.negative.video),
        audio_guider=MultiModalGuider(params=MultiModalGuiderParams()),
        v_context=ctx.positive.video, a_context=ctx.positive.audio,
        transformer=X0Model(FrozenAudioSigma(ref.transformer)),
    )  # fmt: skip
    states = frozen_audio(ref_states(pixel_shape(WIDTH // 2, HEIGHT // 2, FRAMES), noiser, [], [], (1.0, 0.0),
                                     None, audio))  # fmt: skip
    video, _ = ref_loop(states, LTX2Scheduler().execute(steps=STEPS).float(), stage_1)
    upscaled = upsample_video(latent=video[:1], video_encoder=ref.video_encoder, upsampler=ref.upsampler)
    distilled = torch.tensor(STAGE_2_DISTILLED_SIGMA_VALUES)
    states = frozen_audio(ref_states(pixel_shape(WIDTH, HEIGHT, FRAMES), noiser, [], [], (float(distilled[0]), 0.0),
                                     upscaled, audio))  # fmt: skip
    stage_2 = simple_denoising_func(video_context=ctx.positive.video, audio_context=ctx.positive.audio,
                                    transformer=X0Model(FrozenAudioSigma(ref.refiner)))  # fmt: skip
    return ref_loop(states, distilled, stage_2)[0]


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_audio_to_video_matches_reference(generation: str) -> None:
    result = _ours(generation)
    max_diff(result.latents.video, _reference(generation), "video latent", LATENT_ATOL)
    assert result.frames.shape == (FRAMES, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize(("generation", "channels", "rate"), [(tc.LTX2, 2, 44100), (tc.LTX23, 2, 44100),
                                                              (tc.LTX23, 1, 22050)])  # fmt: skip
@torch.no_grad()
def test_output_audio_is_the_input_waveform_and_its_latent_is_never_denoised(generation: str, channels: int,
                                                                              rate: int) -> None:  # fmt: skip
    result = _ours(generation, channels, rate)
    track = _track(channels, rate)
    first, count = round(START * rate), round(FRAMES / FPS * rate)
    assert result.sample_rate == rate
    assert torch.equal(result.waveform, track.waveform[:, first : first + count])  # sample-exact, not decoded
    m = models(generation)
    encoded = encode_audio(m.audio_encoder, track.cut(START, FRAMES / FPS), LocalHost(),
                           audio_latent_frames(FRAMES, FPS))  # fmt: skip
    assert torch.equal(result.latents.audio, encoded)


@torch.no_grad()
def test_the_transformer_sees_the_audio_clean_at_sigma_zero() -> None:
    m, seen = models(tc.LTX23), []

    def record(module, args, kwargs):
        audio = args[1]
        seen.append((float(audio.sigma.abs().max()), float(audio.timesteps.abs().max())))

    handles = [module.register_forward_pre_hook(record, with_kwargs=True) for module in (m.transformer, m.refiner)]
    try:
        audio_to_video(m, contexts(tc.LTX23), GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 1), _track(),
                       guided(tc.LTX23, STEPS))  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) == STEPS + 3 and all(s == (0.0, 0.0) for s in seen)


class _Untouched(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("a model ran before the inputs were checked")


@pytest.mark.parametrize(
    ("audio", "start", "max_duration", "message"),
    [
        (tone(0.3), 0.0, 0.0, "audio: 0.3000 s after start_time=0.0 (of 0.3000 s at 44100 Hz) is shorter than the "
         "clip's 0.3750 s"),
        (tone(1.0), 0.9, 0.0, "audio: 0.1000 s after start_time=0.9"),
        (tone(1.0), 1.5, 0.0, "start_time=1.5: at or after the audio's end (1.0000 s)"),
        (tone(1.0), 0.0, 0.2, "max_duration=0.2: shorter than the clip (0.3750 s)"),
        (AudioClip(torch.zeros(3, 44100), 44100), 0.0, 0.0, "audio: waveform of shape (3, 44100), expected (C, S)"),
        (AudioClip(torch.full((2, 44100), float("nan")), 44100), 0.0, 0.0, "NaN or infinite"),
        (AudioClip(torch.zeros(2, 44100), 0), 0.0, 0.0, "sample_rate=0"),
        (tone(1.0), -1.0, 0.0, "start_time=-1.0"),
    ],
)
def test_bad_audio_is_refused_before_any_model_work(audio: AudioClip, start: float, max_duration: float,
                                                    message: str) -> None:  # fmt: skip
    untouched = replace(models(tc.LTX2), transformer=_Untouched(), audio_encoder=_Untouched(),
                        video_encoder=_Untouched())  # fmt: skip
    with pytest.raises(ValueError) as info:
        audio_to_video(untouched, contexts(tc.LTX2), GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 1), audio,
                       guided(tc.LTX2, STEPS), start_time=start, max_duration=max_duration)  # fmt: skip
    assert message in str(info.value), str(info.value)
