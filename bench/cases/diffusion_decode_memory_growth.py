"""LTX-2.5 diffusion decoder, temporally tiled, at 1x and 4x the frames: peak resident memory vs clip length.

Ours: ``iter_diffusion_decode`` (stages 1-3 per temporal group of tiles, tiles blended as they finish), chunks
consumed as they come (to uint8, dropped). Reference: diffusers 0.42.1 ``LTX2VideoDiffusionDecoderModel`` with its
own tiling (``enable_tiling``, the same 16 / 8 frame tiles, no spatial tiles), its NATTEN processor running
comfy-kitchen's eager ``na3d`` as the tests do (its default flex-attention processor builds a dense mask: minutes on
CPU). ltx-core 1.0.0, the reference of the other cases, has no diffusion decoder. Same weights on both sides: the
tiny diffusers decoder of ``support.tiny25`` (stage widths 32 -> 16, patch 8, one x0 step), written in the
Lightricks file layout and loaded strictly by ours.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from . import sizes

# Latent frames: F' -> 1 + 8 (F' - 1) pixel frames; 4x the pixel frames of the 1x case (25 and 97 frames).
FRAMES = {"1x": sizes.VAE_LATENT[0], "4x": 4 * (sizes.VAE_LATENT[0] - 1) + 1}
LATENT_HW = (4, 6)  # latent (H', W') -> 128 x 192 px
TEMPORAL_TILE = (16, 8)  # (tile, overlap) in pixel frames


def _to_uint8(chunk: torch.Tensor) -> torch.Tensor:
    return (((chunk + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _reference_model() -> torch.nn.Module:
    from support import tiny25

    reference = tiny25.diffusers_diffusion_decoder(tiny25.diffusion_vae_section(), seed=0)
    tiny25.use_kitchen_neighborhood_attention(reference)
    return reference


def _ours(reference: torch.nn.Module) -> torch.nn.Module:
    from support import tiny25

    from aiprod.loaders.component_loader import load_component

    with tempfile.TemporaryDirectory() as folder:  # read into memory (float32 copies), then the file goes
        path = tiny25.write_file(Path(folder) / "ltx-2.5-video-vae-bench.safetensors",
                                 tiny25.diffusion_decoder_file_tensors(reference),
                                 {"vae": tiny25.diffusion_vae_section()})
        decoder = load_component(path, "diffusion_video_decoder", dtype=torch.float32).module
        for tensor in [*decoder.parameters(), *decoder.buffers()]:
            tensor.data = tensor.data.clone()  # no view of the (deleted) file mapping left
    return decoder.eval()


def prepare(side: str, variant: str) -> Callable[[], object]:
    from support import tiny25

    latent = torch.randn(1, 128, FRAMES[variant], *LATENT_HW, generator=torch.Generator().manual_seed(0))
    reference = _reference_model()
    tile, overlap = TEMPORAL_TILE
    if side == "ours":
        from aiprod.aiprod_core.video_vae import TemporalTiling, TilingConfig, iter_diffusion_decode

        decoder = _ours(reference)
        del reference
        tiling = TilingConfig(temporal=TemporalTiling(tile, overlap))
        return lambda: sum(_to_uint8(c).shape[2] for _, c in iter_diffusion_decode(
            decoder, latent, tiling, generator=torch.Generator().manual_seed(1)))
    reference.enable_tiling(tile_sample_min_num_frames=tile, tile_sample_stride_num_frames=tile - overlap,
                            tile_sample_min_height=10**6, tile_sample_min_width=10**6)
    raw = tiny25.denormalize(reference, latent)
    return lambda: _to_uint8(reference.decode(raw, generator=torch.Generator().manual_seed(1)).sample).shape[2]
