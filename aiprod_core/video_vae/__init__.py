"""LTX-2 / LTX-2.3 causal video VAE: encoder, decoder, per-channel latent statistics and tiled encode/decode.

Checkpoint layout: ``vae.encoder.*`` and ``vae.decoder.*`` load into `VideoEncoder` / `VideoDecoder` with the
prefix stripped; ``vae.per_channel_statistics.*`` loads into both as ``per_channel_statistics.*``.
"""

from .config import VideoVAEConfig
from .decoder import VideoDecoder
from .encoder import VideoEncoder
from .tiling import SpatialTiling, TemporalTiling, TilingConfig, iter_tiled_decode, tiled_decode, tiled_encode

__all__ = [
    "SpatialTiling",
    "TemporalTiling",
    "TilingConfig",
    "VideoDecoder",
    "VideoEncoder",
    "VideoVAEConfig",
    "iter_tiled_decode",
    "tiled_decode",
    "tiled_encode",
]
