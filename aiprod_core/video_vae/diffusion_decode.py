"""Decoding with the LTX-2.5 diffusion decoder, whole or tiled, with bounded memory.

What the Lightricks reference (ltx-core 1.2.0 ``DiffusionVideoDecoder._decode_pixels``) does, and so does this:
latents smaller than ``min_latent_size`` are edge-padded (time: the last frame repeated; space: both edges) and
the padding cropped from the pixels; the last latent frame is repeated ``trailing_pad_latent_frames`` times
through stages 1-4 (NATTEN's windows shift inward at the border) and those "ghost" frames cropped from the
context before stage 5, but never below ``stage5_kernel[0]`` frames; tiles live on the stage-4 input grid
(``pixel_scale`` pixels per cell), a tile that does not hold frame 0 keeps its upsample's leading frame, only the
trailing tile carries the ghost frames, and tiles are blended with symmetric linear ramps; a single-step decode
draws its noise per tile, a multi-step one slices every tile's noise from one canvas over the whole video.

What differs, deliberately: stages 1-3 run per temporal group of tiles on the latent frames that group needs
plus ``stage_3_halo`` frames each side (the reference runs them once over the whole clip and keeps that volume,
larger than the video itself, for the whole decode); outside the halo the windowed stages are exact, so results
equal the reference's while the working memory no longer grows with the clip. Noise is drawn in float32 and
cast (the reference draws in the compute dtype; the same for float32 decodes, and a bf16 decode then stays close
to the float32 decode of the same seed). Blending accumulates in float32 (the reference: float16 for bf16).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .diffusion_config import LATENT_SPACE_SCALE, LATENT_TIME_SCALE
from .diffusion_decoder import DiffusionVideoDecoder
from .tiling import TilingConfig, _linear_ramps

__all__ = ["diffusion_decode", "iter_diffusion_decode"]

_WEIGHT_FLOOR = 1e-8


@dataclass(frozen=True)
class _Tile:
    """One tile along one axis: stage-4 input cells (content only), pixels of the padded video, blend weights."""

    cells: slice
    pixels: slice
    weight: torch.Tensor  # (pixels,)


def _split(length: int, size: int, overlap: int, min_size: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, left overlap, right overlap) tiles of ``size`` every ``size - overlap`` cells covering
    ``length``; a short last tile grows leftward to ``min_size`` (the reference's ``split_by_size``)."""
    if length < min_size or length <= size:
        return [(0, length, 0, 0)]
    step = size - overlap
    count = (length + size - 2 * overlap - 1) // step
    tiles = [(i * step, min(i * step + size, length), overlap if i else 0, overlap if i < count - 1 else 0)
             for i in range(count)]
    tiles[-1] = (tiles[-1][0], length, tiles[-1][2], 0)
    start, stop, _, _ = tiles[-1]
    if count > 1 and stop - start < min_size:
        new_start = stop - min_size
        prev = tiles[-2]
        grown = prev[1] - new_start
        tiles[-2] = (prev[0], prev[1], prev[2], grown)
        tiles[-1] = (new_start, stop, grown, 0)
    return tiles


