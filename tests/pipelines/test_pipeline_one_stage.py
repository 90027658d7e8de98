"""Text/image-to-video in one stage: parity with ltx-pipelines 1.0.0 ``TI2VidOneStagePipeline`` (float32)."""

from __future__ import annotations

import pytest
import torch
from pipeline_oracle import (
    FPS,
    assert_result_matches,
    contexts,
    gemma_contexts,
    guided,
    image_u8,
    max_diff,
    pixel_shape,
    ref_guided_fn,
    ref_images,
    ref_stage,
    tiny_pair,
    write_png,
)
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import GenerationRequest, ImageCondition, PromptContexts, text_to_video
from aiprod.aiprod_core.sampling import ltx2_sigmas

WIDTH, HEIGHT, FRAMES, STEPS = 64, 64, 9, 2


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _reference(
    generation: str, seed: int, images: list, ctx: PromptContexts | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Generator]:
    """TI2VidOneStagePipeline.__call__ in float32: conditionings, one guided Euler stage (generator: on to decode)."""
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.schedulers import LTX2Scheduler

    pair = tiny_pair(generation)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noiser = GaussianNoiser(generator=generator)
    conditionings = ref_images(images, WIDTH, HEIGHT, pair.ref.video_encoder)
    sigmas = LTX2Scheduler().execute(steps=STEPS).to(dtype=torch.float32)
    from ltx_core.model.transformer import X0Model

    ctx = contexts(generation) if ctx is None else ctx
    denoise_fn = ref_guided_fn(X0Model(pair.ref.transformer), ctx, generation)
    video, audio = ref_stage(pixel_shape(WIDTH, HEIGHT, FRAMES), conditionings, noiser, sigmas, denoise_fn)
    return (video.latent, audio.latent), generator


def _ours(generation: str, seed: int, images: tuple[ImageCondition, ...] = (), ctx: PromptContexts | None = None):
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, seed, images=images)
    ctx = contexts(generation) if ctx is None else ctx
    with torch.no_grad():
        return text_to_video(tiny_pair(generation).ours, ctx, request, guided(generation, STEPS))


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_text_to_video_matches_reference(generation: str) -> None:
    """Prompts injected after the Gemma backbone: our `prompt_contexts` stage vs ltx-core's embeddings processor."""
    ours_ctx, ref_ctx = gemma_contexts(generation)
    max_diff(ours_ctx.positive.video, ref_ctx.positive.video, "positive video context", 1e-5)
    max_diff(ours_ctx.negative.audio, ref_ctx.negative.audio, "negative audio context", 1e-5)
    ref_latents, generator = _reference(generation, 11, [], ref_ctx)
    result = _ours(generation, 11, ctx=ours_ctx)
    assert result.frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert result.fps == FPS
    assert_result_matches(result, tiny_pair(generation), ref_latents, generator, FRAMES)


@pytest.mark.oracle
@torch.no_grad()
def test_image_to_video_matches_reference(tmp_path) -> None:
    """A first-frame image (replacing latent frame 0) and a later keyframe, H.264 round trip at the default CRF."""
    from ltx_pipelines.utils.args import ImageConditioningInput

    generation = tc.LTX2
    first, later = image_u8(1), image_u8(2, 80, 40)
    inputs = [
        ImageConditioningInput(write_png(first, tmp_path / "a.png"), 0, 1.0),
        ImageConditioningInput(write_png(later, tmp_path / "b.png"), 8, 0.7),
    ]
    ref_latents, generator = _reference(generation, 12, inputs)
    images = (
        ImageCondition(torch.from_numpy(first).float() / 255.0, 0, 1.0),
        ImageCondition(torch.from_numpy(later), 8, 0.7),
    )
    result = _ours(generation, 12, images)
    assert_result_matches(result, tiny_pair(generation), ref_latents, generator, FRAMES)


@torch.no_grad()
def test_same_seed_is_bit_identical_and_seeds_differ() -> None:
    a, b, c = _ours(tc.LTX2, 5), _ours(tc.LTX2, 5), _ours(tc.LTX2, 6)
    for name in ("frames", "waveform"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert not torch.allclose(getattr(a, name), getattr(c, name)), name
    assert torch.equal(a.latents.video, b.latents.video)
    assert ltx2_sigmas(STEPS).shape == (STEPS + 1,)
