"""Tiled video decode (spatial + temporal tiles), chunks consumed as they come (to uint8, then dropped)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..common import build_reference, random_state_dict
from . import sizes


def ours_decoder() -> torch.nn.Module:
    from aiprod.aiprod_core.video_vae import VideoDecoder, VideoVAEConfig

    decoder = VideoDecoder(VideoVAEConfig.from_metadata({"vae": sizes.vae_section()}), device="meta")
    decoder.load_state_dict(random_state_dict(decoder), strict=True, assign=True)
    return decoder.eval()


def reference_decoder() -> torch.nn.Module:
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator

    from aiprod.aiprod_core.video_vae import VideoDecoder, VideoVAEConfig

    config = {"vae": sizes.vae_section()}
    state = random_state_dict(VideoDecoder(VideoVAEConfig.from_metadata(config), device="meta"))
    return build_reference(VideoDecoderConfigurator, config, state)


def latent(frames: int) -> torch.Tensor:
    _, height, width = sizes.VAE_LATENT
    return torch.randn(1, 128, frames, height, width, generator=torch.Generator().manual_seed(0))  # (B, C, F', H', W')


def _to_uint8(chunk: torch.Tensor) -> torch.Tensor:
    return (((chunk + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def prepare_decode(side: str, frames: int) -> Callable[[], object]:
    """A call decoding ``frames`` latent frames tile by tile; returns the number of pixel frames produced."""
    x = latent(frames)
    (tile, overlap), (t_tile, t_overlap) = sizes.VAE_TILING["spatial"], sizes.VAE_TILING["temporal"]
    if side == "ours":
        from aiprod.aiprod_core.video_vae import SpatialTiling, TemporalTiling, TilingConfig, iter_tiled_decode

        decoder = ours_decoder()
        tiling = TilingConfig(SpatialTiling(tile, overlap), TemporalTiling(t_tile, t_overlap))
        return lambda: sum(_to_uint8(c).shape[2] for _, c in iter_tiled_decode(decoder, x, tiling))
    from ltx_core.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig, TilingConfig

    decoder = reference_decoder()
    tiling = TilingConfig(SpatialTilingConfig(tile, overlap), TemporalTilingConfig(t_tile, t_overlap))
    return lambda: sum(_to_uint8(c).shape[2] for c in decoder.tiled_decode(x, tiling))


def prepare(side: str, variant: str) -> Callable[[], object]:
    return prepare_decode(side, sizes.VAE_LATENT[0])
