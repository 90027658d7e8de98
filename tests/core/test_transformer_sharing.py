"""Shared block prefixes of a guided batch (positive, negative, STG, isolated passes in one call): each sample
equals ltx-core 1.0.0 run on that pass alone, and the RoPE cache follows changed positions."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from support import tiny_configs as tc
from transformer_pairs import reference_and_ours

from aiprod.aiprod_core.transformer import (
    AVTransformer,
    ModalityInput,
    Perturbations,
    SamplePerturbation,
)
from aiprod.aiprod_core.transformer.sharing import SharingPlan

VIDEO_TOKENS, AUDIO_TOKENS, CONTEXT_TOKENS = 12, 5, 7
STG_BLOCK = 1  # the tiny model has 2 blocks: the STG pass shares block 0 with the positive pass


@pytest.fixture(scope="module", params=tc.GENERATIONS)
def models(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module, AVTransformer]:
    reference, ours = reference_and_ours(request.param, seed=5)
    return request.param, reference, ours


def _stream(gen: torch.Generator, tokens: int, width: int, n_dims: int) -> dict[str, torch.Tensor]:
    starts = torch.rand(1, n_dims, tokens, 1, generator=gen) * 4
    timesteps = torch.full((1, tokens), 0.6)
    timesteps[:, :2] = 0.0  # two conditioning tokens
    return {
        "latent": torch.randn(1, tokens, 128, generator=gen),
        "sigma": torch.full((1,), 0.6),
        "timesteps": timesteps,
        "positions": torch.cat([starts, starts + 1], dim=-1),
        "context": torch.randn(1, CONTEXT_TOKENS, width, generator=gen),
    }


def _inputs(generation: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    ltx2 = generation == tc.LTX2
    video_width = tc.CAPTION_CHANNELS if ltx2 else tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM
    audio_width = tc.CAPTION_CHANNELS if ltx2 else tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM
    video = _stream(gen, VIDEO_TOKENS, video_width, 3)
    audio = _stream(gen, AUDIO_TOKENS, audio_width, 1)
    negatives = (torch.randn(1, CONTEXT_TOKENS, w, generator=gen) for w in (video_width, audio_width))
    return video, audio, *negatives


PASSES: list[tuple[SamplePerturbation, list[tuple[str, list[int] | None]], bool]] = [
    (SamplePerturbation(), [], False),  # positive
    (SamplePerturbation(), [], True),  # negative (other context)
    (
        SamplePerturbation.stg(video_blocks=[STG_BLOCK], audio_blocks=[STG_BLOCK]),
        [("SKIP_VIDEO_SELF_ATTN", [STG_BLOCK]), ("SKIP_AUDIO_SELF_ATTN", [STG_BLOCK])],
        False,
    ),
    (
        SamplePerturbation.isolated_modalities(),
        [("SKIP_A2V_CROSS_ATTN", None), ("SKIP_V2A_CROSS_ATTN", None)],
        False,
    ),
]


def _reference_run(reference: torch.nn.Module, video: dict[str, Any], audio: dict[str, Any], kinds: list) -> Any:
    from ltx_core.guidance.perturbations import (
        BatchedPerturbationConfig,
        Perturbation,
        PerturbationConfig,
        PerturbationType,
    )
    from ltx_core.model.transformer.modality import Modality

    config = BatchedPerturbationConfig([PerturbationConfig([Perturbation(PerturbationType[t], b) for t, b in kinds])])
    with torch.no_grad():
        return reference(Modality(**video), Modality(**audio), config)


def _batched(stream: dict[str, torch.Tensor], negative: torch.Tensor) -> ModalityInput:
    rows = {k: torch.cat([v] * len(PASSES)) for k, v in stream.items()}
    rows["context"] = torch.cat([negative if is_negative else stream["context"] for _, _, is_negative in PASSES])
    return ModalityInput(**rows)


@pytest.mark.oracle
def test_guided_batch_with_shared_prefix_matches_reference(models) -> None:
    generation, reference, ours = models
    video, audio, negative_video, negative_audio = _inputs(generation)
    batched_video, batched_audio = _batched(video, negative_video), _batched(audio, negative_audio)
    perturbations = Perturbations(tuple(sample for sample, _, _ in PASSES))
    plan = SharingPlan.find((batched_video, batched_audio), perturbations, len(ours.transformer_blocks))
    assert plan is not None and plan.leaders == (None, None, 0, 0) and plan.split_at[2] == STG_BLOCK
    with torch.no_grad():
        got = ours(batched_video, batched_audio, perturbations)
    for index, (_, kinds, is_negative) in enumerate(PASSES):
        v = {**video, "context": negative_video} if is_negative else video
        a = {**audio, "context": negative_audio} if is_negative else audio
        ref_video, ref_audio = _reference_run(reference, v, a, kinds)
        rows = slice(index, index + 1)
        for name, mine, ref in (("video", got.video[rows], ref_video), ("audio", got.audio[rows], ref_audio)):
            bound = 1e-5 * max(1.0, ref.abs().max().item())
            diff = (mine - ref).abs().max().item()
            assert diff <= bound, f"{generation} pass {index} {name}: max|ours - ref| = {diff:.3e} > {bound:.3e}"
    stg_moved = (got.video[2] - got.video[0]).abs().max()
    assert stg_moved > 1e-3  # the STG sample did split off


@pytest.mark.oracle
def test_rope_cache_follows_positions(models) -> None:
    """A second call with other positions must not reuse the first call's rotary tables."""
    generation, reference, ours = models
    video, audio, _, _ = _inputs(generation)
    with torch.no_grad():
        ours(ModalityInput(**video), ModalityInput(**audio))
        moved = {**video, "positions": video["positions"] * 0.5}
        got = ours(ModalityInput(**moved), ModalityInput(**audio))
    ref_video, _ = _reference_run(reference, moved, audio, [])
    bound = 1e-5 * max(1.0, ref_video.abs().max().item())
    assert (got.video - ref_video).abs().max().item() <= bound
