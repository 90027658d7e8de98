"""DFR (LTX-2.5 generated keyframe slots): the canvas / tile layout and the keyframe-slot conditioning against
diffusers 0.42.1 (``dfr_layout``, ``LTX2DFRPipeline.prepare_latents``), and the pipeline on a tiny LTX-2.5
transformer: the output frame count (frames - 1) x 2 ** rounds + 1 for 0 / 1 / 2 temporal rounds, the keyframe
slots marked and placed where the layout says in every transformer call, the final keyframes at the layout's
positions, and every refusal before any model work."""

from __future__ import annotations

import functools

import pytest
import torch
from pipeline_oracle import contexts, diffusers_dfr_layout, tiny_25_transformer, tiny_pair
from support import tiny_configs as tc

from aiprod.aiprod_core.conditioning import GeneratedKeyframeSlots, PinnedKeyframe, ReferenceVideo, mark_first_frame
from aiprod.aiprod_core.conditioning.items import apply_conditionings
from aiprod.aiprod_core.pipelines import GenerationRequest, PipelineModels, PromptContexts
from aiprod.aiprod_core.pipelines.dfr import dfr, dfr_output_frames
from aiprod.aiprod_core.pipelines.dfr_layout import resolve_canvas, temporal_tiles
from aiprod.aiprod_core.sampling.patchify import VideoLayout
from aiprod.aiprod_core.sampling.state import VideoLatentShape
from aiprod.aiprod_core.transformer import AVTransformer
from aiprod.aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig

FPS = 24.0
SIZE = 128  # half size 64: a 2 x 2 latent (the upsampler's group norms need more than one cell)


# ---------------------------------------------------------------------------------------------- layout vs diffusers


@pytest.mark.parametrize("frames", range(9, 250, 8))
def test_canvas_matches_diffusers(frames: int) -> None:
    from diffusers.pipelines.ltx2 import dfr_layout as ref

    padded, segment, positions = ref.resolve_canvas(frames)
    assert tuple(resolve_canvas(frames)) == (padded, segment, tuple(positions))


@pytest.mark.parametrize("frames", [9, 25, 33, 57, 97, 121, 161, 241])
@pytest.mark.parametrize("rounds", [1, 2])
def test_temporal_tiles_match_diffusers(frames: int, rounds: int) -> None:
    """The tiles of each round (seams carried and doubled as the pipeline does) equal diffusers' plan."""
    from diffusers.pipelines.ltx2 import dfr_layout as ref

    canvas = resolve_canvas(frames)
    seams, count = list(canvas.slots), canvas.frames
    for index in range(1, rounds + 1):
        count = 2 * (count - 1) + 1
        seams = [2 * s for s in seams]
        ours = temporal_tiles(seams, count, 2**index)
        theirs = ref.temporal_tile_plan(seams, count, 2**index)
        assert len(ours) == len(theirs)
        for tile, expected in zip(ours, theirs, strict=True):
            assert (tile.interval.start, tile.interval.end, tile.interval.run_up) == (
                expected.interval.start, expected.interval.end, expected.interval.left_ramp)
            assert (tile.pixel_start, tile.pixel_end, tile.anchors, tile.slots) == (
                expected.pixel_start, expected.pixel_end, expected.anchors, expected.slots)
        seams = sorted({*seams, *(s for tile in ours for s in tile.slots)})


def test_canvas_refuses_bad_frames() -> None:
    for bad in (1, 8, 10):
        with pytest.raises(ValueError, match=f"frames={bad}"):
            resolve_canvas(bad)


# ---------------------------------------------------------------------- conditioning vs diffusers' prepare_latents


def _diffusers_layout(base: torch.Tensor, anchor: tuple[int, torch.Tensor], slots: list[int],
                      initial: torch.Tensor, reference: torch.Tensor, frames: int, fps: float):  # fmt: skip
    """diffusers' ``prepare_latents`` on already-normalised latents, noise scale 0 (so the result is the layout),
    with its own rotary coordinate builder."""
    return diffusers_dfr_layout(base, frames, fps, condition_latents=[],
                                keyframe_latents=[(anchor[0], anchor[1], 0.95)], slot_frame_indices=slots,
                                slot_initial_latents=initial, reference_latents=reference,
                                reference_downscale_factor=2)