def _axis_tiles(length: int, tile_pixels: int | None, overlap_pixels: int, factor: int, min_size: int,
                stride: int, causal: bool) -> list[_Tile]:
    """Tiles of one axis of the stage-4 grid (``length`` cells, ``factor`` pixels per cell, upsample ``stride``)."""
    if tile_pixels is None:
        splits = [(0, length, 0, 0)]
    else:
        overlap = overlap_pixels // factor
        splits = _split(length, max(2, overlap + 1, tile_pixels // factor), overlap, min_size)
    scale = factor // stride  # pixels per stage-5 cell (patch size; 1 in time)
    tiles = []
    for start, stop, left, right in splits:
        first, last = start * stride, stop * stride
        if causal and stride == 2:  # the stride-2 pixel shuffle drops the clip's first frame only
            last -= 1
            first -= 1 if start else 0
        first, last = first * scale, last * scale
        weight = _linear_ramps(last - first, left * factor, right * factor, left_from_zero=False)
        tiles.append(_Tile(slice(start, stop), slice(first, last), weight))
    return tiles


def _cell_span(latent_frame: int, strides: tuple[int, ...]) -> tuple[int, int]:
    """Stage-4 input cells [start, stop) made from one latent frame (stride-2 stages drop the first frame)."""
    start, stop = latent_frame, latent_frame + 1
    for stride in strides:
        start, stop = start * stride, stop * stride
        if stride == 2:
            stop -= 1
            start -= 1 if start else 0
    return start, stop


def _resize(x: torch.Tensor, dim: int, size: int, symmetric: bool) -> torch.Tensor:
    """Pad (edge copies; symmetric: both ends, the odd one at the end) or crop (same split) axis ``dim``."""
    length = x.shape[dim]
    if length == size:
        return x
    need = abs(size - length)
    before = need // 2 if symmetric else 0
    if length > size:
        return x.narrow(dim, before, size)
    parts = [x.narrow(dim, 0, 1).expand(*x.shape[:dim], before, *x.shape[dim + 1:])] if before else []
    parts += [x, x.narrow(dim, length - 1, 1).expand(*x.shape[:dim], need - before, *x.shape[dim + 1:])]
    return torch.cat(parts, dim=dim)


@dataclass(frozen=True)
class _Plan:
    """The decode's geometry: padded latent, tiles per axis, content size and where it sits in the pixels."""

    latent: torch.Tensor  # padded, with ghost frames: (B, C, F' + ghost, H', W')
    cells: int  # stage-4 input frames of the content (no ghost)
    ghost_cells: int  # stage-4 input frames including the ghost frames
    tiles: tuple[list[_Tile], list[_Tile], list[_Tile]]
    work_pixels: tuple[int, int, int]  # (F, H, W) of the padded latent's video
    content_pixels: tuple[int, int, int]
    offsets: tuple[int, int]  # (rows, columns) of padding before the content


def _plan(decoder: DiffusionVideoDecoder, latent: torch.Tensor, tiling: TilingConfig | None) -> _Plan:
    config = decoder.config
    _, _, frames, height, width = latent.shape
    content = (1 + (frames - 1) * LATENT_TIME_SCALE, height * LATENT_SPACE_SCALE, width * LATENT_SPACE_SCALE)
    min_t, min_h, min_w = config.min_latent_size
    latent = _resize(latent, 2, max(frames, min_t), symmetric=False)
    latent = _resize(_resize(latent, 3, max(height, min_h), symmetric=True), 4, max(width, min_w), symmetric=True)
    offsets = ((max(height, min_h) - height) // 2 * LATENT_SPACE_SCALE, (max(width, min_w) - width) // 2
               * LATENT_SPACE_SCALE)
    _, _, frames, height, width = latent.shape
    strides = [s for s, _ in config.upsamples[:3]]
    cells = _cell_span(frames - 1, tuple(s[0] for s in strides))[1]
    ghost = config.trailing_pad_latent_frames
    ghosted = _resize(latent, 2, frames + ghost, symmetric=False)
    spatial = [height * strides[0][1] * strides[1][1] * strides[2][1], width * strides[0][2] * strides[1][2]
               * strides[2][2]]
    scale, stride, floor = config.pixel_scale, config.tile_stride, config.min_tile_size
    if tiling is not None:
        _check_overlaps(config.min_tile_overlap, tiling)
    temporal = tiling.temporal if tiling is not None else None
    spatial_tiling = tiling.spatial if tiling is not None else None
    t_tiles = _axis_tiles(cells, temporal.tile_size_in_frames if temporal else None,
                          temporal.tile_overlap_in_frames if temporal else 0, scale[0], floor[0], stride[0], True)
    hw_tiles = [
        _axis_tiles(length, spatial_tiling.tile_size_in_pixels if spatial_tiling else None,
                    spatial_tiling.tile_overlap_in_pixels if spatial_tiling else 0, scale[axis], floor[axis],
                    stride[axis], False)
        for axis, length in ((1, spatial[0]), (2, spatial[1]))
    ]
    work = (1 + (frames - 1) * LATENT_TIME_SCALE, height * LATENT_SPACE_SCALE, width * LATENT_SPACE_SCALE)
    return _Plan(ghosted, cells, _cell_span(frames + ghost - 1, tuple(s[0] for s in strides))[1],
                 (t_tiles, hw_tiles[0], hw_tiles[1]), work, content, offsets)


def _check_overlaps(minimum: tuple[int, int], tiling: TilingConfig) -> None:
    frames, pixels = minimum
    if tiling.temporal is not None and tiling.temporal.tile_overlap_in_frames < frames:
        raise ValueError(f"tile_overlap_in_frames={tiling.temporal.tile_overlap_in_frames!r}, expected at least "
                         f"{frames} for this diffusion decoder (the receptive halo of its last two stages)")
    if tiling.spatial is not None and tiling.spatial.tile_overlap_in_pixels < pixels:
        raise ValueError(f"tile_overlap_in_pixels={tiling.spatial.tile_overlap_in_pixels!r}, expected at least "
                         f"{pixels} for this diffusion decoder (the receptive halo of its last two stages)")


def _stage_4_input(decoder: DiffusionVideoDecoder, plan: _Plan, start: int, stop: int) -> torch.Tensor:
    """Stage-4 input cells [start, stop) (B, T, H4, W4, C4), from the latent frames they need plus the halo."""
    strides = tuple(s[0] for s, _ in decoder.config.upsamples[:3])
    frames = plan.latent.shape[2]
    if start == 0 and stop == plan.ghost_cells:
        return decoder.stages_1_to_3(plan.latent)
    spans = [_cell_span(index, strides) for index in range(frames)]
    first_needed = next(i for i, (_, end) in enumerate(spans) if end > start)
    last_needed = next(i for i, (_, end) in enumerate(spans) if end >= stop)
    halo = decoder.config.stage_3_halo
    first, last = max(0, first_needed - halo), min(frames, last_needed + halo + 1)
    features = decoder.stages_1_to_3(plan.latent[:, :, first:last], drop_leading_frame=first == 0)
    offset = spans[first][0]
    return features[:, start - offset : stop - offset]


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    randn_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, dtype=torch.float32, device=randn_device)


def _decode_tile(decoder: DiffusionVideoDecoder, features: torch.Tensor, noise: torch.Tensor, origin: bool,
                 trailing: bool, steps: int | None) -> torch.Tensor:
    context = decoder.stage_4(features, drop_leading_frame=origin)
    if trailing and decoder.config.trailing_pad_latent_frames:
        ghost = decoder.config.trailing_pad_latent_frames * LATENT_TIME_SCALE
        keep = min(context.shape[1], max(context.shape[1] - ghost, 1, decoder.config.stage5_kernel[0]))
        context = context[:, :keep]
    return decoder.denoise(context, noise.to(device=features.device, dtype=features.dtype), steps)


def _decode_group(decoder: DiffusionVideoDecoder, plan: _Plan, t: _Tile, canvas: torch.Tensor | None,
                  generator: torch.Generator | None, steps: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every spatial tile of one temporal tile: the weighted sum (B, 3, n, H, W) and the weights (1, 1, n, H, W)."""
    config = decoder.config
    trailing = t.cells.stop == plan.cells
    features = _stage_4_input(decoder, plan, t.cells.start, plan.ghost_cells if trailing else t.cells.stop)
    batch, frames = plan.latent.shape[0], t.pixels.stop - t.pixels.start
    total = torch.zeros((batch, config.out_channels, frames, *plan.work_pixels[1:]), device=features.device)
    weights = torch.zeros((1, 1, frames, *plan.work_pixels[1:]), device=features.device)
    origin, stride = t.cells.start == 0, config.tile_stride[0]
    stage5_frames = (t.cells.stop - t.cells.start) * stride - (1 if origin and stride == 2 else 0)
    if trailing:
        stage5_frames = max(stage5_frames, config.stage5_kernel[0])
    for h, w in itertools.product(*plan.tiles[1:]):
        shape = (batch, config.out_channels, stage5_frames, h.pixels.stop - h.pixels.start,
                 w.pixels.stop - w.pixels.start)
        if canvas is None:
            noise = _noise(shape, generator, features.device)
        else:
            noise = _resize(canvas[:, :, t.pixels, h.pixels, w.pixels], 2, stage5_frames, symmetric=False)
        pixels = _decode_tile(decoder, features[:, :, h.cells, w.cells], noise, origin, trailing, steps)
        weight = (t.weight[:, None, None] * h.weight[None, :, None] * w.weight[None, None, :]).to(total.device)
        total[:, :, :, h.pixels, w.pixels] += pixels[:, :, :frames].float() * weight
        weights[:, :, :, h.pixels, w.pixels] += weight
    return total, weights


def _crop(plan: _Plan, start: int, chunk: torch.Tensor) -> torch.Tensor | None:
    frames = min(chunk.shape[2], plan.content_pixels[0] - start)
    if frames <= 0:
        return None
    (rows, columns), (_, height, width) = plan.offsets, plan.content_pixels
    return chunk[:, :, :frames, rows : rows + height, columns : columns + width]


def iter_diffusion_decode(
    decoder: DiffusionVideoDecoder,
    latent: torch.Tensor,
    tiling: TilingConfig | None = None,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    noise_canvas: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Decode a normalised latent (B, C, F', H', W') with ``decoder``, yielding ``(first_frame, frames)`` chunks
    (B, 3, n, 32 H', 32 W') float32 in order, together covering all 1 + 8 (F' - 1) frames once.

    ``tiling`` tiles stages 4-5 on the stage-4 grid (sizes used as given on both spatial axes; overlaps at
    least ``config.min_tile_overlap``); ``steps`` overrides ``default_num_inference_steps``. A multi-step
    decode draws its noise canvas (B, 3, F, H, W) float32 from ``generator`` first, into ``noise_canvas`` when
    given (`diffusion_decode` passes its float32 output there), so it costs no memory beyond the output.
    """
    config = decoder.config
    if latent.ndim != 5 or latent.shape[1] != config.in_channels:
        raise ValueError(f"latent.shape={tuple(latent.shape)!r}, expected (B, {config.in_channels}, F, H, W)")
    parameter = next(decoder.parameters())
    plan = _plan(decoder, latent.to(device=parameter.device, dtype=parameter.dtype), tiling)
    canvas = None
    if (steps or config.default_num_inference_steps) > 1 or config.model_output_type != "x0":
        shape = (latent.shape[0], config.out_channels, *plan.work_pixels)
        canvas = noise_canvas if noise_canvas is not None and tuple(noise_canvas.shape) == shape else None
        canvas = canvas.normal_(generator=generator) if canvas is not None else _noise(shape, generator,
                                                                                        parameter.device)
    pending: tuple[int, torch.Tensor, torch.Tensor] | None = None
    for t in plan.tiles[0]:
        total, weights = _decode_group(decoder, plan, t, canvas, generator, steps)
        start = t.pixels.start
        if pending is not None:
            previous_start, previous_total, previous_weights = pending
            done = start - previous_start
            shared = previous_total.shape[2] - done
            if shared > 0:
                total[:, :, :shared] += previous_total[:, :, done:]
                weights[:, :, :shared] += previous_weights[:, :, done:]
            chunk = _crop(plan, previous_start, previous_total[:, :, :done] / previous_weights[:, :, :done].clamp(
                min=_WEIGHT_FLOOR))
            if chunk is not None and done > 0:
                yield previous_start, chunk
            del previous_total, previous_weights
        pending = (start, total, weights)
    if pending is not None:
        start, total, weights = pending
        chunk = _crop(plan, start, total / weights.clamp(min=_WEIGHT_FLOOR))
        if chunk is not None:
            yield start, chunk


def diffusion_decode(
    decoder: DiffusionVideoDecoder,
    latent: torch.Tensor,
    tiling: TilingConfig | None = None,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    steps: int | None = None,
) -> torch.Tensor:
    """Decode latent (B, C, F', H', W') into video (B, 3, F, H, W), writing chunks into ``out`` as they finish.

    ``out`` (any device / dtype; allocated in the latent's dtype when not given) also holds a multi-step
    decode's noise canvas when it is float32 on the generator's device: then the working memory besides it does
    not grow with the clip length when ``tiling`` has temporal tiles. ``on_chunk(frames_done, frames_total)``
    runs after each finished chunk (progress; raising there stops the decode).
    """
    b, _, frames, height, width = latent.shape
    shape = (b, decoder.config.out_channels, 1 + (frames - 1) * LATENT_TIME_SCALE, height * LATENT_SPACE_SCALE,
             width * LATENT_SPACE_SCALE)
    if out is None:
        out = latent.new_empty(shape)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out.shape={tuple(out.shape)!r}, expected {shape!r}")
    randn_device = generator.device if generator is not None else next(decoder.parameters()).device
    usable = out.dtype == torch.float32 and out.device == torch.device(randn_device) and out.is_contiguous()
    for start, chunk in iter_diffusion_decode(decoder, latent, tiling, generator, steps, out if usable else None):
        out[:, :, start : start + chunk.shape[2]] = chunk.to(out)
        if on_chunk is not None:
            on_chunk(start + chunk.shape[2], shape[2])
    return out
