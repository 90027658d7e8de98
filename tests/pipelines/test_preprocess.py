"""Conditioning-image preprocessing: parity with ltx_pipelines.utils.media_io, odd sizes, ComfyUI frames.

Both sides call the same PyAV / libx264 build in this environment, so the H.264 round trip is compared exactly
(another ffmpeg build may encode differently; the comparison is within one build).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aiprod.aiprod_core.pipelines.preprocess import (
    DEFAULT_IMAGE_CRF,
    conditioning_image,
    conditioning_video,
    frames_to_video,
    resize_and_center_crop,
    simulate_h264,
    to_uint8_image,
    video_to_frames,
)


def _image(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded RGB uint8 image: smooth gradients plus noise, so H.264 has both structure and detail to code."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1), (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 25, size=base.shape), 0, 255).astype(np.uint8)


# (source H, W) -> (target H, W): odd sizes, portrait / landscape / extreme aspect, up- and down-scaling
SIZES = [
    ((67, 131), (32, 64)),
    ((120, 45), (64, 32)),
    ((33, 300), (64, 96)),
    ((96, 160), (96, 160)),
    ((17, 23), (64, 64)),
]


@pytest.mark.oracle
@pytest.mark.parametrize("crf", [DEFAULT_IMAGE_CRF, 0, 18, 51])
@pytest.mark.parametrize(("source", "target"), SIZES)
def test_conditioning_image_matches_reference_exactly(source, target, crf) -> None:
    from ltx_pipelines.utils import media_io

    image = _image(*source, seed=source[0] * 1000 + source[1])
    ref_compressed = media_io.preprocess(image, crf=crf)
    ours_compressed = simulate_h264(image, crf)
    assert ours_compressed.shape == ref_compressed.shape
    assert np.array_equal(ours_compressed, ref_compressed)
    if crf:
        assert ours_compressed.shape[:2] == (source[0] // 2 * 2, source[1] // 2 * 2)  # cropped to even sizes
        assert not np.array_equal(ours_compressed, image[: source[0] // 2 * 2, : source[1] // 2 * 2])

    ref = media_io.normalize_latent(
        media_io.resize_and_center_crop(torch.tensor(ref_compressed, dtype=torch.float32), *target),
        torch.device("cpu"),
        torch.float32,
    )
    ours = conditioning_image(image, *target, crf=crf)
    assert ours.shape == ref.shape == (1, 3, 1, *target)
    assert torch.equal(ours, ref)
    # bilinear weights may sum to 1 +- 1 ulp: values stay in [-1, 1] up to float rounding (as in the reference)
    assert ours.min() >= -1.0 - 1e-5 and ours.max() <= 1.0 + 1e-5


@pytest.mark.oracle
@pytest.mark.parametrize(("source", "target"), SIZES)
def test_resize_and_center_crop_matches_reference_on_frames(source, target) -> None:
    from ltx_pipelines.utils import media_io

    frames = torch.rand(3, *source, 3, generator=torch.Generator().manual_seed(1)) * 255.0
    ref = media_io.resize_and_center_crop(frames, *target)
    ours = resize_and_center_crop(frames, *target)
    assert ours.shape == ref.shape == (1, 3, 3, *target)
    assert torch.equal(ours, ref)


@pytest.mark.oracle
def test_conditioning_video_matches_reference_frame_loop() -> None:
    """The reference's load_video_conditioning after decoding: per frame resize + crop + normalise, concatenated."""
    from ltx_pipelines.utils import media_io

    video = np.stack([_image(45, 70, seed=i) for i in range(5)])  # (F, H, W, 3) uint8, as decoded
    ref = torch.cat(
        [
            media_io.normalize_latent(
                media_io.resize_and_center_crop(torch.from_numpy(f)[None].float(), 32, 64),
                torch.device("cpu"),
                torch.float32,
            )
            for f in video[:4]  # frame_cap = 4
        ],
        dim=2,
    )
    ours = conditioning_video(video, 32, 64, max_frames=4)
    assert ours.shape == ref.shape == (1, 3, 4, 32, 64)
    assert torch.equal(ours, ref)
    as_comfy = torch.from_numpy(video).float() / 255.0
    assert torch.equal(conditioning_video(as_comfy, 32, 64, max_frames=4), ours)
    assert conditioning_video(as_comfy, 32, 64).shape == (1, 3, 5, 32, 64)
    with pytest.raises(ValueError, match=r"frames: shape \(0, 8, 8, 3\); expected \(F, H, W, 3\)"):
        conditioning_video(np.zeros((0, 8, 8, 3), np.uint8), 32, 32)


