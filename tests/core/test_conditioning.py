"""Video conditioning vs ltx-core 1.0.0: image at a latent index, keyframes, IC-LoRA reference video, attention
strengths, and guide-token removal. States are compared field by field (tokens, denoise mask, positions, clean
tokens, attention matrix), bit-exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from aiprod.aiprod_core.conditioning import (
    AttentionStrength,
    ConditioningError,
    ImageAtLatentIndex,
    Keyframe,
    ReferenceVideo,
    apply_conditionings,
)
from aiprod.aiprod_core.sampling import LatentState, VideoLatentShape, VideoLayout

SHAPE = VideoLatentShape(2, 128, 3, 4, 6)  # 72 generated tokens per sample
FPS = 25.0


def _latent(frames: int, height: int = SHAPE.height, width: int = SHAPE.width, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE.batch, SHAPE.channels, frames, height, width, generator=gen)


def _tools(causal: bool = True) -> Any:
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.tools import VideoLatentTools
    from ltx_core.types import VideoLatentShape as RefShape

    return VideoLatentTools(VideoLatentPatchifier(patch_size=1), RefShape(*SHAPE), FPS, causal_fix=causal)


def _run_both(ours: list[Any], ref: list[Any], dtype: torch.dtype = torch.float32, causal: bool = True):
    from ltx_pipelines.utils.helpers import state_with_conditionings

    initial = _latent(SHAPE.frames, seed=99).to(dtype)
    tools = _tools(causal)
    ref_state = state_with_conditionings(tools.create_initial_state(torch.device("cpu"), dtype, initial), ref, tools)
    layout = VideoLayout(SHAPE, FPS, causal_first_frame=causal)
    state = apply_conditionings(layout.initial_state("cpu", dtype, initial), ours, layout)
    return state, ref_state, layout, tools


def _assert_equal_states(ours: LatentState, ref: Any) -> None:
    for name in ("latent", "denoise_mask", "positions", "clean_latent", "attention_mask"):
        a, b = getattr(ours, name), getattr(ref, name)
        if b is None:
            assert a is None, name
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, f"{name}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        assert torch.equal(a, b), f"{name}: max diff {(a.double() - b.double()).abs().max().item():.3e}"


@pytest.mark.oracle
@pytest.mark.parametrize(("latent_index", "frames", "strength"), [(0, 1, 1.0), (1, 1, 0.7), (1, 2, 0.25)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_image_at_latent_index_matches_reference(
    latent_index: int, frames: int, strength: float, dtype: torch.dtype
) -> None:
    from ltx_core.conditioning import VideoConditionByLatentIndex

    latent = _latent(frames, seed=1).to(dtype)
    state, ref, _, _ = _run_both(
        [ImageAtLatentIndex(latent, strength, latent_index)],
        [VideoConditionByLatentIndex(latent=latent, strength=strength, latent_idx=latent_index)],
        dtype,
    )
    _assert_equal_states(state, ref)
    per_frame = SHAPE.height * SHAPE.width
    start = latent_index * per_frame
    assert torch.equal(state.latent[:, start : start + frames * per_frame], latent.flatten(2).transpose(1, 2))
    assert state.tokens == SHAPE.tokens  # replaced, not appended


def test_image_at_latent_index_rejects_mismatches() -> None:
    layout = VideoLayout(SHAPE, FPS)
    state = layout.initial_state("cpu", torch.float32)
    with pytest.raises(ConditioningError, match="does not fit"):
        ImageAtLatentIndex(_latent(1, height=2), 1.0).apply(state, layout)
    with pytest.raises(ConditioningError, match="latent_index"):
        ImageAtLatentIndex(_latent(2), 1.0, latent_index=2).apply(state, layout)


@pytest.mark.oracle
@pytest.mark.parametrize(("frame_index", "frames"), [(0, 1), (16, 1), (9, 2)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keyframe_matches_reference(frame_index: int, frames: int, causal: bool, dtype: torch.dtype) -> None:
    from ltx_core.conditioning import VideoConditionByKeyframeIndex

    latent = _latent(frames, seed=2).to(dtype)
    state, ref, _, _ = _run_both(
        [Keyframe(latent, frame_index, strength=0.85)],
        [VideoConditionByKeyframeIndex(keyframes=latent, frame_idx=frame_index, strength=0.85)],
        dtype,
        causal,
    )
    _assert_equal_states(state, ref)
    appended = frames * SHAPE.height * SHAPE.width
    assert state.tokens == SHAPE.tokens + appended
    # The keyframe's first time bound sits at its pixel frame (causal first-frame handling only at frame 0).
    assert state.positions[0, 0, SHAPE.tokens, 0].item() == pytest.approx(frame_index / FPS)


@pytest.mark.oracle
@pytest.mark.parametrize(("factor", "height", "width"), [(1, 4, 6), (2, 2, 3)])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_reference_video_matches_reference(factor: int, height: int, width: int, strength: float) -> None:
    from ltx_core.conditioning import VideoConditionByReferenceLatent

    latent = _latent(2, height, width, seed=3)
    state, ref, _, _ = _run_both(
        [ReferenceVideo(latent, downscale_factor=factor, strength=strength)],
        [VideoConditionByReferenceLatent(latent=latent, downscale_factor=factor, strength=strength)],
    )
    _assert_equal_states(state, ref)
    # Scaled positions cover the target's pixel extent.
    assert state.positions[0, 2, -1, 1].item() == SHAPE.width * 32


def _attention_cases() -> dict[str, Any]:
    tokens = 2 * SHAPE.height * SHAPE.width  # the two-frame reference / keyframe below
    gen = torch.Generator().manual_seed(5)
    return {
        "scalar": 0.5,
        "zero_dim": torch.tensor(0.25),
        "per_token": torch.rand(tokens, generator=gen),
        "per_sample_token": torch.rand(SHAPE.batch, tokens, generator=gen),
        "broadcast_row": torch.rand(1, tokens, generator=gen),
    }


@pytest.mark.oracle
@pytest.mark.parametrize("case", list(_attention_cases()))
def test_attention_strength_matches_reference(case: str) -> None:
    """Wrapped reference video, then a wrapped keyframe, then a plain keyframe (the matrix grows with ones)."""
    from ltx_core.conditioning import (
        ConditioningItemAttentionStrengthWrapper,
        VideoConditionByKeyframeIndex,
        VideoConditionByReferenceLatent,
    )

    strength = _attention_cases()[case]
    reference_latent, key, key2 = _latent(2, seed=6), _latent(2, seed=7), _latent(1, seed=8)
    ours = [
        AttentionStrength(ReferenceVideo(reference_latent), strength),
        AttentionStrength(Keyframe(key, 8, 1.0), 0.75),
        Keyframe(key2, 16, 0.9),
    ]
    ref = [
        ConditioningItemAttentionStrengthWrapper(VideoConditionByReferenceLatent(latent=reference_latent), strength),
        ConditioningItemAttentionStrengthWrapper(
            VideoConditionByKeyframeIndex(keyframes=key, frame_idx=8, strength=1.0), 0.75
        ),
        VideoConditionByKeyframeIndex(keyframes=key2, frame_idx=16, strength=0.9),
    ]
    state, ref_state, _, _ = _run_both(ours, ref)
    _assert_equal_states(state, ref_state)
    matrix = state.attention_mask
    first, second = SHAPE.tokens, SHAPE.tokens + 2 * SHAPE.height * SHAPE.width
    assert matrix.shape == (SHAPE.batch, state.tokens, state.tokens)
    assert (matrix[:, first:second, second:] == 0).all()  # separate conditioning groups never attend


def test_attention_strength_rejects_bad_shapes() -> None:
    layout = VideoLayout(SHAPE, FPS)
    state = layout.initial_state("cpu", torch.float32)
    with pytest.raises(ValueError, match="attention strength shape"):
        AttentionStrength(ReferenceVideo(_latent(1)), torch.ones(5)).apply(state, layout)


@pytest.mark.oracle
def test_guide_token_removal_matches_reference() -> None:
    """strip_conditioning + unpatchify == the reference's clear_conditioning + unpatchify."""
    from ltx_core.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex

    image, key = _latent(1, seed=10), _latent(1, seed=11)
    state, ref, layout, tools = _run_both(
        [ImageAtLatentIndex(image, 1.0), AttentionStrength(Keyframe(key, 16, 1.0), 0.5)],
        [
            VideoConditionByLatentIndex(latent=image, strength=1.0, latent_idx=0),
            VideoConditionByKeyframeIndex(keyframes=key, frame_idx=16, strength=1.0),
        ],
    )
    stripped, ref_stripped = layout.strip_conditioning(state), tools.clear_conditioning(ref)
    for name in ("latent", "denoise_mask", "positions", "clean_latent"):
        assert torch.equal(getattr(stripped, name), getattr(ref_stripped, name)), name
    assert stripped.attention_mask is None
    video = layout.unpatchify(state.latent)
    assert torch.equal(video, tools.unpatchify(ref_stripped).latent)
    assert video.shape == SHAPE.torch_shape()