def test_slot_conditioning_matches_diffusers() -> None:
    """Base | pinned keyframe | generated slots | IC-LoRA reference, as diffusers lays DFR's sequence out: the
    same latents, clean values, denoise strengths (1 - its conditioning mask), keyframe marker (first latent frame
    and slots only) and positions (slots and pinned keyframes span one pixel frame)."""
    gen = torch.Generator().manual_seed(3)
    frames, fps = 49, 60.0
    base = torch.randn(1, 128, 7, 2, 3, generator=gen)
    anchor = torch.randn(1, 128, 1, 2, 3, generator=gen)
    initial = torch.randn(1, 128, 2, 2, 3, generator=gen)
    reference = torch.randn(1, 128, 7, 1, 2, generator=gen)  # half size, rounded down like a downscaled reference
    latents, mask, clean, coords, marker, slot_slice = _diffusers_layout(base, (24, anchor), [12, 36], initial,
                                                                         reference, frames, fps)  # fmt: skip

    layout = VideoLayout(VideoLatentShape.of(base), fps)
    state = mark_first_frame(layout.initial_state("cpu", torch.float32, base), layout)  # as `sample` does on 2.5
    state = apply_conditionings(state, [PinnedKeyframe(anchor, 24, 0.95), GeneratedKeyframeSlots((12, 36), initial),
                                        ReferenceVideo(reference, 2, 1.0)], layout)  # fmt: skip
    assert state.tokens == latents.shape[1] and slot_slice == slice(42 + 6, 42 + 6 + 12)
    # Pinned tokens: diffusers keeps a zero placeholder (so at noise scale 0 it holds 0.95 x content); ltx-core's
    # keyframe items put the content itself in the latent and the noiser lerps from it (the Lightricks fact wins;
    # the two agree at noise scale 1). Every other token is identical.
    pinned = slice(42, 48)
    torch.testing.assert_close(latents[:, pinned], 0.95 * clean[:, pinned], rtol=1e-6, atol=1e-6)
    expected = latents.clone()
    expected[:, pinned] = clean[:, pinned]
    torch.testing.assert_close(state.latent, expected, rtol=0, atol=0)
    held = mask[0, :, 0] > 0  # clean values only matter where a token is (partly) kept
    assert held.sum() == 6 + 14
    torch.testing.assert_close(state.clean_latent[:, held], clean[:, held], rtol=0, atol=0)
    torch.testing.assert_close(state.denoise_mask, 1 - mask, rtol=0, atol=1e-7)
    torch.testing.assert_close(state.keyframes_mask, marker, rtol=0, atol=0)
    torch.testing.assert_close(state.positions.float(), coords, rtol=1e-6, atol=1e-6)


def test_slots_refuse_bad_input() -> None:
    layout = VideoLayout(VideoLatentShape(1, 128, 4, 2, 2), FPS)
    state = layout.initial_state("cpu", torch.float32)
    with pytest.raises(ValueError, match="outside the target's 25 frames"):
        GeneratedKeyframeSlots((25,)).apply(state, layout)
    with pytest.raises(ValueError, match="strictly increasing"):
        GeneratedKeyframeSlots((16, 8))
    with pytest.raises(ValueError, match="expected \\(B, C, 2, H, W\\)"):
        GeneratedKeyframeSlots((8, 16), torch.zeros(1, 128, 1, 2, 2))


# ---------------------------------------------------------------------------------------- the pipeline, tiny 2.5


def _temporal_upsampler() -> LatentUpsampler:
    config = {**tc.upsampler_config(2.0), "spatial_upsample": False, "temporal_upsample": True}
    model = LatentUpsampler(LatentUpsamplerConfig.from_metadata(config))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=gen) * 0.05)
    return model.eval()


class _Spy(torch.nn.Module):
    """The transformer, recording each call's video keyframe marker and positions."""

    def __init__(self, model: AVTransformer) -> None:
        super().__init__()
        self.model, self.calls = model, []
        self.config = model.config

    def forward(self, video, audio, perturbations=None):
        self.calls.append((video.keyframes_mask, video.positions, video.latent.shape[1]))
        return self.model(video, audio, perturbations)


@functools.cache
def _models() -> PipelineModels:
    base = tiny_pair(tc.LTX23).ours
    return PipelineModels(**{**base.__dict__, "transformer": tiny_25_transformer(), "refiner": None})


def _contexts() -> PromptContexts:
    return PromptContexts(contexts(tc.LTX23).positive)


