"""Two-stage text/image-to-video: parity with ltx-pipelines 1.0.0 ``TI2VidTwoStagesPipeline`` (float32).

Stage 1 guided at half size with the base transformer, x2 latent upsample, stage 2 refined by the caller's
refiner (here: the base weights with a tiny LoRA fused, standing in for the distilled LoRA).
"""

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

from aiprod.aiprod_core.pipelines import GenerationRequest, ImageCondition, PipelineModels, two_stage

WIDTH, HEIGHT, FRAMES, STEPS = 64, 64, 9, 2


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _reference(generation: str, seed: int, images: list) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Generator]:
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.model.transformer import X0Model

    pair = tiny_pair(generation)
    ctx = contexts(generation)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    stage_1 = (
        ref_guided_fn(X0Model(pair.ref.transformer), ctx, generation),
        LTX2Scheduler().execute(steps=STEPS).to(dtype=torch.float32),
        ref_images(images, WIDTH // 2, HEIGHT // 2, pair.ref.video_encoder),
    )
    latents = ref_two_stage(pair, (WIDTH, HEIGHT, FRAMES), stage_1, X0Model(pair.ref.refiner), ctx, images, generator)
    return latents, generator


def _ours(generation: str, seed: int, images: tuple[ImageCondition, ...] = (), models: PipelineModels | None = None):
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, seed, images=images)
    models = tiny_pair(generation).ours if models is None else models
    with torch.no_grad():
        return two_stage(models, contexts(generation), request, guided(generation, STEPS))


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_two_stage_matches_reference(generation: str, tmp_path) -> None:
    """With a first-frame image: encoded at half size for stage 1 and at full size for stage 2."""
    from ltx_pipelines.utils.args import ImageConditioningInput

    image = image_u8(3)
    inputs = [ImageConditioningInput(write_png(image, tmp_path / "a.png"), 0, 0.9)]
    ref_latents, generator = _reference(generation, 21, inputs)
    result = _ours(generation, 21, (ImageCondition(torch.from_numpy(image).float() / 255.0, 0, 0.9),))
    assert result.frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert result.latents.video.shape[-2:] == (HEIGHT // 32, WIDTH // 32)
    assert_result_matches(result, tiny_pair(generation), ref_latents, generator, FRAMES)


@torch.no_grad()
def test_two_stage_refiner_is_used_and_seeds() -> None:
    pair = tiny_pair(tc.LTX2)
    a, b, c = _ours(tc.LTX2, 4), _ours(tc.LTX2, 4), _ours(tc.LTX2, 7)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.waveform, b.waveform)
    assert not torch.allclose(a.frames, c.frames) and not torch.allclose(a.waveform, c.waveform)
    base_refines = PipelineModels(**{**pair.ours.__dict__, "refiner": pair.ours.transformer})
    other = _ours(tc.LTX2, 4, models=base_refines)
    assert not torch.allclose(a.latents.video, other.latents.video)