def test_centre_crop_keeps_the_middle() -> None:
    """A wide image: the left and right thirds are cropped away, the middle stripe survives."""
    image = torch.zeros(10, 30, 3)
    image[:, 10:20] = 255.0
    out = resize_and_center_crop(image, 10, 10)  # scale 1: a pure crop
    assert torch.equal(out, torch.full((1, 3, 1, 10, 10), 255.0))


def test_comfy_float_image_is_quantised_like_an_8_bit_file() -> None:
    image = _image(40, 50, seed=3)
    as_comfy = torch.from_numpy(image).float() / 255.0  # what ComfyUI's LoadImage produces
    assert np.array_equal(to_uint8_image(as_comfy), image)
    assert np.array_equal(to_uint8_image(as_comfy[None]), image)  # a one-image batch
    rgba = np.concatenate([image, np.full((40, 50, 1), 7, np.uint8)], axis=-1)
    assert np.array_equal(to_uint8_image(rgba), image)
    assert torch.equal(conditioning_image(as_comfy, 32, 32), conditioning_image(image, 32, 32))


def test_frames_round_trip_and_layout() -> None:
    frames = torch.rand(9, 16, 24, 3, generator=torch.Generator().manual_seed(0))
    video = frames_to_video(frames)
    assert video.shape == (1, 3, 9, 16, 24)
    assert torch.equal(video[0, 1, 4], frames[4, :, :, 1] * 2.0 - 1.0)  # channel 1 (G) of frame 4
    back = video_to_frames(video)
    assert back.shape == frames.shape
    assert torch.allclose(back, frames, atol=1e-6)
    assert frames_to_video(frames, torch.bfloat16).dtype == torch.bfloat16
    clipped = video_to_frames(torch.full((2, 3, 1, 2, 2), 3.0))
    assert clipped.shape == (2, 2, 2, 3) and torch.equal(clipped, torch.ones(2, 2, 2, 3))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: simulate_h264(np.zeros((8, 8, 3), np.float32)), "expected uint8 (H, W, 3)"),
        (lambda: simulate_h264(np.zeros((1, 8, 3), np.uint8)), "at least 2x2"),
        (lambda: simulate_h264(np.zeros((8, 8, 3), np.uint8), crf=52), "crf=52: must be a number in [0, 51]"),
        (lambda: simulate_h264(np.zeros((8, 8, 3), np.uint8), crf=-1), "crf=-1"),
        (lambda: to_uint8_image(np.zeros((8, 8), np.uint8)), "expected (H, W, 3) or (H, W, 4)"),
        (lambda: to_uint8_image(np.full((4, 4, 3), np.nan, np.float32)), "NaN"),
        (lambda: resize_and_center_crop(torch.zeros(8, 8), 4, 4), "expected (H, W, C) or (F, H, W, C)"),
        (lambda: resize_and_center_crop(torch.zeros(8, 8, 3), 0, 4), "target size 0x4"),
        (lambda: frames_to_video(torch.zeros(2, 8, 8, 4)), "expected (F, H, W, 3)"),
        (lambda: frames_to_video(torch.zeros(2, 8, 8, 3, dtype=torch.uint8)), "expected float in [0, 1]"),
        (lambda: video_to_frames(torch.zeros(1, 4, 1, 8, 8)), "expected (B, 3, F, H, W)"),
    ],
)
def test_errors_name_the_value_and_rule(call, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)
