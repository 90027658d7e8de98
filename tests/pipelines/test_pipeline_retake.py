"""Retake: regenerate a time window of a clip. Parity with ltx-pipelines 1.0.0's ``RetakePipeline`` flow (its
``TemporalRegionMask`` on the encoded source, float32) on both generations, the defining property (latents
outside the window bit-identical, the window changed), the stated pixel / audio bound after the VAE round trip,
frozen streams, and every input checked before any model work.

The bound, measured on the tiny decoders: a decoded frame (audio sample) equals the round trip of the source,
decode(encode(source)), bit for bit once the decoder's receptive field around it holds no regenerated latent
frame: for video 7 latent frames (56 pixel frames) on each side of the window; for audio 11 latent frames
(0.44 s) before it and 37 (1.48 s) after it (the causal audio decoder reaches forward). Nearer the window the
decode mixes in the new content, and everywhere the round trip itself differs from the source by the VAE's
reconstruction error.
"""

from __future__ import annotations

import functools

import pytest
import torch
from edit_oracle import models, ref_audio_latent, ref_loop, ref_states, source
from pipeline_oracle import FPS, LATENT_ATOL, contexts, guided, max_diff, pixel_shape, ref_guided_fn, tiny_pair
from support import tiny_configs as tc

from aiprod.aiprod_core.conditioning import TemporalRegionMask
from aiprod.aiprod_core.pipelines import (
    LocalHost,
    RetakeRequest,
    decode_audio,
    decode_video,
    encode_source,
    retake,
)
from aiprod.aiprod_core.pipelines.latents import AVLatents
from aiprod.aiprod_core.pipelines.preprocess import frames_to_video
from aiprod.aiprod_core.sampling import AudioLatentShape, AudioLayout, VideoLatentShape, VideoLayout

FRAMES = 17  # 3 latent frames; the window: latent frame 1 (pixel frames 1..8)
START, END = 1 / FPS, 9 / FPS
LONG, LONG_START, LONG_END = 97, 17 / FPS, 25 / FPS  # 13 latent frames, room for the decoders' reach; latent 3
VIDEO_REACH_FRAMES = 64  # 8 latent frames: the tiny video decoders reach 7
AUDIO_REACH_BEFORE, AUDIO_REACH_AFTER = 12, 38  # audio latent frames (the tiny decoders: 11 / 37)
SEED = 3


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _request(**overrides) -> RetakeRequest:
    fields = {"source": source(FRAMES), "seed": SEED, "start_time": START, "end_time": END} | overrides
    return RetakeRequest(**fields)


@functools.cache
def _ours(generation: str, distilled: bool = False, long: bool = False):
    guidance = None if distilled else guided(generation, 2)
    request = _request(source=source(LONG), start_time=LONG_START, end_time=LONG_END) if long else _request()
    with torch.no_grad():
        return retake(models(generation), contexts(generation), request, guidance)


@functools.cache
def _source_latents(generation: str, long: bool = False) -> AVLatents:
    m = models(generation)
    with torch.no_grad():
        return encode_source(m.video_encoder, m.audio_encoder, source(LONG if long else FRAMES), LocalHost())


@functools.cache
def _reference(generation: str) -> tuple[torch.Tensor, torch.Tensor]:
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.model.transformer import X0Model
    from ltx_pipelines.retake import TemporalRegionMask as RefRegion

    from aiprod.aiprod_core.pipelines.latents import audio_latent_frames

    ref = tiny_pair(generation).ref
    clip = source(FRAMES)
    with torch.no_grad():
        video = ref.video_encoder(frames_to_video(clip.frames))
        audio = ref_audio_latent(generation, clip.audio, audio_latent_frames(FRAMES, FPS))
        noiser = GaussianNoiser(generator=torch.Generator().manual_seed(SEED))
        items = [RefRegion(start_time=START, end_time=END, fps=FPS)]
        states = ref_states(pixel_shape(64, 64, FRAMES), noiser, items, list(items), 1.0, video, audio)
        sigmas = LTX2Scheduler().execute(steps=2).float()
        return ref_loop(states, sigmas, ref_guided_fn(X0Model(ref.transformer), contexts(generation), generation))


