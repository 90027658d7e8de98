"""Guided x0 prediction: the passes a step needs, batched into one transformer call, split and combined.

``Guidance`` holds the prompts and one guider per stream. For a step it lists the passes the enabled guidance
terms read (POSITIVE always; NEGATIVE, PERTURBED, ISOLATED as needed), concatenates them along the batch with a
``Perturbations`` entry per sample, runs the x0 model once per group of passes that can share a call (same
stream enable flags and context shapes), splits the outputs back per pass and lets each stream's guider combine
them. A stream whose guider skips the step reuses its previous guided prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..transformer import EVERY_BLOCK, ModalityInput, Perturbations, SamplePerturbation
from .guidance import Pass, SigmaBinnedGuider, StreamGuider
from .state import LatentState
from .steps import to_x0

__all__ = ["Guidance", "Prompt", "X0Denoiser", "X0Model"]

Prediction = tuple[torch.Tensor | None, torch.Tensor | None]  # video (B, T_v, C_v), audio (B, T_a, C_a)


class X0Model(Protocol):
    """x0 predictions of the given streams (a stream given as None comes back as None)."""

    def __call__(
        self, video: ModalityInput | None, audio: ModalityInput | None, perturbations: Perturbations | None
    ) -> Prediction: ...


class X0Denoiser:
    """Turns a velocity transformer into an x0 model: x0 = latent - velocity x timesteps, per token.

    Inputs as ``AVTransformer``: streams of (B, T, C) tokens with (B, T) timesteps; returns x0 of the same shapes.
    """

    def __init__(self, velocity_model: Callable[..., tuple[torch.Tensor | None, torch.Tensor | None]]) -> None:
        self.velocity_model = velocity_model

    def __call__(
        self, video: ModalityInput | None, audio: ModalityInput | None, perturbations: Perturbations | None = None
    ) -> Prediction:
        video_v, audio_v = self.velocity_model(video, audio, perturbations)
        return _x0(video, video_v), _x0(audio, audio_v)


def _x0(stream: ModalityInput | None, velocity: torch.Tensor | None) -> torch.Tensor | None:
    if stream is None or velocity is None:
        return None
    timesteps = stream.timesteps if stream.timesteps.ndim == 3 else stream.timesteps.unsqueeze(-1)  # (B, T, 1)
    return to_x0(stream.latent, velocity, timesteps)


@dataclass(frozen=True)
class Prompt:
    """Text conditioning of both streams: contexts (B, S, D) and optional (B, S) context masks."""

    video: torch.Tensor | None
    audio: torch.Tensor | None = None
    video_mask: torch.Tensor | None = None
    audio_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class _PassSpec:
    kind: Pass
    prompt: Prompt
    perturbation: SamplePerturbation
    enabled: tuple[bool, bool]  # video, audio


Guider = StreamGuider | SigmaBinnedGuider


@dataclass(frozen=True)
class Guidance:
    """Prompts plus one guider per stream (default: no guidance, a single positive pass).

    ``max_passes_per_call`` caps how many passes share one transformer call (None: as many as can).
    """

    positive: Prompt
    negative: Prompt | None = None
    video: Guider = field(default_factory=StreamGuider)
    audio: Guider = field(default_factory=StreamGuider)
    max_passes_per_call: int | None = None

    def __post_init__(self) -> None:
        if self.max_passes_per_call is not None and self.max_passes_per_call < 1:
            raise ValueError(f"max_passes_per_call={self.max_passes_per_call!r}, expected None or >= 1")

    def predict(
        self,
        model: X0Model,
        video: LatentState | None,
        audio: LatentState | None,
        sigma: torch.Tensor,
        step_index: int,
        previous: Prediction = (None, None),
    ) -> Prediction:
        """Guided x0 of both streams at ``sigma`` (before the clean-token blend)."""
        sigma_value = float(sigma)
        guiders = (self.video.for_sigma(sigma_value), self.audio.for_sigma(sigma_value))
        present = (video is not None, audio is not None)
        skipped = tuple(p and g.skips(step_index) for p, g in zip(present, guiders, strict=True))
        if all(s or not p for s, p in zip(skipped, present, strict=True)):
            return previous
        specs = self._passes(guiders, present, skipped)
        outputs = _run_passes(model, specs, video, audio, sigma, self.max_passes_per_call)
        result = []
        for index, (guider, is_present, is_skipped) in enumerate(zip(guiders, present, skipped, strict=True)):
            if not is_present:
                result.append(None)
            elif is_skipped:
                result.append(previous[index])
            else:
                stream_outputs = {kind: out[index] for kind, out in outputs.items()}
                result.append(guider.combine(stream_outputs[Pass.POSITIVE], stream_outputs))
        return result[0], result[1]

    def _passes(
        self, guiders: tuple[StreamGuider, StreamGuider], present: tuple[bool, bool], skipped: tuple[bool, ...]
    ) -> list[_PassSpec]:
        needed = set().union(*(g.needs() for g, p, s in zip(guiders, present, skipped, strict=True) if p and not s))
        positive_flags = (not skipped[0], not skipped[1])
        specs = [_PassSpec(Pass.POSITIVE, self.positive, SamplePerturbation(), positive_flags)]
        if Pass.NEGATIVE in needed:
            if self.negative is None:
                raise ValueError("negative=None, expected a negative prompt for CFG guidance")
            # Upstream runs the negative pass with both streams enabled even on a stream's skipped step.
            specs.append(_PassSpec(Pass.NEGATIVE, self.negative, SamplePerturbation(), (True, True)))
        if Pass.PERTURBED in needed:
            specs.append(_PassSpec(Pass.PERTURBED, self.positive, _stg_perturbation(guiders, present), positive_flags))
        if Pass.ISOLATED in needed:
            specs.append(
                _PassSpec(Pass.ISOLATED, self.positive, SamplePerturbation.isolated_modalities(), positive_flags)
            )
        return specs


def _stg_perturbation(guiders: tuple[StreamGuider, StreamGuider], present: tuple[bool, bool]) -> SamplePerturbation:
    blocks = []
    for guider, is_present in zip(guiders, present, strict=True):
        chosen = guider.stg_blocks() if is_present and Pass.PERTURBED in guider.needs() else ()
        blocks.append(EVERY_BLOCK if chosen is None else frozenset(chosen))
    return SamplePerturbation(video_self_attention=blocks[0], audio_self_attention=blocks[1])


def _group_key(spec: _PassSpec) -> tuple[object, ...]:
    shapes = tuple(None if c is None else tuple(c.shape) for c in (spec.prompt.video, spec.prompt.audio))
    masks = (spec.prompt.video_mask is not None, spec.prompt.audio_mask is not None)
    return (spec.enabled, shapes, masks)


def _run_passes(
    model: X0Model,
    specs: list[_PassSpec],
    video: LatentState | None,
    audio: LatentState | None,
    sigma: torch.Tensor,
    max_passes: int | None,
) -> dict[Pass, Prediction]:
    """Runs every pass, batching the passes that can share a call; returns each pass's (video, audio) x0."""
    groups: dict[tuple[object, ...], list[_PassSpec]] = {}
    for spec in specs:
        groups.setdefault(_group_key(spec), []).append(spec)
    calls = [g[i : i + (max_passes or len(g))] for g in groups.values() for i in range(0, len(g), max_passes or len(g))]
    outputs: dict[Pass, Prediction] = {}
    for group in calls:
        enabled = group[0].enabled
        perturbations = Perturbations(tuple(s.perturbation for s in group for _ in range(_batch(video, audio))))
        video_in = _batched_input(
            video, [s.prompt.video for s in group], [s.prompt.video_mask for s in group], sigma, enabled[0]
        )
        audio_in = _batched_input(
            audio, [s.prompt.audio for s in group], [s.prompt.audio_mask for s in group], sigma, enabled[1]
        )
        video_x0, audio_x0 = model(video_in, audio_in, perturbations)
        video_parts = _split(video_x0, len(group))
        audio_parts = _split(audio_x0, len(group))
        for index, spec in enumerate(group):
            outputs[spec.kind] = (video_parts[index], audio_parts[index])
    return outputs


