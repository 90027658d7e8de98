"""The DFR canvas: the keyframe segment grid of stage 1 and the keyframe-seam tiles of each temporal round.

All positions are pixel frames unless named latent. The grid pads ``frames - 1`` up to whole segments of 24 or
32 pixel frames (3 or 4 latent frames of the x8 VAE), whichever pads least (ties: the longer); the keyframe slots
sit on the segment ends ``S, 2 S, ..., N' - 1`` (frame 0 is already a one-pixel-frame latent). A temporal round
splits its canvas on the seams (the carried keyframes) into tiles; each tile but the first reaches one segment
plus the seam cell back (its run-up, dropped when stitching) and invents a slot in the middle of each segment.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "SEGMENT_LATENT_FRAMES",
    "Canvas",
    "Interval",
    "TemporalTile",
    "choose_segment",
    "pixel_to_latent",
    "resolve_canvas",
    "round_tiles",
    "split_at_seams",
    "temporal_tiles",
]

SEGMENT_LATENT_FRAMES = (3, 4)  # candidate segment lengths in latent frames (ltx-pipelines 1.2.0 dfr_layout)


class Canvas(NamedTuple):
    """Stage 1's padded frame count, its segment length and the keyframe slot positions (pixel frames)."""

    frames: int
    segment: int
    slots: tuple[int, ...]


class Interval(NamedTuple):
    """A half-open latent-frame range; ``run_up`` cells at its start are context only (dropped when stitching)."""

    start: int
    end: int
    run_up: int


class TemporalTile(NamedTuple):
    """One temporal-round tile: its latent interval, inclusive pixel bounds, the seam keyframes inside it
    (anchors, pinned) and the mid-segment slot positions it generates (both in the round's pixel frames)."""

    interval: Interval
    pixel_start: int
    pixel_end: int
    anchors: tuple[int, ...]
    slots: tuple[int, ...]


def choose_segment(content_frames: int, time_scale: int = 8) -> int:
    """The segment length (pixel frames) that pads ``content_frames`` (= frames - 1) least; ties keep the longer."""
    candidates = [c * time_scale for c in SEGMENT_LATENT_FRAMES]
    return min(candidates, key=lambda s: ((s - content_frames % s) % s, -s))


def resolve_canvas(frames: int, time_scale: int = 8) -> Canvas:
    """Stage 1's canvas for a request of ``frames`` (8k + 1, at least 9) pixel frames."""
    content = frames - 1
    if content % time_scale or content < time_scale:
        raise ValueError(f"frames={frames!r}, expected {time_scale}k + 1 with k >= 1 (9, 17, 25, ...)")
    segment = choose_segment(content, time_scale)
    padded = -(-content // segment) * segment
    return Canvas(padded + 1, segment, tuple(range(segment, padded + 1, segment)))


def pixel_to_latent(pixel_frame: int, time_scale: int = 8) -> int:
    """The latent index of a pixel frame on a latent border."""
    if pixel_frame < 0 or pixel_frame % time_scale:
        raise ValueError(f"pixel_frame={pixel_frame!r}, expected a multiple of {time_scale} (a latent border)")
    return pixel_frame // time_scale


def split_at_seams(seams: Sequence[int], tiles: int, run_up: int, size: int) -> list[Interval]:
    """Cut ``size`` latent cells on ``seams`` (0, ..., size - 1) into at most ``tiles`` runs of whole segments
    (leading tiles take the remainder); each later tile starts ``run_up`` cells before the cell after its seam."""
    seams = [int(s) for s in seams]
    if len(seams) < 2 or seams[0] != 0 or seams[-1] != size - 1 or any(b <= a for a, b in itertools.pairwise(seams)):
        raise ValueError(f"seams={seams!r}, expected strictly increasing from 0 to {size - 1}")
    if tiles < 1 or run_up < 0:
        raise ValueError(f"tiles={tiles!r}, run_up={run_up!r}, expected tiles >= 1 and run_up >= 0")
    segments = len(seams) - 1
    tiles = min(tiles, segments)
    base, extra = divmod(segments, tiles)
    intervals, cursor = [], 0
    for index in range(tiles):
        resume = seams[cursor] + 1
        start = 0 if index == 0 else max(0, resume - run_up)
        cursor += base + (1 if index < extra else 0)
        intervals.append(Interval(start, seams[cursor] + 1, 0 if index == 0 else resume - start))
    return intervals


def temporal_tiles(seams: Sequence[int], frames: int, tiles: int, time_scale: int = 8) -> list[TemporalTile]:
    """The tiles of one temporal round whose canvas has ``frames`` pixel frames and keyframe ``seams`` (pixel,
    strictly increasing, the last one ``frames - 1``)."""
    cells = [0, *(pixel_to_latent(s, time_scale) for s in seams)]
    result = []
    for interval in split_at_seams(cells, tiles, cells[1] + 1, (frames - 1) // time_scale + 1):
        first, last = interval.start * time_scale, (interval.end - 1) * time_scale
        anchors = tuple(s for s in seams if first <= s <= last)
        marks = [first, *(s for s in seams if first < s <= last)]
        slots = tuple((a + b) // 2 for a, b in itertools.pairwise(marks))
        result.append(TemporalTile(interval, first, last, anchors, slots))
    return result


def round_tiles(frames: int, rounds: int, time_scale: int = 8) -> list[list[TemporalTile]]:
    """The tiles of each of ``rounds`` temporal rounds after a request of ``frames``: each round doubles the
    canvas, its seams are the previous seams doubled and the slots every tile generated."""
    canvas = resolve_canvas(frames, time_scale)
    seams, count, result = list(canvas.slots), canvas.frames, []
    for index in range(1, rounds + 1):
        count, seams = 2 * (count - 1) + 1, [2 * s for s in seams]
        tiles = temporal_tiles(seams, count, 2**index, time_scale)
        result.append(tiles)
        seams = sorted({*seams, *(s for tile in tiles for s in tile.slots)})
    return result