@pytest.mark.parametrize(("frames", "rounds"), [(17, 0), (25, 1), (17, 1), (25, 2)])
@torch.no_grad()
def test_dfr_frame_count_and_keyframes(frames: int, rounds: int) -> None:
    spy = _Spy(_models().transformer)
    models = PipelineModels(**{**_models().__dict__, "transformer": spy})
    upsampler = _temporal_upsampler() if rounds else None
    result = dfr(models, _contexts(), GenerationRequest(SIZE, SIZE, frames, FPS, 7), temporal_rounds=rounds,
                 temporal_upsampler=upsampler, generation="2.5.0")  # fmt: skip

    expected = dfr_output_frames(frames, rounds)
    assert expected == (frames - 1) * 2**rounds + 1
    assert tuple(result.frames.shape) == (expected, SIZE, SIZE, 3)
    assert result.fps == FPS * 2**rounds
    assert result.latents.video.shape[2] == (expected - 1) // 8 + 1
    assert result.waveform.shape[-1] == round(expected / result.fps * result.sample_rate)
    assert torch.isfinite(result.frames).all()

    # Stage 1 (the first call): the canvas' slots, marked with the first latent frame, one pixel frame each.
    canvas = resolve_canvas(frames)
    marker, positions, tokens = spy.calls[0]
    per_frame = 4  # 64 x 64 pixels at half size: 2 x 2 latent cells per frame
    base_tokens = ((canvas.frames - 1) // 8 + 1) * per_frame
    assert tokens == base_tokens + len(canvas.slots) * per_frame
    expected_marker = torch.zeros(tokens)
    expected_marker[:per_frame] = 1
    expected_marker[base_tokens:] = 1
    torch.testing.assert_close(marker[0, :, 0], expected_marker)
    slot_times = positions[0, 0, base_tokens:].float()
    torch.testing.assert_close(slot_times, torch.tensor([[p / FPS, (p + 1) / FPS] for p in canvas.slots
                                                         for _ in range(per_frame)]))

    # The keyframes that survive are exactly the layout's, inside the clip, and hold generated content.
    seams, count = set(canvas.slots), canvas.frames
    for index in range(1, rounds + 1):
        count = 2 * (count - 1) + 1
        seams = {2 * s for s in seams}
        seams |= {s for tile in temporal_tiles(sorted(seams), count, 2**index) for s in tile.slots}
    assert sorted(result.keyframes) == sorted(p for p in seams if p < expected)
    for latent in result.keyframes.values():
        assert latent.shape == (1, 128, 1, 4, 4) and latent.abs().sum() > 0


@torch.no_grad()
def test_dfr_temporal_round_pins_the_carried_keyframes() -> None:
    """Round 1 of a 25-frame request: one tile; the carried slot (pixel 24, now 48) is pinned as a given,
    unmarked one-frame keyframe and a new slot is generated at 24, marked."""
    spy = _Spy(_models().transformer)
    models = PipelineModels(**{**_models().__dict__, "transformer": spy})
    dfr(models, _contexts(), GenerationRequest(SIZE, SIZE, 25, FPS, 7), temporal_rounds=1,
        temporal_upsampler=_temporal_upsampler())  # fmt: skip
    marker, positions, tokens = spy.calls[-1]  # the temporal round's last step (60 fps positions)
    base = 7 * 16  # 49 frames -> 7 latent frames of 4 x 4
    assert tokens == base + 16 + 16
    times = positions[0, 0].float()
    torch.testing.assert_close(times[base : base + 16], torch.tensor([[48 / 60, 49 / 60]] * 16))
    torch.testing.assert_close(times[base + 16 :], torch.tensor([[24 / 60, 25 / 60]] * 16))
    assert marker[0, :16, 0].tolist() == [1] * 16 and marker[0, 16 : base + 16, 0].sum() == 0
    assert marker[0, base + 16 :, 0].tolist() == [1] * 16


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames": 20}, "frames=20"),
        ({"frames": 1}, "frames=1"),
        ({"width": 96}, "width=96"),
        ({"rounds": 3}, "temporal_rounds=3, expected one of \\[0, 1, 2\\]"),
        ({"rounds": 1, "upsampler": None}, "temporal_upsampler=None: temporal_rounds=1"),
        ({"rounds": 1, "upsampler": "spatial"}, "a spatial upscaler was given"),
        ({"generation": "2.3.0"}, "generation='2.3.0' \\(LTX-2.3\\); DFR needs an LTX-2.5 checkpoint"),
        ({"ltx23_model": True}, "use_keyframes_abs_pos_embedding=False"),
    ],
)
def test_dfr_refuses_before_model_work(change: dict, message: str) -> None:
    spy = _Spy(tiny_pair(tc.LTX23).ours.transformer if change.get("ltx23_model") else _models().transformer)
    models = PipelineModels(**{**_models().__dict__, "transformer": spy})
    upsampler = change.get("upsampler", _temporal_upsampler())
    if upsampler == "spatial":
        upsampler = models.upsampler
    request = GenerationRequest(change.get("width", SIZE), SIZE, change.get("frames", 25), FPS, 7)
    with pytest.raises(ValueError, match=message):
        dfr(models, _contexts(), request, temporal_rounds=change.get("rounds", 0), temporal_upsampler=upsampler,
            generation=change.get("generation"))  # fmt: skip
    assert spy.calls == []
