"""Tiled encode and decode of the video VAE: overlapping spatial and temporal tiles blended at the seams.

The tile geometry and blend weights are those of ltx-core 1.0.0, so results match its ``tiled_encode`` /
``tiled_decode`` for the same settings, with three differences: settings are never changed behind the
caller's back (ltx-core silently raises too-small encode overlaps; here they raise ``ValueError``), no empty
chunk is ever produced, and decoding keeps at most two temporal groups of tiles in memory (the one being
decoded and the previous one, whose overlap is still being blended), whatever the clip length.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .decoder import VideoDecoder
    from .encoder import VideoEncoder

__all__ = ["SpatialTiling", "TemporalTiling", "TilingConfig", "iter_tiled_decode", "tiled_decode", "tiled_encode"]

PIXELS_PER_LATENT = 32  # the tile-setting grid: one latent cell (spatial scale factor)
FRAMES_PER_LATENT = 8  # one latent frame (temporal scale factor)
MIN_SPATIAL_TILE = 64
MIN_TEMPORAL_TILE = 16
# Tiled encode drops one latent at each side of a spatial seam and needs that much real context.
MIN_ENCODE_OVERLAP_PIXELS = 64
MIN_ENCODE_OVERLAP_FRAMES = 16
_WEIGHT_FLOOR = 1e-8


def _check_grid(name: str, value: int, step: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value % step:
        raise ValueError(f"{name}={value!r}, expected a multiple of {step} that is at least {minimum}")


@dataclass(frozen=True)
class SpatialTiling:
    """Square spatial tiles of ``tile_size_in_pixels`` overlapping by ``tile_overlap_in_pixels`` (multiples of 32).

    Decoding sizes tiles on the longer side of the frame and scales the shorter side's tiles by the aspect
    ratio (at least ``overlap + 1`` latent cells and 2 cells), as ltx-core does.
    """

    tile_size_in_pixels: int
    tile_overlap_in_pixels: int = 0

    def __post_init__(self) -> None:
        _check_grid("tile_size_in_pixels", self.tile_size_in_pixels, PIXELS_PER_LATENT, MIN_SPATIAL_TILE)
        _check_grid("tile_overlap_in_pixels", self.tile_overlap_in_pixels, PIXELS_PER_LATENT, 0)
        if self.tile_overlap_in_pixels >= self.tile_size_in_pixels:
            raise ValueError(
                f"tile_overlap_in_pixels={self.tile_overlap_in_pixels!r}, expected less than "
                f"tile_size_in_pixels={self.tile_size_in_pixels!r}"
            )


@dataclass(frozen=True)
class TemporalTiling:
    """Temporal tiles of ``tile_size_in_frames`` overlapping by ``tile_overlap_in_frames`` (multiples of 8)."""

    tile_size_in_frames: int
    tile_overlap_in_frames: int = 0

    def __post_init__(self) -> None:
        _check_grid("tile_size_in_frames", self.tile_size_in_frames, FRAMES_PER_LATENT, MIN_TEMPORAL_TILE)
        _check_grid("tile_overlap_in_frames", self.tile_overlap_in_frames, FRAMES_PER_LATENT, 0)
        if self.tile_overlap_in_frames >= self.tile_size_in_frames:
            raise ValueError(
                f"tile_overlap_in_frames={self.tile_overlap_in_frames!r}, expected less than "
                f"tile_size_in_frames={self.tile_size_in_frames!r}"
            )


@dataclass(frozen=True)
class TilingConfig:
    """Spatial and/or temporal tiling; ``None`` leaves that axis whole."""

    spatial: SpatialTiling | None = None
    temporal: TemporalTiling | None = None


@dataclass(frozen=True)
class _Span:
    """One tile along one axis: where to read it (input units), where it lands (output units), its weights."""

    src: slice
    dst: slice
    weight: torch.Tensor  # (dst length,)


@dataclass(frozen=True)
class _Cut:
    start: int
    stop: int
    left: int  # overlap with the previous tile, input units
    right: int  # overlap with the next tile, input units


def _cuts(length: int, size: int, overlap: int, min_last: int = 1) -> list[_Cut]:
    """Tiles of ``size`` every ``size - overlap`` covering [0, length); the last one is cut at ``length``.

    A last tile shorter than ``min_last`` is merged into the one before it (ltx-core keeps it and then fails
    on reflect padding of a 1-wide tile).
    """
    if length <= size:
        return [_Cut(0, length, 0, 0)]
    step = size - overlap
    count = (length - overlap + step - 1) // step
    starts = [i * step for i in range(count)]
    if count > 1 and length - starts[-1] < min_last:
        starts.pop()
        count -= 1
    stops = [*(s + size for s in starts[:-1]), length]
    return [
        _Cut(start, stop, overlap if i else 0, overlap if i < count - 1 else 0)
        for i, (start, stop) in enumerate(zip(starts, stops, strict=True))
    ]


def _linear_ramps(length: int, left: int, right: int, left_from_zero: bool) -> torch.Tensor:
    """Weights rising over the first ``left`` entries (from 0 itself if ``left_from_zero``, else from just above
    0) and falling over the last ``right`` entries to just above 0; 1 in between. Shape (length,)."""
    weight = torch.ones(length)
    left, right = min(max(left, 0), length), min(max(right, 0), length)
    if left:
        rise = torch.linspace(0.0, 1.0, left + (1 if left_from_zero else 2))[:-1]
        weight[:left] *= rise if left_from_zero else rise[1:]
    if right:
        weight[length - right :] *= torch.linspace(1.0, 0.0, right + 2)[1:-1]
    return weight.clamp_(0, 1)


def _keep_mask(length: int, drop_left: int, drop_right: int) -> torch.Tensor:
    """1 everywhere except 0 on the first ``drop_left`` and last ``drop_right`` entries. Shape (length,)."""
    weight = torch.ones(length)
    weight[:drop_left] = 0
    if drop_right:
        weight[length - drop_right :] = 0
    return weight


# --- decode geometry: latent tiles -> pixel regions ----------------------------------------------------------


def _decode_spatial_spans(
    length: int, long_side: int, spatial: SpatialTiling | None, scale: int, min_tile: int
) -> list[_Span]:
    if spatial is None:
        return [_Span(slice(0, length), slice(0, length * scale), torch.ones(length * scale))]
    overlap = spatial.tile_overlap_in_pixels // scale
    size = max(2, overlap + 1, round(spatial.tile_size_in_pixels // scale * length / long_side))
    return [
        _Span(
            slice(c.start, c.stop),
            slice(c.start * scale, c.stop * scale),
            _linear_ramps((c.stop - c.start) * scale, c.left * scale, c.right * scale, left_from_zero=False),
        )
        for c in _cuts(length, size, overlap, min_tile)
    ]


def _decode_temporal_spans(length: int, temporal: TemporalTiling | None, scale: int) -> list[_Span]:
    cuts = [_Cut(0, length, 0, 0)]
    if temporal is not None:
        size, overlap = temporal.tile_size_in_frames // scale, temporal.tile_overlap_in_frames // scale
        cuts = _cuts(length, size, overlap)
        # Later tiles start one latent frame early: their first decoded frame is a causal "first frame" and is
        # blended in from weight 0.
        cuts = [cuts[0]] + [_Cut(c.start - 1, c.stop, c.left + 1, c.right) for c in cuts[1:]]
    spans = []
    for c in cuts:
        start, stop = c.start * scale, 1 + (c.stop - 1) * scale
        left = 1 + (c.left - 1) * scale if c.left else 0
        weight = _linear_ramps(stop - start, left, c.right * scale, left_from_zero=True)
        spans.append(_Span(slice(c.start, c.stop), slice(start, stop), weight))
    return spans


# --- encode geometry: pixel tiles -> latent regions -------------------------------------------------------------


def _encode_spatial_spans(length: int, spatial: SpatialTiling | None, scale: int) -> list[_Span]:
    if spatial is None:
        return [_Span(slice(0, length), slice(0, length // scale), torch.ones(length // scale))]
    if spatial.tile_overlap_in_pixels < MIN_ENCODE_OVERLAP_PIXELS:
        raise ValueError(
            f"tile_overlap_in_pixels={spatial.tile_overlap_in_pixels!r}, expected at least "
            f"{MIN_ENCODE_OVERLAP_PIXELS} for tiled encode (one latent per side of each seam is discarded)"
        )
    spans = []
    for c in _cuts(length, spatial.tile_size_in_pixels, spatial.tile_overlap_in_pixels):
        n = c.stop // scale - c.start // scale
        weight = _keep_mask(n, max(0, c.left // scale - 1), 1 if c.right else 0)
        spans.append(_Span(slice(c.start, c.stop), slice(c.start // scale, c.stop // scale), weight))
    return spans


def _encode_temporal_spans(length: int, temporal: TemporalTiling | None, scale: int) -> list[_Span]:
    cuts = [_Cut(0, length, 0, 0)]
    if temporal is not None:
        if temporal.tile_overlap_in_frames < MIN_ENCODE_OVERLAP_FRAMES:
            raise ValueError(
                f"tile_overlap_in_frames={temporal.tile_overlap_in_frames!r}, expected at least "
                f"{MIN_ENCODE_OVERLAP_FRAMES} for tiled encode"
            )
        cuts = _cuts(length, temporal.tile_size_in_frames, temporal.tile_overlap_in_frames)
        # Every tile but the last takes one more frame (1 + 8k frames) and none fades out on the right.
        cuts = [_Cut(c.start, c.stop + (i < len(cuts) - 1), c.left, 0) for i, c in enumerate(cuts)]
    spans = []
    for c in cuts:
        start, stop = c.start // scale, (c.stop - 1) // scale + 1
        drop = 1 + (c.left - 1) // scale if c.left else 0
        spans.append(_Span(slice(c.start, c.stop), slice(start, stop), _keep_mask(stop - start, drop, 0)))
    return spans


def _tile_weight(t: _Span, h: _Span, w: _Span, like: torch.Tensor) -> torch.Tensor:
    weight = t.weight[:, None, None] * h.weight[None, :, None] * w.weight[None, None, :]
    return weight.to(device=like.device, dtype=like.dtype)[None, None]  # (1, 1, T, H, W)


def tiled_encode(encoder: VideoEncoder, video: torch.Tensor, tiling: TilingConfig) -> torch.Tensor:
    """Encode video (B, 3, F, H, W) tile by tile into the latent (B, C, F', H', W'), on the encoder's device.

    Spatial seams keep each tile's inner latents (one latent per side of a seam is dropped); temporal tiles
    are averaged where they overlap. Overlaps below 64 pixels / 16 frames raise ``ValueError``.
    """
    video = encoder.check_video(video)
    parameter = next(encoder.parameters())
    scales = encoder.scale_factors
    b, _, frames, height, width = video.shape
    t_spans = _encode_temporal_spans(frames, tiling.temporal, scales.time)
    h_spans = _encode_spatial_spans(height, tiling.spatial, scales.height)
    w_spans = _encode_spatial_spans(width, tiling.spatial, scales.width)
    latent_frames = (frames - 1) // scales.time + 1
    shape = (b, encoder.config.latent_channels, latent_frames, height // scales.height, width // scales.width)
    total = torch.zeros(shape, device=parameter.device, dtype=parameter.dtype)
    weights = torch.zeros((1, 1, *shape[2:]), device=parameter.device, dtype=parameter.dtype)
    for t, h, w in itertools.product(t_spans, h_spans, w_spans):
        tile = video[:, :, t.src, h.src, w.src].to(device=parameter.device, dtype=parameter.dtype)
        encoded = encoder(tile)  # (B, C, T', H', W')
        weight = _tile_weight(t, h, w, encoded)
        total[:, :, t.dst, h.dst, w.dst] += encoded * weight
        weights[:, :, t.dst, h.dst, w.dst] += weight
        del tile, encoded
    return total / weights.clamp(min=_WEIGHT_FLOOR)


def _decode_group(
    decoder: VideoDecoder,
    latent: torch.Tensor,
    t: _Span,
    spatial: tuple[list[_Span], list[_Span]],
    out_shape: tuple[int, int, int, int],
    timestep: torch.Tensor | float | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every spatial tile of one temporal span; returns the weighted sum and the summed weights."""
    b, c, height, width = out_shape
    frames = t.dst.stop - t.dst.start
    total = latent.new_zeros((b, c, frames, height, width))
    weights = latent.new_zeros((1, 1, frames, height, width))
    for h, w in itertools.product(*spatial):
        decoded = decoder(latent[:, :, t.src, h.src, w.src], timestep, generator)  # (B, C, T, h, w)
        if decoded.shape[2] != frames:
            raise RuntimeError(f"decoded tile has {decoded.shape[2]} frames, expected {frames}")
        weight = _tile_weight(t, h, w, total)
        total[:, :, :, h.dst, w.dst] += decoded * weight
        weights[:, :, :, h.dst, w.dst] += weight
        del decoded
    return total, weights


def iter_tiled_decode(
    decoder: VideoDecoder,
    latent: torch.Tensor,
    tiling: TilingConfig,
    timestep: torch.Tensor | float | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Decode latent (B, C, F', H', W') tile by tile, yielding ``(first_frame, frames)`` chunks in order.

    Chunks are (B, 3, n, H, W) with n > 0 and together cover all 1 + t(F' - 1) frames once.
    Tiles are decoded in ltx-core's order (time, then rows, then columns), so a timestep-conditioned decoder
    draws the same noise from ``generator``. Memory: one tile's activations plus two temporal groups.
    """
    scales = decoder.scale_factors
    _, _, frames, height, width = latent.shape
    long_side = max(height, width)
    # Reflect padding needs at least 2 latent cells per tile.
    min_tile = 2 if decoder.config.decoder_padding_mode == "reflect" else 1
    spatial = (
        _decode_spatial_spans(height, long_side, tiling.spatial, scales.height, min_tile),
        _decode_spatial_spans(width, long_side, tiling.spatial, scales.width, min_tile),
    )
    out_shape = (latent.shape[0], decoder.config.out_channels, height * scales.height, width * scales.width)
    pending: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (first frame, sum, weights)
    for t in _decode_temporal_spans(frames, tiling.temporal, scales.time):
        total, weights = _decode_group(decoder, latent, t, spatial, out_shape, timestep, generator)
        start = t.dst.start
        if pending is not None:
            prev_start, prev_total, prev_weights = pending
            done = start - prev_start  # frames of the previous group no later tile touches
            shared = prev_total.shape[2] - done
            if shared > 0:
                total[:, :, :shared] += prev_total[:, :, done:]
                weights[:, :, :shared] += prev_weights[:, :, done:]
            if done > 0:
                yield prev_start, prev_total[:, :, :done] / prev_weights[:, :, :done].clamp(min=_WEIGHT_FLOOR)
            del prev_total, prev_weights
        pending = (start, total, weights)
    if pending is not None:
        start, total, weights = pending
        yield start, total / weights.clamp(min=_WEIGHT_FLOOR)


def tiled_decode(
    decoder: VideoDecoder,
    latent: torch.Tensor,
    tiling: TilingConfig,
    timestep: torch.Tensor | float | None = None,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Decode latent (B, C, F', H', W') into video (B, 3, F, H, W), writing chunks into ``out`` as they finish.

    ``out`` (preallocated by the caller, any device/dtype) is allocated here when not given; the working
    memory besides it does not grow with the clip length. ``on_chunk(frames_done, frames_total)`` runs after
    each finished chunk (progress, and a host's interrupt check: raising there stops the decode).
    """
    scales = decoder.scale_factors
    b, _, frames, height, width = latent.shape
    shape = (
        b,
        decoder.config.out_channels,
        1 + (frames - 1) * scales.time,
        height * scales.height,
        width * scales.width,
    )
    if out is None:
        out = latent.new_empty(shape)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out.shape={tuple(out.shape)!r}, expected {shape!r}")
    for start, chunk in iter_tiled_decode(decoder, latent, tiling, timestep, generator):
        out[:, :, start : start + chunk.shape[2]] = chunk
        if on_chunk is not None:
            on_chunk(start + chunk.shape[2], shape[2])
    return out