def _window_tokens(latents: AVLatents, start: float = START, end: float = END) -> tuple[torch.Tensor, torch.Tensor]:
    """(video latent frames, audio latent frames) [start, end) regenerates, as bool masks over the time axis."""
    video = VideoLayout(VideoLatentShape.of(latents.video), FPS).positions()[0, 0]  # (T, 2) seconds
    audio = AudioLayout(AudioLatentShape.of(latents.audio)).positions()[0, 0]
    height, width = latents.video.shape[-2:]
    frames = video[:: height * width]  # one row per latent frame
    return (frames[:, 1] > start) & (frames[:, 0] < end), (audio[:, 1] > start) & (audio[:, 0] < end)


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_retake_matches_reference(generation: str) -> None:
    ref_video, ref_audio = _reference(generation)
    result = _ours(generation)
    max_diff(result.latents.video, ref_video, "video latent", LATENT_ATOL)
    max_diff(result.latents.audio, ref_audio, "audio latent", LATENT_ATOL)


@pytest.mark.parametrize(("generation", "distilled"), [(tc.LTX2, False), (tc.LTX23, False), (tc.LTX23, True)])
def test_retake_keeps_latents_outside_the_window_bit_identical(generation: str, distilled: bool) -> None:
    result, before = _ours(generation, distilled), _source_latents(generation)
    video_in, audio_in = _window_tokens(before)
    assert video_in.tolist() == [False, True, False]
    ours, src = result.latents, before
    assert torch.equal(ours.video[:, :, ~video_in], src.video[:, :, ~video_in])
    assert torch.equal(ours.audio[:, :, ~audio_in], src.audio[:, :, ~audio_in])
    assert (ours.video[:, :, video_in] - src.video[:, :, video_in]).abs().min() > 0  # every window value moved
    assert (ours.audio[:, :, audio_in] - src.audio[:, :, audio_in]).abs().mean() > 0.1


