"""Keyframe interpolation: parity with ltx-pipelines 1.0.0 ``KeyframeInterpolationPipeline`` (float32): every image
(frame 0 included) appended as a guiding keyframe at half size (stage 1, guided) and at full size (stage 2)."""

from __future__ import annotations

import pytest
import torch
from pipeline_oracle import (
    FPS,
    assert_result_matches,
    contexts,
    guided,
    image_u8,
    ref_guided_fn,
    ref_images,
    ref_two_stage,
    tiny_pair,
    write_png,
)
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import GenerationRequest, ImageCondition, keyframe_interpolation, two_stage

WIDTH, HEIGHT, FRAMES, STEPS = 64, 64, 9, 2


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _images(tmp_path) -> tuple[list, tuple[ImageCondition, ...]]:
    from ltx_pipelines.utils.args import ImageConditioningInput

    first, last = image_u8(5), image_u8(6, 72, 60)
    inputs = [
        ImageConditioningInput(write_png(first, tmp_path / "first.png"), 0, 1.0),
        ImageConditioningInput(write_png(last, tmp_path / "last.png"), FRAMES - 1, 0.8),
    ]
    ours = (
        ImageCondition(torch.from_numpy(first).float() / 255.0, 0, 1.0),
        ImageCondition(torch.from_numpy(last).float() / 255.0, FRAMES - 1, 0.8),
    )
    return inputs, ours


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_keyframe_interpolation_matches_reference(generation: str, tmp_path) -> None:
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.model.transformer import X0Model

    pair = tiny_pair(generation)
    ctx = contexts(generation)
    inputs, images = _images(tmp_path)
    generator = torch.Generator(device="cpu").manual_seed(41)
    stage_1 = (
        ref_guided_fn(X0Model(pair.ref.transformer), ctx, generation),
        LTX2Scheduler().execute(steps=STEPS).to(dtype=torch.float32),
        ref_images(inputs, WIDTH // 2, HEIGHT // 2, pair.ref.video_encoder, keyframes=True),
    )
    ref_latents = ref_two_stage(pair, (WIDTH, HEIGHT, FRAMES), stage_1, X0Model(pair.ref.refiner), ctx, inputs,
                                generator, keyframes=True)  # fmt: skip

    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 41, images=images)
    result = keyframe_interpolation(pair.ours, ctx, request, guided(generation, STEPS))
    assert result.frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert result.latents.video.shape[2] == 2  # guide tokens stripped: 1 + 8 / 8 latent frames
    assert_result_matches(result, pair, ref_latents, generator, FRAMES)


@torch.no_grad()
def test_keyframes_differ_from_replacing_first_frame(tmp_path) -> None:
    """Keyframe mode appends frame 0 as a guide instead of replacing latent frame 0 (two_stage's combined mode)."""
    _, images = _images(tmp_path)
    pair = tiny_pair(tc.LTX2)
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 3, images=images)
    keyframes = keyframe_interpolation(pair.ours, contexts(tc.LTX2), request, guided(tc.LTX2, STEPS))
    combined = two_stage(pair.ours, contexts(tc.LTX2), request, guided(tc.LTX2, STEPS))
    assert not torch.allclose(keyframes.latents.video, combined.latents.video)
