"""Latent upsamplers: spatial x2 pixel shuffle, rational x1.5, temporal x2, and their normalisation wrappers."""

from .model import LatentUpsampler, LatentUpsamplerConfig, upsample_latent
from .temporal import TemporalUpsampled, temporal_upsample, temporally_upsampled_frames

__all__ = [
    "LatentUpsampler",
    "LatentUpsamplerConfig",
    "TemporalUpsampled",
    "temporal_upsample",
    "temporally_upsampled_frames",
    "upsample_latent",
]
