"""Distilled two-stage: parity with ltx-pipelines 1.0.0 ``DistilledPipeline`` (float32): 8 fixed steps at half size,
x2 upsample, 3 fixed steps, one transformer, positive prompt only."""

from __future__ import annotations

import pytest
import torch
from pipeline_oracle import (
    FPS,
    assert_result_matches,
    contexts,
    image_u8,
    ref_images,
    ref_simple_fn,
    ref_two_stage,
    tiny_pair,
    write_png,
)
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import GenerationRequest, ImageCondition, PipelineModels, PromptContexts, distilled

WIDTH, HEIGHT, FRAMES = 64, 64, 9


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _models(generation: str) -> PipelineModels:
    """The distilled checkpoint refines itself: no separate refiner."""
    return PipelineModels(**{**tiny_pair(generation).ours.__dict__, "refiner": None})


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_distilled_matches_reference(generation: str, tmp_path) -> None:
    from ltx_core.model.transformer import X0Model
    from ltx_pipelines.utils.args import ImageConditioningInput
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES

    pair = tiny_pair(generation)
    ctx = contexts(generation)
    image = image_u8(4, 64, 64)
    inputs = [ImageConditioningInput(write_png(image, tmp_path / "a.png"), 0, 1.0)]
    generator = torch.Generator(device="cpu").manual_seed(31)
    model = X0Model(pair.ref.transformer)
    stage_1 = (
        ref_simple_fn(model, ctx),
        torch.Tensor(DISTILLED_SIGMA_VALUES),
        ref_images(inputs, WIDTH // 2, HEIGHT // 2, pair.ref.video_encoder),
    )
    ref_latents = ref_two_stage(pair, (WIDTH, HEIGHT, FRAMES), stage_1, model, ctx, inputs, generator)

    positive_only = PromptContexts(ctx.positive)
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 31, images=(ImageCondition(torch.from_numpy(image)),))
    steps: list[int] = []
    request = GenerationRequest(**{**request.__dict__, "callback": lambda report: steps.append(report.index)})
    result = distilled(_models(generation), positive_only, request)
    assert steps == [*range(8), *range(3)]  # 8 distilled steps, then 3 refinement steps
    assert_result_matches(result, pair, ref_latents, generator, FRAMES)


@torch.no_grad()
def test_distilled_seeds() -> None:
    ctx = PromptContexts(contexts(tc.LTX23).positive)
    runs = [distilled(_models(tc.LTX23), ctx, GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0].frames, runs[1].frames) and torch.equal(runs[0].waveform, runs[1].waveform)
    assert not torch.allclose(runs[0].frames, runs[2].frames)
