"""Temporal x2 latent upsampling (LTX-2.5 ``temporal-upscaler-x2``): twice the frame rate, (F - 1) x 2 + 1 frames.

The temporal upsampler doubles every latent frame but the first, so a latent of F' frames (1 + 8 (F' - 1) video
frames) becomes 2 F' - 1 latent frames, i.e. (frames - 1) x 2 + 1 video frames played at twice the frame rate.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .model import LatentUpsampler, upsample_latent

__all__ = ["TemporalUpsampled", "temporal_upsample", "temporally_upsampled_frames"]

TEMPORAL_FACTOR = 2


class TemporalUpsampled(NamedTuple):
    """A temporally upsampled latent (B, C, 2 F' - 1, H', W') and the frame rate its video plays at."""

    latent: torch.Tensor
    frame_rate: float


def temporally_upsampled_frames(frames: int) -> int:
    """Video frames after one temporal x2 upsample: (frames - 1) x 2 + 1 (``frames`` = 1 + 8k)."""
    if frames < 1:
        raise ValueError(f"frames={frames!r}, expected >= 1")
    return (frames - 1) * TEMPORAL_FACTOR + 1


def temporal_upsample(
    latent: torch.Tensor,
    upsampler: LatentUpsampler,
    mean_of_means: torch.Tensor,
    std_of_means: torch.Tensor,
    frame_rate: float,
) -> TemporalUpsampled:
    """Upsample a *normalised* video latent (B, C, F', H', W') in time with a temporal-only ``upsampler``.

    ``mean_of_means`` / ``std_of_means`` (C,) are the video VAE's latent statistics; ``frame_rate`` is the input
    video's, doubled in the result. Raises ``ValueError`` for a spatial upsampler.
    """
    config = upsampler.config
    if not config.temporal_upsample or config.spatial_upsample:
        raise ValueError(
            f"upsampler temporal_upsample={config.temporal_upsample!r}, spatial_upsample={config.spatial_upsample!r},"
            " expected a temporal-only upsampler (temporal_upsample=True, spatial_upsample=False)"
        )
    if latent.ndim != 5:
        raise ValueError(f"latent.shape={tuple(latent.shape)!r}, expected (B, C, F, H, W)")
    if frame_rate <= 0:
        raise ValueError(f"frame_rate={frame_rate!r}, expected > 0")
    upsampled = upsample_latent(latent, upsampler, mean_of_means, std_of_means)
    return TemporalUpsampled(upsampled, frame_rate * TEMPORAL_FACTOR)
