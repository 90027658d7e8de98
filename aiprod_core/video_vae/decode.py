"""One entry point for decoding video latents with either LTX video decoder (conv or LTX-2.5 diffusion)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .decoder import VideoDecoder
from .diffusion_decode import diffusion_decode
from .diffusion_decoder import DiffusionVideoDecoder
from .tiling import TilingConfig, tiled_decode

__all__ = ["decode_video"]


def decode_video(
    latent: torch.Tensor,
    decoder: VideoDecoder | DiffusionVideoDecoder,
    tiling: TilingConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    timestep: torch.Tensor | float | None = None,
    steps: int | None = None,
    out: torch.Tensor | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Decode a normalised latent (B, 128, F', H', W') into video (B, 3, 1 + 8 (F' - 1), 32 H', 32 W').

    ``decoder`` picks the path: the conv `VideoDecoder` (``timestep``: its decode timestep, timestep-conditioned
    LTX-2 decoders only) or the `DiffusionVideoDecoder` (``steps``: denoising steps, default the file's).
    ``tiling`` (None: whole) tiles either; ``generator`` drives every random draw; ``out`` / ``on_chunk`` as in
    `tiled_decode` (chunks are written into ``out`` as they finish; ``on_chunk(done, total)`` after each).
    """
    if isinstance(decoder, DiffusionVideoDecoder):
        if timestep is not None:
            raise ValueError(f"timestep={timestep!r}, expected None: the diffusion decoder runs its own schedule")
        return diffusion_decode(decoder, latent, tiling, generator, out, on_chunk, steps)
    if not isinstance(decoder, VideoDecoder):
        raise TypeError(f"decoder is a {type(decoder).__name__}, expected VideoDecoder or DiffusionVideoDecoder")
    if steps is not None:
        raise ValueError(f"steps={steps!r}, expected None: the conv decoder decodes in one pass")
    return tiled_decode(decoder, latent, tiling or TilingConfig(), timestep, generator, out, on_chunk)