def _round_trip(generation: str, latents: AVLatents) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's latents decoded as the pipeline decodes its result: the LTX-2 decoder's noise drawn after the
    stage's two noise draws (video tokens, then audio tokens) from the run's generator."""
    m = models(generation)
    generator = torch.Generator().manual_seed(SEED)
    torch.randn((1, latents.video[0, 0].numel(), 128), generator=generator)
    torch.randn((1, latents.audio.shape[2], 128), generator=generator)
    with torch.no_grad():
        frames = decode_video(m.video_decoder, latents.video, LocalHost(), generator=generator)[0]
        waveform, _ = decode_audio(m.audio_decoder, m.vocoder, latents.audio, LocalHost(), duration=latents.duration)
    return frames, waveform[0]


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_retake_pixels_and_audio_outside_the_decoders_reach_are_the_round_trip(generation: str) -> None:
    result, latents = _ours(generation, long=True), _source_latents(generation, long=True)
    frames, waveform = _round_trip(generation, latents)
    window_frames = slice(17, 25)
    assert not torch.equal(result.frames[window_frames], frames[window_frames])
    kept = 25 + VIDEO_REACH_FRAMES  # frames 89..96
    assert torch.equal(result.frames[kept:], frames[kept:])
    round_trip_error = (frames - source(LONG).frames).abs().max().item()
    assert round_trip_error > 0  # the bound is the round trip, not the source (random tiny weights: a large one)
    per_latent = result.sample_rate // 25
    _, audio_in = _window_tokens(latents, LONG_START, LONG_END)
    first, last = int(audio_in.nonzero().min()), int(audio_in.nonzero().max())
    before = (first - AUDIO_REACH_BEFORE) * per_latent
    after = (last + AUDIO_REACH_AFTER) * per_latent
    assert before > 0 and after < waveform.shape[-1]
    assert torch.equal(result.waveform[:, :before], waveform[:, :before])
    assert torch.equal(result.waveform[:, after:], waveform[:, after:])
    assert not torch.equal(result.waveform[:, before:after], waveform[:, before:after])


@torch.no_grad()
def test_frozen_streams_are_kept_exactly_and_seen_at_sigma_zero() -> None:
    """regenerate_audio=False freezes the audio (the transformer gets sigma 0 and timestep 0 for it);
    regenerate_video=False freezes the video."""
    m, ctx = models(tc.LTX23), contexts(tc.LTX23)
    clip = source(17)
    seen: list[tuple[float, float]] = []

    def record(module, args, kwargs):
        audio = args[1] if len(args) > 1 else kwargs.get("audio")
        seen.append((float(audio.sigma.abs().max()), float(audio.timesteps.abs().max())))

    handle = m.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        kept_audio = retake(m, ctx, _request(seed=1, regenerate_audio=False))
    finally:
        handle.remove()
    encoded = encode_source(m.video_encoder, m.audio_encoder, clip, LocalHost())
    assert seen and all(s == (0.0, 0.0) for s in seen)
    assert torch.equal(kept_audio.latents.audio, encoded.audio)
    assert not torch.equal(kept_audio.latents.video, encoded.video)
    kept_video = retake(m, ctx, _request(seed=1, regenerate_video=False))
    assert torch.equal(kept_video.latents.video, encoded.video)
    assert not torch.equal(kept_video.latents.audio, encoded.audio)


@pytest.mark.oracle
@pytest.mark.parametrize("fps", [24.0, 25.0, 30000 / 1001])
def test_region_mask_matches_the_reference(fps: float) -> None:
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
    from ltx_core.tools import AudioLatentTools, VideoLatentTools
    from ltx_core.types import AudioLatentShape as RefAudioShape
    from ltx_core.types import VideoLatentShape as RefVideoShape
    from ltx_pipelines.retake import TemporalRegionMask as RefRegion

    video_shape, audio_shape = VideoLatentShape(1, 128, 7, 2, 3), AudioLatentShape(1, 8, 50, 16)
    video_layout, audio_layout = VideoLayout(video_shape, fps), AudioLayout(audio_shape)
    video_tools = VideoLatentTools(VideoLatentPatchifier(1), RefVideoShape(*video_shape), fps)
    audio_tools = AudioLatentTools(AudioPatchifier(1), RefAudioShape(*audio_shape))
    for start, end in ((0.0, 1 / fps), (9 / fps, 33 / fps), (17 / fps, 49 / fps), (0.3, 1.1)):
        for layout, tools in ((video_layout, video_tools), (audio_layout, audio_tools)):
            ours = TemporalRegionMask(start, end).apply(layout.initial_state("cpu", torch.float32), layout)
            ref = RefRegion(start, end, fps).apply_to(tools.create_initial_state("cpu", torch.float32), tools)
            assert torch.equal(ours.denoise_mask, ref.denoise_mask), (start, end)
            assert 0 < ours.denoise_mask.sum() < ours.denoise_mask.numel()


class _Untouched(torch.nn.Module):
    """A module that fails the test if any stage runs it."""

    def forward(self, *args, **kwargs):
        raise AssertionError("a model ran before the inputs were checked")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"start_time": 0.3}, "start_time=0.3: not on a latent-frame boundary"),
        ({"end_time": 0.5}, "nearest: 0.3750 (frame 9) or 0.7083 (frame 17)"),
        ({"start_time": 0.375, "end_time": 0.375}, "the window must end after it starts"),
        ({"end_time": 9.0}, "end_time=9.0: after the clip's end (0.7083 s = 17 frames at 24 fps)"),
        ({"start_time": -1.0}, "start_time=-1.0: must be a finite number in [0,"),
        ({"regenerate_video": False, "regenerate_audio": False}, "nothing to regenerate"),
        ({"source": source(16)}, "source: 16 frames, expected 8k+1"),
        ({"source": source(17, size=(64, 80))}, "source: width 80 pixels, expected a multiple of 32"),
        ({"seed": -3}, "seed=-3"),
    ],
)
def test_bad_inputs_are_refused_before_any_model_work(overrides: dict, message: str) -> None:
    from dataclasses import replace

    untouched = replace(models(tc.LTX2), transformer=_Untouched(), video_encoder=_Untouched(),
                        audio_encoder=_Untouched())  # fmt: skip
    request = _request(**overrides)
    with pytest.raises(ValueError) as info:
        retake(untouched, contexts(tc.LTX2), request, guided(tc.LTX2, 2))
    assert message in str(info.value), str(info.value)


def test_short_source_audio_is_refused() -> None:
    from aiprod.aiprod_core.pipelines import AudioClip, SourceClip

    clip = source(17)
    short = SourceClip(clip.frames, FPS, AudioClip(clip.audio.waveform[:, :10000], clip.audio.sample_rate))
    with pytest.raises(ValueError, match=r"source audio: 0.2268 s \(10000 samples at 44100 Hz\) is shorter"):
        retake(models(tc.LTX2), contexts(tc.LTX2), _request(source=short))
