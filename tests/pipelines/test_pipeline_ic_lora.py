"""IC-LoRA: parity with ltx-pipelines 1.0.0 ``ICLoraPipeline`` (float32) with reference_downscale_factor 2: stage 1
(distilled sigmas) by the IC-LoRA transformer with the reference video at 1/2 of the stage-1 size appended, x2
upsample, stage 2 by the base transformer without the reference."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from pipeline_oracle import (
    FPS,
    assert_result_matches,
    contexts,
    ref_simple_fn,
    ref_two_stage,
    tiny_pair,
)
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import (
    GenerationRequest,
    PipelineModels,
    PromptContexts,
    ReferenceCondition,
    ic_lora,
)

WIDTH, HEIGHT, FRAMES = 128, 128, 9
DOWNSCALE = int(tc.IC_LORA_REFERENCE_DOWNSCALE_FACTOR)  # 2


@pytest.fixture(autouse=True)
def _no_cuda_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)


def _reference_video(frames: int = FRAMES + 2) -> torch.Tensor:
    """(F, 72, 96, 3) uint8 frames (more than the clip: the pipelines cap them), resized and cropped to 32 x 32."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    y, x = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 96), indexing="ij")
    channels = [0.5 + 0.4 * torch.sin(3.0 * x + 2.0 * y + 0.3 * t + p) for p in (0.0, 2.0, 4.0)]
    return (torch.stack(channels, dim=-1) * 255).round().to(torch.uint8)


def _reference_conditionings(pair, video: torch.Tensor, strength: float, attention: float, mask, monkeypatch):
    """``ICLoraPipeline._create_conditionings`` itself, reading ``video`` instead of a file."""
    from ltx_pipelines.ic_lora import ICLoraPipeline
    from ltx_pipelines.utils import media_io

    monkeypatch.setattr(media_io, "decode_video_from_file", lambda path, frame_cap, device: iter(
        [frame.unsqueeze(0) for frame in video[:frame_cap]]))  # fmt: skip
    fake = SimpleNamespace(dtype=torch.float32, device=torch.device("cpu"), reference_downscale_factor=DOWNSCALE,
                           _downsample_mask_to_latent=ICLoraPipeline._downsample_mask_to_latent)  # fmt: skip
    return ICLoraPipeline._create_conditionings(
        fake, images=[], video_conditioning=[("ref.mp4", strength)], height=HEIGHT // 2, width=WIDTH // 2,
        num_frames=FRAMES, video_encoder=pair.ref.video_encoder, conditioning_attention_strength=attention,
        conditioning_attention_mask=None if mask is None else mask[None, None],
    )  # fmt: skip


def _models(generation: str) -> PipelineModels:
    pair = tiny_pair(generation)
    return PipelineModels(**{**pair.ours.__dict__, "transformer": pair.ref.ours_ic, "refiner": pair.ours.transformer})


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("generation", "attention", "with_mask"), [(tc.LTX2, 1.0, False), (tc.LTX23, 0.6, False), (tc.LTX2, 0.8, True)]
)
@torch.no_grad()
def test_ic_lora_matches_reference(generation: str, attention: float, with_mask: bool, monkeypatch) -> None:
    from ltx_core.model.transformer import X0Model
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES

    pair = tiny_pair(generation)
    ctx = PromptContexts(contexts(generation).positive)
    video = _reference_video()
    mask = torch.linspace(0, 1, FRAMES)[:, None, None].expand(FRAMES, 64, 64).clone() if with_mask else None
    generator = torch.Generator(device="cpu").manual_seed(51)
    stage_1 = (
        ref_simple_fn(X0Model(pair.ref.ic), ctx),
        torch.Tensor(DISTILLED_SIGMA_VALUES),
        _reference_conditionings(pair, video, 0.9, attention, mask, monkeypatch),
    )
    base = X0Model(pair.ref.transformer)
    ref_latents = ref_two_stage(pair, (WIDTH, HEIGHT, FRAMES), stage_1, base, ctx, [], generator)

    reference = ReferenceCondition(video.float() / 255.0, 0.9, attention, mask)
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 51)
    result = ic_lora(_models(generation), ctx, request, [reference], downscale_factor=DOWNSCALE)
    assert result.frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert_result_matches(result, pair, ref_latents, generator, FRAMES)


@torch.no_grad()
def test_ic_lora_reference_matters_and_scale_is_checked() -> None:
    ctx = PromptContexts(contexts(tc.LTX2).positive)
    request = GenerationRequest(WIDTH, HEIGHT, FRAMES, FPS, 2)
    video = _reference_video().float() / 255.0
    no_stage_2 = PipelineModels(**{**vars(_models(tc.LTX2)), "upsampler": None, "refiner": None})
    a = ic_lora(no_stage_2, ctx, request, [ReferenceCondition(video)], DOWNSCALE, skip_stage_2=True)
    b = ic_lora(_models(tc.LTX2), ctx, request, [ReferenceCondition(1.0 - video)], DOWNSCALE, skip_stage_2=True)
    assert a.frames.shape == (FRAMES, HEIGHT // 2, WIDTH // 2, 3)
    assert not torch.allclose(a.latents.video, b.latents.video)
    with pytest.raises(ValueError, match="refiner"):
        ic_lora(no_stage_2, ctx, request, [ReferenceCondition(video)], DOWNSCALE)
    with pytest.raises(ValueError, match="downscale_factor=4"):
        ic_lora(_models(tc.LTX2), ctx, request, [ReferenceCondition(video)], 4)
