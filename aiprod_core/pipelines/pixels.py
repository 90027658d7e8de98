"""Pixel inputs of the conditioning stages that `preprocess` does not cover: reference videos and their masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .preprocess import resize_and_center_crop

__all__ = ["reference_mask_to_latent", "reference_video_pixels"]


def reference_video_pixels(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Frames (F, H, W, 3), uint8 or float in [0, 1] -> VAE input (1, 3, F, height, width) in [-1, 1].

    As the reference's ``load_video_conditioning``: 0..255 values cover-resized (bilinear) and centre-cropped
    frame by frame, then ``x / 127.5 - 1``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:  # F, H, W, RGB
        raise ValueError(f"frames: shape {tuple(frames.shape)}; expected (F, H, W, 3)")
    values = frames.float() if frames.dtype == torch.uint8 else frames.float() * 255.0
    return resize_and_center_crop(values, height, width) / 127.5 - 1.0


def reference_mask_to_latent(mask: torch.Tensor, latent_grid: tuple[int, int, int]) -> torch.Tensor:
    """Pixel mask (F, H, W) in [0, 1] -> per-token strengths (F' H' W',) of a reference latent grid (F', H', W').

    Area-averaged per frame to (H', W'); the first frame stays alone (causal VAE), the remaining F - 1 frames are
    averaged in groups of (F - 1) / (F' - 1).
    """
    frames, lat_h, lat_w = (int(v) for v in latent_grid)
    if mask.ndim != 3:  # F, H, W
        raise ValueError(f"attention mask: shape {tuple(mask.shape)}; expected (F, H, W)")
    spatial = F.interpolate(mask.float().unsqueeze(1), size=(lat_h, lat_w), mode="area")[:, 0]  # (F, H', W')
    pixel_frames = spatial.shape[0]
    if pixel_frames == 1 or frames == 1:
        return spatial[:1].flatten()
    group, extra = divmod(pixel_frames - 1, frames - 1)
    if extra:
        raise ValueError(f"attention mask frames={pixel_frames!r}, expected 1 + k x {frames - 1} ({frames} latents)")
    rest = spatial[1:].reshape(frames - 1, group, lat_h, lat_w).mean(dim=1)
    return torch.cat([spatial[:1], rest]).flatten()