def _batch(video: LatentState | None, audio: LatentState | None) -> int:
    return (video if video is not None else audio).latent.shape[0]  # type: ignore[union-attr]


def _split(x: torch.Tensor | None, parts: int) -> list[torch.Tensor | None]:
    return [None] * parts if x is None else list(x.chunk(parts, dim=0))


def _repeat(x: torch.Tensor | None, times: int) -> torch.Tensor | None:
    """``times`` copies of x along the batch; a batch-1 x becomes a broadcast view (no per-step allocation)."""
    if x is None or times == 1:
        return x
    if x.shape[0] == 1:
        return x.expand(times, *x.shape[1:])
    return torch.cat([x] * times, dim=0)


def _batched_input(
    state: LatentState | None,
    contexts: list[torch.Tensor | None],
    masks: list[torch.Tensor | None],
    sigma: torch.Tensor,
    enabled: bool,
) -> ModalityInput | None:
    """One ModalityInput holding ``len(contexts)`` copies of the stream, each with its own context."""
    if state is None:
        return None
    if any(c is None for c in contexts):
        raise ValueError("a prompt has no context for a stream being denoised")
    copies = len(contexts)
    batch = state.latent.shape[0]
    sigma = torch.zeros_like(sigma) if state.frozen else sigma  # a frozen stream is clean: sigma 0 everywhere
    return ModalityInput(
        latent=_repeat(state.latent, copies),
        sigma=sigma.reshape(1).to(torch.float32).expand(batch * copies),
        timesteps=_repeat(state.timesteps(sigma), copies),
        positions=_repeat(state.positions, copies),
        context=torch.cat(contexts, dim=0),  # type: ignore[arg-type]
        context_mask=None if masks[0] is None else torch.cat(masks, dim=0),  # type: ignore[arg-type]
        attention_mask=_repeat(state.attention_mask, copies),
        enabled=enabled,
        keyframes_mask=_repeat(state.keyframes_mask, copies),
    )
