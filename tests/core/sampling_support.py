"""Helpers shared by the sampling oracle tests (test_sampling.py, test_sampling_planner.py): the latent shapes,
the tolerance check, the reference latent tools and the seeded noised (conditioned) video and audio states, ours and
ltx-core's."""

from __future__ import annotations

from typing import Any

import torch

from aiprod.aiprod_core.conditioning import ImageAtLatentIndex, Keyframe, apply_conditionings
from aiprod.aiprod_core.sampling import (
    AudioLatentShape,
    AudioLayout,
    GaussianNoiser,
    LatentState,
    VideoLatentShape,
    VideoLayout,
)

FPS = 24.0
VIDEO_SHAPE = VideoLatentShape(1, 128, 3, 2, 3)  # 18 generated video tokens
AUDIO_SHAPE = AudioLatentShape(1, 8, 5, 16)  # 5 audio tokens of 128 channels


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    """max|ours - ref| <= 1e-5 max(1, max|ref|); returns the difference."""
    assert ours.shape == ref.shape, f"{what}: {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(ref).all(), what
    diff = (ours.double() - ref.double()).abs().max().item()
    bound = 1e-5 * max(1.0, ref.abs().max().item())
    assert diff <= bound, f"{what}: max|ours - ref| = {diff:.3e} > {bound:.3e}"
    return diff


def ref_video_tools(shape: VideoLatentShape = VIDEO_SHAPE, fps: float = FPS, causal: bool = True) -> Any:
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.tools import VideoLatentTools
    from ltx_core.types import VideoLatentShape as RefShape

    return VideoLatentTools(VideoLatentPatchifier(patch_size=1), RefShape(*shape), fps, causal_fix=causal)


def ref_audio_tools(shape: AudioLatentShape = AUDIO_SHAPE) -> Any:
    from ltx_core.components.patchifiers import AudioPatchifier
    from ltx_core.tools import AudioLatentTools
    from ltx_core.types import AudioLatentShape as RefShape

    return AudioLatentTools(AudioPatchifier(patch_size=1), RefShape(*shape))


def _conditionings(dtype: torch.dtype, seed: int = 3) -> tuple[list[Any], list[Any]]:
    """(ours, reference): the first latent frame replaced (strength 0.8) + a keyframe at pixel frame 16."""
    from ltx_core.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex

    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 128, 1, VIDEO_SHAPE.height, VIDEO_SHAPE.width, generator=gen).to(dtype)
    key = torch.randn(1, 128, 1, VIDEO_SHAPE.height, VIDEO_SHAPE.width, generator=gen).to(dtype)
    ours = [ImageAtLatentIndex(image, strength=0.8, latent_index=0), Keyframe(key, frame_index=16, strength=0.9)]
    ref = [
        VideoConditionByLatentIndex(latent=image, strength=0.8, latent_idx=0),
        VideoConditionByKeyframeIndex(keyframes=key, frame_idx=16, strength=0.9),
    ]
    return ours, ref


def reference_noised(seed: int, dtype: torch.dtype, noise_scale: float) -> tuple[Any, Any]:
    from ltx_core.components.noisers import GaussianNoiser as RefNoiser
    from ltx_pipelines.utils.helpers import create_noised_state

    noiser = RefNoiser(torch.Generator().manual_seed(seed))
    _, ref_items = _conditionings(dtype)
    cpu = torch.device("cpu")
    video = create_noised_state(ref_video_tools(), ref_items, noiser, dtype, cpu, noise_scale)
    audio = create_noised_state(ref_audio_tools(), [], noiser, dtype, cpu, noise_scale)
    return video, audio


def our_noised(seed: int, dtype: torch.dtype, noise_scale: float) -> tuple[LatentState, LatentState]:
    noiser = GaussianNoiser(torch.Generator().manual_seed(seed))
    items, _ = _conditionings(dtype)
    layout = VideoLayout(VIDEO_SHAPE, FPS)
    video = noiser(apply_conditionings(layout.initial_state("cpu", dtype), items, layout), noise_scale)
    audio = noiser(AudioLayout(AUDIO_SHAPE).initial_state("cpu", dtype), noise_scale)
    return video, audio
