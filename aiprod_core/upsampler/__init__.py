"""Latent spatial upsampler (x2 pixel shuffle, rational x1.5) and its normalisation wrapper."""

from .model import LatentUpsampler, LatentUpsamplerConfig, upsample_latent

__all__ = ["LatentUpsampler", "LatentUpsamplerConfig", "upsample_latent"]
