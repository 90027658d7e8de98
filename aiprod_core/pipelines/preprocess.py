"""Pixel preprocessing for the video VAE: conditioning images and ComfyUI frame batches.

Conditioning images go through the reference's path (ltx_pipelines ``load_image_conditioning``):

1. RGB uint8 (H, W, 3) -> H.264 round trip (`simulate_h264`): the image is encoded as a one-frame H.264 video
   with a CRF and decoded back, so the conditioning frame looks like a frame of a compressed video (what the model
   saw in training). Odd sizes lose their last row / column (yuv420p needs even sizes). CRF 0 skips the step.
2. float32 in [0, 255] -> `resize_and_center_crop`: bilinear resize (no antialiasing) that covers the target
   size while keeping the aspect ratio, then a centred crop.
3. ``x / 127.5 - 1`` -> (1, 3, 1, H, W) in [-1, 1], the VAE encoder's input range.

Reference (control) videos of IC-LoRA take the same steps without the H.264 round trip (`conditioning_video`,
the reference's ``load_video_conditioning``).

ComfyUI IMAGE batches are (F, H, W, 3) float in [0, 1]; `frames_to_video` / `video_to_frames` map them to and
from the VAE layout (B, 3, F, H, W) in [-1, 1].
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_IMAGE_CRF",
    "MAX_CRF",
    "conditioning_image",
    "conditioning_video",
    "frames_to_video",
    "resize_and_center_crop",
    "simulate_h264",
    "to_uint8_image",
    "video_to_frames",
]

# The reference's default CRF for conditioning images (ltx_pipelines.utils.constants.DEFAULT_IMAGE_CRF).
DEFAULT_IMAGE_CRF = 33
MAX_CRF = 51  # x264's CRF range for 8-bit video is 0..51
_H264_PRESET = "veryfast"  # the reference's preset; the encoded frame (and so the result) depends on it


def _check_rgb_uint8(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:  # RGB
        raise ValueError(f"image: dtype {image.dtype}, shape {image.shape}; expected uint8 (H, W, 3) RGB")
    if image.shape[0] < 2 or image.shape[1] < 2:  # yuv420p: 2x2 chroma blocks
        raise ValueError(f"image: shape {image.shape}; H.264 needs at least 2x2 pixels")


def _check_crf(crf: float) -> None:
    if isinstance(crf, bool) or not isinstance(crf, int | float) or not 0 <= crf <= MAX_CRF:
        raise ValueError(f"crf={crf!r}: must be a number in [0, {MAX_CRF}] (0 skips the H.264 round trip)")


def _encode_one_frame(image: np.ndarray, crf: float) -> bytes:
    """One-frame H.264 (libx264, yuv420p) MP4 of an RGB uint8 image with even sizes."""
    import av

    buffer = BytesIO()
    container = av.open(buffer, "w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": _H264_PRESET})
        stream.height, stream.width = image.shape[:2]
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush
    finally:
        container.close()
    return buffer.getvalue()


def _decode_first_frame(data: bytes) -> np.ndarray:
    import av

    container = av.open(BytesIO(data))
    try:
        stream = next(s for s in container.streams if s.type == "video")
        frame = next(container.decode(stream))
        return frame.to_ndarray(format="rgb24")
    finally:
        container.close()


def simulate_h264(image: np.ndarray, crf: float = DEFAULT_IMAGE_CRF) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> the same image after an H.264 encode/decode at ``crf``: (H // 2 * 2, W // 2 * 2, 3).

    The top-left even-sized part is encoded (like the reference). ``crf == 0`` returns the image untouched,
    uncropped (the reference's "0 = lossless" skips the codec entirely).
    """
    _check_rgb_uint8(image)
    _check_crf(crf)
    if crf == 0:
        return image
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    cropped = np.ascontiguousarray(image[:height, :width])
    return _decode_first_frame(_encode_one_frame(cropped, crf))


