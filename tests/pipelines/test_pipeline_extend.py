"""Video extension: continue a clip by N frames. The source frames and audio come back bit for bit, the audio
continues without a gap (the generated tail starts at the next sample of the canvas' own timeline), the
context's latents are kept exactly while the continuation is generated, on both generations; the canvas'
conditioning equals diffusers 0.42.1's first-frames video condition (``LTX2ConditionPipeline``); inputs are
checked before any model work."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch
import torchaudio
from edit_oracle import models, source
from pipeline_oracle import FPS, contexts, guided
from support import tiny_configs as tc

from aiprod.aiprod_core.conditioning import TemporalRegionMask
from aiprod.aiprod_core.pipelines import (
    ExtendRequest,
    LocalHost,
    decode_audio,
    encode_audio,
    encode_frames,
    extend,
)
from aiprod.aiprod_core.pipelines.latents import audio_latent_frames
from aiprod.aiprod_core.sampling import GaussianNoiser, VideoLatentShape, VideoLayout

SOURCE, CONTEXT, EXTEND, SEED = 17, 9, 16, 6  # canvas: 9 + 16 = 25 frames (4 latent frames, the first 2 kept)


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _request(**overrides) -> ExtendRequest:
    fields = {"source": source(SOURCE), "seed": SEED, "extend_frames": EXTEND, "context_frames": CONTEXT}
    return ExtendRequest(**(fields | overrides))


@functools.cache
def _ours(generation: str, channels: int = 2, audio: bool = True, distilled: bool = False):
    request = _request(source=source(SOURCE, audio=audio, channels=channels))
    with torch.no_grad():
        return extend(models(generation), contexts(generation), request, None if distilled else guided(generation, 2))


@pytest.mark.parametrize(("generation", "distilled"), [(tc.LTX2, False), (tc.LTX23, False), (tc.LTX23, True)])
@torch.no_grad()
def test_extension_keeps_the_source_and_continues_its_audio_without_a_gap(generation: str, distilled: bool) -> None:
    clip, result = source(SOURCE), _ours(generation, distilled=distilled)
    total = SOURCE + EXTEND
    assert result.frames.shape == (total, 64, 64, 3)
    assert torch.equal(result.frames[:SOURCE], clip.frames)  # the source frames, untouched
    rate = clip.audio.sample_rate
    assert result.sample_rate == rate and result.waveform.shape == (2, round(total / FPS * rate))
    head = round(SOURCE / FPS * rate)
    assert torch.equal(result.waveform[:, :head], clip.audio.waveform[:, :head])  # the source audio, untouched
    # the tail is the canvas' own decode from the context's end on, resampled: no gap, no overlap
    m = models(generation)
    canvas, vocoder_rate = decode_audio(m.audio_decoder, m.vocoder, result.latents.audio, LocalHost(),
                                        duration=result.latents.duration)  # fmt: skip
    tail = torchaudio.functional.resample(canvas[0, :, round(CONTEXT / FPS * vocoder_rate):], vocoder_rate, rate)
    count = result.waveform.shape[-1] - head
    assert torch.allclose(result.waveform[:, head:], tail[:, :count], atol=1e-6, rtol=0)
    assert result.waveform[:, head : head + 64].abs().max() > 1e-4  # sound right after the join


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_extension_keeps_the_context_latents_and_generates_the_rest(generation: str) -> None:
    m, clip, result = models(generation), source(SOURCE), _ours(generation)
    context = encode_frames(m.video_encoder, clip.frames[SOURCE - CONTEXT :], LocalHost())  # 2 latent frames
    assert result.latents.video.shape[2] == 4
    assert torch.equal(result.latents.video[:, :, :2], context)
    assert (result.latents.video[:, :, 2:]).abs().mean() > 0.1  # generated, not the zeros it started from
    track = clip.audio.cut((SOURCE - CONTEXT) / FPS, CONTEXT / FPS)
    kept = int((result.latents.audio_layout().positions()[0, 0, :, 1] <= CONTEXT / FPS).sum())
    assert kept == 10 > audio_latent_frames(CONTEXT, FPS)  # every token ending by the context's end: 10, not 9
    audio = encode_audio(m.audio_encoder, track, LocalHost(), kept)  # the context's track covers all of them
    assert torch.equal(result.latents.audio[:, :, :kept], audio)
    assert result.latents.audio[:, :, kept:].abs().mean() > 0.1  # generated, not the zeros it started from


@torch.no_grad()
def test_mono_and_silent_sources() -> None:
    mono = _ours(tc.LTX23, channels=1)
    clip = source(SOURCE, channels=1)
    head = round(SOURCE / FPS * clip.audio.sample_rate)
    assert mono.waveform.shape[0] == 1 and torch.equal(mono.waveform[:, :head], clip.audio.waveform[:, :head])
    silent = _ours(tc.LTX23, audio=False)
    rate = silent.sample_rate  # the vocoder's: there is no source rate
    head = round(SOURCE / FPS * rate)
    assert silent.waveform.shape == (2, round((SOURCE + EXTEND) / FPS * rate))
    assert (silent.waveform[:, :head] == 0).all() and silent.waveform[:, head:].abs().max() > 1e-4


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_canvas_conditioning_matches_diffusers_first_frames_condition(generation: str) -> None:
    """The context kept by the region mask is diffusers' video condition at latent index 0 with strength 1:
    denoise strength = 1 - its conditioning mask, the same clean values, the same noised latents."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2ConditionPipeline

    m = models(generation)
    context = encode_frames(m.video_encoder, source(SOURCE).frames[SOURCE - CONTEXT :], LocalHost())
    shape = VideoLatentShape(1, 128, 4, *context.shape[-2:])
    canvas = torch.nn.functional.pad(context, (0, 0, 0, 0, 0, 2))
    layout = VideoLayout(shape, FPS)
    state = TemporalRegionMask(CONTEXT / FPS, float("inf")).apply(layout.initial_state("cpu", torch.float32, canvas),
                                                                    layout)  # fmt: skip
    noised = GaussianNoiser(torch.Generator().manual_seed(1))(state, 1.0)
    noise = torch.randn(state.latent.shape, generator=torch.Generator().manual_seed(1))

    packed = LTX2ConditionPipeline._pack_latents(torch.zeros(shape))
    mask = LTX2ConditionPipeline._pack_latents(torch.zeros(1, 1, *shape[2:]))
    condition = LTX2ConditionPipeline._pack_latents(context)
    latents, conditioning, clean = LTX2ConditionPipeline.apply_first_frame_conditioning(
        None, packed, mask, [condition], [1.0], [0], shape.height, shape.width
    )
    scaled = (1.0 - conditioning) * 1.0  # diffusers' prepare_latents: noise to noise_scale 1
    assert torch.equal(state.denoise_mask, 1.0 - conditioning)
    kept = conditioning[0, :, 0] == 1
    assert kept.sum() == condition.shape[1]
    assert torch.equal(state.clean_latent[:, kept], clean[:, kept])
    assert torch.equal(noised.latent, noise * scaled + latents * (1 - scaled))


class _Untouched(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("a model ran before the inputs were checked")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"extend_frames": 12}, "extend_frames=12: must be a multiple of 8"),
        ({"extend_frames": 0}, "extend_frames=0"),
        ({"context_frames": 25}, "context_frames=25: more than the source's 17 frames"),
        ({"context_frames": 8}, "context_frames=8: must be 8k+1"),
        ({"source": source(18)}, "source: 18 frames, expected 8k+1"),
    ],
)
def test_bad_inputs_are_refused_before_any_model_work(overrides: dict, message: str) -> None:
    untouched = replace(models(tc.LTX2), transformer=_Untouched(), video_encoder=_Untouched(),
                        audio_encoder=_Untouched())  # fmt: skip
    with pytest.raises(ValueError) as info:
        extend(untouched, contexts(tc.LTX2), _request(**overrides), guided(tc.LTX2, 2))
    assert message in str(info.value), str(info.value)
