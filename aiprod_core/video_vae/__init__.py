"""LTX-2 / LTX-2.3 / LTX-2.5 causal video VAE: encoder, conv and diffusion decoders, per-channel latent statistics
and tiled encode/decode (`decode_video` decodes with either decoder).

Checkpoint layout: ``vae.encoder.*`` and ``vae.decoder.*`` load into `VideoEncoder` / `VideoDecoder` with the
prefix stripped; ``vae.per_channel_statistics.*`` loads into both as ``per_channel_statistics.*``. An LTX-2.5
diffusion-VAE file (``vae._class_name`` ``CausalDiffusionVAE``) holds the same encoder and a `DiffusionVideoDecoder`.
"""

from .config import VideoVAEConfig
from .decode import decode_video
from .decoder import VideoDecoder
from .diffusion_config import DiffusionDecoderConfig, is_diffusion_vae, video_encoder_config
from .diffusion_decode import diffusion_decode, iter_diffusion_decode
from .diffusion_decoder import DiffusionVideoDecoder
from .encoder import VideoEncoder
from .tiling import SpatialTiling, TemporalTiling, TilingConfig, iter_tiled_decode, tiled_decode, tiled_encode

__all__ = [
    "DiffusionDecoderConfig",
    "DiffusionVideoDecoder",
    "SpatialTiling",
    "TemporalTiling",
    "TilingConfig",
    "VideoDecoder",
    "VideoEncoder",
    "VideoVAEConfig",
    "decode_video",
    "diffusion_decode",
    "is_diffusion_vae",
    "iter_diffusion_decode",
    "iter_tiled_decode",
    "tiled_decode",
    "tiled_encode",
    "video_encoder_config",
]