def resize_and_center_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, C) or (F, H, W, C) float -> (1, C, F, height, width): cover-resize (bilinear) then centre crop.

    The scale is the larger of height / H and width / W; the resized size is rounded up so the crop never runs
    out of pixels. Values keep their range (the reference resizes 0..255 values).
    """
    if height < 1 or width < 1:
        raise ValueError(f"target size {height}x{width} (HxW): both must be >= 1")
    if frames.ndim == 3:  # H, W, C
        frames = frames.unsqueeze(0)
    if frames.ndim != 4:  # F, H, W, C
        raise ValueError(f"frames: shape {tuple(frames.shape)}; expected (H, W, C) or (F, H, W, C)")
    x = frames.permute(0, 3, 1, 2)  # (F, C, H, W)
    src_h, src_w = x.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top : top + height, left : left + width]
    return x.permute(1, 0, 2, 3).unsqueeze(0)  # (1, C, F, H, W)


def _uint8_levels(array: np.ndarray) -> np.ndarray:
    """(..., 3|4) uint8 or float [0, 1] -> (..., 3) uint8 (floats rounded to the nearest of 256 levels)."""
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"image: dtype {array.dtype}; expected uint8 or float in [0, 1]")
    if not np.isfinite(array).all():
        raise ValueError("image: contains NaN or infinite values")
    return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _as_numpy(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        return (image.float() if image.dtype == torch.bfloat16 else image).numpy()
    return np.asarray(image)


def to_uint8_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One RGB image -> uint8 (H, W, 3). Float input is ComfyUI's [0, 1] (rounded to the nearest level, so an
    image loaded from an 8-bit file comes back exactly); uint8 input passes through; an alpha channel is dropped.
    """
    array = _as_numpy(image)
    if array.ndim == 4 and array.shape[0] == 1:  # a one-image ComfyUI batch
        array = array[0]
    if array.ndim != 3 or array.shape[2] not in (3, 4):  # (H, W, RGB[A])
        raise ValueError(f"image: shape {array.shape}; expected (H, W, 3) or (H, W, 4)")
    return _uint8_levels(array)


def conditioning_image(
    image: torch.Tensor | np.ndarray,
    height: int,
    width: int,
    crf: float = DEFAULT_IMAGE_CRF,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A conditioning image (any size; uint8 or float [0, 1], (H, W, 3|4)) -> VAE input (1, 3, 1, height, width)
    in [-1, 1]: H.264 round trip at ``crf``, cover-resize, centre crop, ``x / 127.5 - 1`` (the reference's path).
    """
    compressed = simulate_h264(to_uint8_image(image), crf)
    pixels = torch.from_numpy(compressed).to(device=device, dtype=torch.float32)  # (H', W', 3) in [0, 255]
    video = resize_and_center_crop(pixels, height, width)  # (1, 3, 1, height, width)
    return (video / 127.5 - 1.0).to(dtype)


def conditioning_video(
    frames: torch.Tensor | np.ndarray,
    height: int,
    width: int,
    max_frames: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Video frames (F, H, W, 3|4) uint8 or float [0, 1] -> VAE input (1, 3, F', height, width) in [-1, 1]: the first
    ``max_frames`` frames, quantised to uint8 levels, cover-resized and centre-cropped, ``x / 127.5 - 1``.

    No H.264 step and no 8k+1 crop (the caller picks the frame count, see ``validation.check_reference_video``).
    """
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] < 1:  # (F, H, W, RGB[A])
        raise ValueError(f"frames: shape {tuple(frames.shape)}; expected (F, H, W, 3) with at least one frame")
    frames = frames[:max_frames] if max_frames is not None else frames
    levels = _uint8_levels(_as_numpy(frames))  # (F, H, W, 3) uint8
    pixels = torch.from_numpy(levels).to(device=device, dtype=torch.float32)
    return (resize_and_center_crop(pixels, height, width) / 127.5 - 1.0).to(dtype)  # (1, 3, F, height, width)


def frames_to_video(frames: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ComfyUI frames (F, H, W, 3) float in [0, 1] -> VAE input (1, 3, F, H, W) in [-1, 1]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:  # F, H, W, RGB
        raise ValueError(f"frames: shape {tuple(frames.shape)}; expected (F, H, W, 3)")
    if not frames.is_floating_point():
        raise ValueError(f"frames: dtype {frames.dtype}; expected float in [0, 1]")
    video = frames.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0  # (1, 3, F, H, W)
    return video.to(dtype) if dtype is not None else video


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """VAE output (B, 3, F, H, W) in [-1, 1] -> ComfyUI frames (B * F, H, W, 3) float32 in [0, 1] (clamped)."""
    if video.ndim != 5 or video.shape[1] != 3:  # B, 3, F, H, W
        raise ValueError(f"video: shape {tuple(video.shape)}; expected (B, 3, F, H, W)")
    frames = ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    return frames.permute(0, 2, 3, 4, 1).flatten(0, 1)  # (B F, H, W, 3)
