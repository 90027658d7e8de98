"""Tiled decode of 1x and 4x the frames: the peak resident memory should hardly grow with the clip length."""

from __future__ import annotations

from collections.abc import Callable

from . import sizes
from .vae_decode_tiled import prepare_decode

# Latent frames: F' -> 1 + 8 (F' - 1) pixel frames; 4x the pixel frames of the 1x case.
FRAMES = {"1x": sizes.VAE_LATENT[0], "4x": 4 * (sizes.VAE_LATENT[0] - 1) + 1}


def prepare(side: str, variant: str) -> Callable[[], object]:
    return prepare_decode(side, FRAMES[variant])
