"""LTX-2.5's keyframe marker: the first latent frame, generated keyframe slots (the DFR pipeline) and the
single-pixel-frame keyframes DFR pins.

- ``mark_first_frame``: the initial keyframes mask of every video state sampled by a transformer with the learned
  keyframe embedding (``use_keyframes_abs_pos_embedding``): 1 on the target's first latent frame, which the causal
  VAE gives a single pixel frame, 0 elsewhere (ltx-core 1.2.0 ``VideoLatentTools.create_initial_state``, for every
  pipeline and stage). Conditioning items keep it: replaced frames stay as they are, appended tokens are unmarked.
- ``GeneratedKeyframeSlots``: appends one latent frame's worth of tokens per target pixel frame, fully denoised
  (denoise strength 1, clean value 0), seeded from zeros or ``initial`` latents. Each slot's time span is exactly
  one pixel frame, ``[t, t + 1) / fps``, and its tokens are marked in ``keyframes_mask`` so the transformer adds
  its learned keyframe embedding.
- ``PinnedKeyframe``: a *given* single-frame latent appended at pixel frame ``t`` with the same one-frame span,
  held at ``strength`` and never marked (the temporal rounds' anchors).

The slots must come last among the appended tokens of a state so a pipeline can read them back from the final
state's tail (`slot_tokens`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch

from ..sampling.patchify import VideoLayout, patchify_video, unpatchify_video, video_positions
from ..sampling.state import LatentState, VideoLatentShape
from .items import ConditioningError, _append
from .masks import append_attention_strength

__all__ = ["GeneratedKeyframeSlots", "PinnedKeyframe", "mark_first_frame", "single_frame_positions", "slot_tokens"]


def single_frame_positions(layout: VideoLayout, pixel_frame: int, batch: int, device: torch.device | str
                           ) -> torch.Tensor:  # fmt: skip
    """(B, 3, H*W, 2) float32 positions of one latent frame at the layout's spatial grid whose time span is the
    single pixel frame ``[pixel_frame, pixel_frame + 1) / fps`` (no causal first-frame fix)."""
    shape = VideoLatentShape(batch, layout.shape.channels, 1, layout.shape.height, layout.shape.width)
    positions = video_positions(shape, layout.fps, scale=layout.scale, causal_first_frame=False, device=device)
    start = float(pixel_frame) / float(layout.fps)
    positions[:, 0, :, 0] = start
    positions[:, 0, :, 1] = (float(pixel_frame) + 1.0) / float(layout.fps)
    return positions


def mark_first_frame(state: LatentState, layout: VideoLayout) -> LatentState:
    """``state`` with ``keyframes_mask`` (B, T, 1) set to 1 on the target's first latent frame and 0 on every other
    token (the reference's initial keyframes mask; any appended tokens stay unmarked)."""
    per_frame = layout.shape.height * layout.shape.width
    marker = torch.zeros((*state.latent.shape[:2], 1), device=state.latent.device, dtype=state.denoise_mask.dtype)
    marker[:, : min(per_frame, state.tokens)] = 1.0
    return replace(state, keyframes_mask=marker)


@dataclass(frozen=True)
class GeneratedKeyframeSlots:
    """Generated keyframe slots at pixel frames ``pixel_frames`` (strictly increasing, inside the target).

    ``initial``: optional (B, C, K, H, W) latents written into the slot tokens before noising (K slots, the
    target's latent height and width); zeros otherwise.
    """

    pixel_frames: tuple[int, ...]
    initial: torch.Tensor | None = None

    def __post_init__(self) -> None:
        frames = tuple(int(f) for f in self.pixel_frames)
        if not frames:
            raise ConditioningError("pixel_frames=(), expected at least one keyframe slot")
        if frames[0] < 0 or any(b <= a for a, b in itertools.pairwise(frames)):
            raise ConditioningError(f"pixel_frames={frames!r}, expected strictly increasing indices >= 0")
        if self.initial is not None and (self.initial.ndim != 5 or self.initial.shape[2] != len(frames)):
            raise ConditioningError(f"initial shape {tuple(self.initial.shape)}, expected (B, C, {len(frames)}, H, W)")
        object.__setattr__(self, "pixel_frames", frames)

    def apply(self, state: LatentState, layout: VideoLayout) -> LatentState:
        target = layout.shape
        pixel_count = (target.frames - 1) * layout.scale.time + 1
        if self.pixel_frames[-1] >= pixel_count:
            raise ConditioningError(f"keyframe slot at pixel frame {self.pixel_frames[-1]} is outside the target's "
                                    f"{pixel_count} frames")
        batch, device, dtype = state.latent.shape[0], state.latent.device, state.latent.dtype
        per_slot = target.height * target.width
        if self.initial is None:
            tokens = torch.zeros((batch, per_slot * len(self.pixel_frames), state.latent.shape[2]), device=device,
                                 dtype=dtype)  # fmt: skip
        else:
            initial = self.initial.to(device, dtype)
            if (initial.shape[0], *initial.shape[3:]) != (batch, target.height, target.width):
                raise ConditioningError(f"initial shape {tuple(initial.shape)} does not fit the latent grid "
                                        f"(B={batch}, H={target.height}, W={target.width})")
            tokens = torch.cat([patchify_video(initial[:, :, k : k + 1]) for k in range(initial.shape[2])], dim=1)
        positions = torch.cat([single_frame_positions(layout, f, batch, device) for f in self.pixel_frames], dim=2)
        marker = state.keyframes_mask  # without one no token was marked yet (ltx-core's extend_keyframes_mask)
        if marker is None:
            marker = torch.zeros_like(state.denoise_mask)
        ones = torch.ones((batch, tokens.shape[1], 1), device=device, dtype=state.denoise_mask.dtype)
        attention = state.attention_mask
        if attention is not None:
            attention = append_attention_strength(attention, state.tokens, layout.tokens, ones[..., 0].to(dtype))
        return replace(
            state,
            latent=torch.cat([state.latent, tokens], dim=1),
            denoise_mask=torch.cat([state.denoise_mask, ones], dim=1),
            positions=torch.cat([state.positions, positions.to(state.positions.dtype)], dim=2),
            clean_latent=torch.cat([state.clean_latent, torch.zeros_like(tokens)], dim=1),
            attention_mask=attention,
            keyframes_mask=torch.cat([marker, ones], dim=1),
        )


@dataclass(frozen=True)
class PinnedKeyframe:
    """A given single-frame latent (B, C, 1, H, W) appended at pixel frame ``pixel_frame`` with a one-pixel-frame
    time span, held at ``strength`` (its denoise strength is 1 - strength); not marked as a keyframe slot."""

    latent: torch.Tensor
    pixel_frame: int
    strength: float

    def apply(self, state: LatentState, layout: VideoLayout) -> LatentState:
        if self.latent.ndim != 5 or self.latent.shape[2] != 1:
            raise ConditioningError(f"pinned keyframe shape {tuple(self.latent.shape)}, expected (B, C, 1, H, W)")
        positions = single_frame_positions(layout, self.pixel_frame, self.latent.shape[0], self.latent.device)
        return _append(state, layout, self.latent, positions.to(state.positions.dtype), self.strength)


def slot_tokens(state: LatentState, layout: VideoLayout, slots: int) -> torch.Tensor:
    """The last ``slots`` latent frames' worth of tokens of ``state`` as (B, C, K, H, W) slot latents."""
    per_slot = layout.shape.height * layout.shape.width
    tokens = state.latent[:, state.tokens - per_slot * slots :]
    batch, channels = tokens.shape[0], tokens.shape[2]
    frames = [unpatchify_video(tokens[:, i * per_slot : (i + 1) * per_slot],
                               VideoLatentShape(batch, channels, 1, layout.shape.height, layout.shape.width))
              for i in range(slots)]  # fmt: skip
    return torch.cat(frames, dim=2)
