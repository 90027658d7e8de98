"""Audio+video transformer: parity with ltx-core 1.0.0 (both generations, perturbations, per-sample batches,
video-only), bf16, meta build + strict load, config checks."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch
from support import tiny_configs as tc
from support.tiny_checkpoints import build_reference_module, init_module

from aiprod.aiprod_core.transformer import (
    EVERY_BLOCK,
    AVTransformer,
    ModalityInput,
    Perturbations,
    SamplePerturbation,
    TransformerConfig,
)

PREFIX = "model.diffusion_model."
VIDEO_GRID = (2, 2, 3)  # latent (F, H, W) -> 12 video tokens
AUDIO_TOKENS = 5
CONTEXT_TOKENS = 7
FPS = 24.0

# name -> (our per-sample perturbation, reference perturbations as (type name, blocks or None))
PERTURBATIONS: dict[str, tuple[SamplePerturbation, list[tuple[str, list[int] | None]]]] = {
    "none": (SamplePerturbation(), []),
    "stg_video_block1": (SamplePerturbation.stg(video_blocks=[1]), [("SKIP_VIDEO_SELF_ATTN", [1])]),
    "stg_audio_block0": (SamplePerturbation.stg(audio_blocks=[0]), [("SKIP_AUDIO_SELF_ATTN", [0])]),
    "stg_both_every_block": (
        SamplePerturbation(video_self_attention=EVERY_BLOCK, audio_self_attention=EVERY_BLOCK),
        [("SKIP_VIDEO_SELF_ATTN", None), ("SKIP_AUDIO_SELF_ATTN", None)],
    ),
    "isolated_modalities": (
        SamplePerturbation.isolated_modalities(),
        [("SKIP_A2V_CROSS_ATTN", None), ("SKIP_V2A_CROSS_ATTN", None)],
    ),
    "a2v_block0_only": (SamplePerturbation(audio_to_video=[0]), [("SKIP_A2V_CROSS_ATTN", [0])]),
}


# --------------------------------------------------------------------------------------------------------
# Building both models
# --------------------------------------------------------------------------------------------------------


def _metadata(generation: str, **overrides: Any) -> dict[str, Any]:
    section = tc.transformer_config(generation)
    section.update(overrides)
    return {"transformer": section}


def _reference(metadata: dict[str, Any], video_only: bool = False) -> torch.nn.Module:
    from ltx_core.model.transformer.model_configurator import (
        LTXModelConfigurator,
        LTXVideoOnlyModelConfigurator,
    )

    configurator = LTXVideoOnlyModelConfigurator if video_only else LTXModelConfigurator
    module = build_reference_module(configurator, metadata)
    with torch.no_grad():
        init_module(module, seed=5, to_file_key=lambda k: PREFIX + k, config=metadata)
    return module.float().eval()


def _ours(
    reference: torch.nn.Module, metadata: dict[str, Any], video_only: bool = False, dtype: torch.dtype = torch.float32
) -> AVTransformer:
    config = TransformerConfig.from_metadata(metadata, with_audio=not video_only)
    ours = AVTransformer(config, dtype=dtype, device="meta")
    ours.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()}, strict=True, assign=True)
    return ours.eval()


@pytest.fixture(scope="module", params=tc.GENERATIONS)
def pair(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module, AVTransformer]:
    metadata = _metadata(request.param)
    reference = _reference(metadata)
    return request.param, reference, _ours(reference, metadata)


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def _video_positions(batch: int) -> torch.Tensor:
    """(B, 3, T, 2) pixel-space [start, end) bounds like the reference's video patchifier: causal time in s."""
    frames, height, width = VIDEO_GRID
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    starts = torch.stack([f.flatten() * 8.0, h.flatten() * 32.0, w.flatten() * 32.0])  # (3, T)
    ends = starts + torch.tensor([8.0, 32.0, 32.0])[:, None]
    bounds = torch.stack([starts, ends], dim=-1)  # (3, T, 2)
    bounds[0] = (bounds[0] + 1 - 8).clamp(min=0) / FPS
    return bounds.expand(batch, -1, -1, -1).clone()


def _audio_positions(batch: int) -> torch.Tensor:
    starts = torch.arange(AUDIO_TOKENS, dtype=torch.float32) * 0.04
    bounds = torch.stack([starts, starts + 0.04], dim=-1)[None]  # (1, T, 2)
    return bounds.expand(batch, -1, -1, -1).clone()


def _stream(
    gen: torch.Generator, batch: int, tokens: int, context_dim: int, positions: torch.Tensor, conditioned: int
) -> dict[str, torch.Tensor]:
    sigma = torch.rand(batch, generator=gen) * 0.8 + 0.1  # (B,)
    denoise = torch.ones(batch, tokens)
    denoise[:, :conditioned] = 0.0  # conditioning tokens (first frame) at timestep 0
    return {
        "latent": torch.randn(batch, tokens, 128, generator=gen),
        "sigma": sigma,
        "timesteps": denoise * sigma[:, None],
        "positions": positions,
        "context": torch.randn(batch, CONTEXT_TOKENS, context_dim, generator=gen),
    }


def _inputs(generation: str, batch: int = 1, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ltx2 = generation == tc.LTX2
    video_ctx = tc.CAPTION_CHANNELS if ltx2 else tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM
    audio_ctx = tc.CAPTION_CHANNELS if ltx2 else tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM
    tokens = VIDEO_GRID[0] * VIDEO_GRID[1] * VIDEO_GRID[2]
    video = _stream(gen, batch, tokens, video_ctx, _video_positions(batch), VIDEO_GRID[1] * VIDEO_GRID[2])
    audio = _stream(gen, batch, AUDIO_TOKENS, audio_ctx, _audio_positions(batch), 0)
    return video, audio


def _rows(stream: dict[str, Any] | None, index: int) -> dict[str, Any] | None:
    if stream is None:
        return None
    return {k: v[index : index + 1] if isinstance(v, torch.Tensor) else v for k, v in stream.items()}


def _reference_perturbations(per_sample: list[list[tuple[str, list[int] | None]]]):
    from ltx_core.guidance.perturbations import (
        BatchedPerturbationConfig,
        Perturbation,
        PerturbationConfig,
        PerturbationType,
    )

    return BatchedPerturbationConfig(
        [PerturbationConfig([Perturbation(PerturbationType[t], b) for t, b in sample]) for sample in per_sample]
    )


def _run_reference(reference, video, audio, per_sample):
    from ltx_core.model.transformer.modality import Modality

    def modality(stream):
        return None if stream is None else Modality(**stream)

    with torch.no_grad():
        return reference(modality(video), modality(audio), _reference_perturbations(per_sample))


def _run_ours(ours, video, audio, samples: list[SamplePerturbation], dtype: torch.dtype = torch.float32):
    def modality(stream):
        if stream is None:
            return None
        return ModalityInput(**{k: v.to(dtype) if k in {"latent", "context"} else v for k, v in stream.items()})

    with torch.no_grad():
        return ours(modality(video), modality(audio), Perturbations(tuple(samples)))


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    assert ours.shape == ref.shape, what
    assert torch.isfinite(ref).all(), what
    bound = 1e-5 * max(1.0, ref.abs().max().item())
    diff = (ours - ref).abs().max().item()
    assert diff <= bound, f"{what}: max|ours - ref| = {diff:.3e} > {bound:.3e}"
    return diff


# --------------------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("name", PERTURBATIONS)
def test_av_forward_matches_reference(pair, name: str) -> None:
    generation, reference, ours = pair
    sample, ref_sample = PERTURBATIONS[name]
    video, audio = _inputs(generation)
    ref_video, ref_audio = _run_reference(reference, video, audio, [ref_sample])
    got = _run_ours(ours, video, audio, [sample])
    _assert_close(got.video, ref_video, f"{generation}/{name} video")
    _assert_close(got.audio, ref_audio, f"{generation}/{name} audio")
    if name != "none":  # the perturbation must change something (the test can fail)
        clean_video, clean_audio = _run_reference(reference, video, audio, [[]])
        moved = (ref_video - clean_video).abs().max() + (ref_audio - clean_audio).abs().max()
        assert moved > 1e-3


@pytest.mark.oracle
@pytest.mark.parametrize("name", [n for n in PERTURBATIONS if n != "none"])
def test_perturbation_applies_per_sample(pair, name: str) -> None:
    """Batch of 2, the perturbation on sample 1 only: each sample equals its single-sample reference run."""
    generation, reference, ours = pair
    sample, ref_sample = PERTURBATIONS[name]
    video, audio = _inputs(generation, batch=2, seed=1)
    got = _run_ours(ours, video, audio, [SamplePerturbation(), sample])
    for index, ref_perturbation in ((0, []), (1, ref_sample)):
        ref_video, ref_audio = _run_reference(reference, _rows(video, index), _rows(audio, index), [ref_perturbation])
        _assert_close(got.video[index : index + 1], ref_video, f"{generation}/{name} video sample {index}")
        _assert_close(got.audio[index : index + 1], ref_audio, f"{generation}/{name} audio sample {index}")
    # And the reference's own batched per-sample masks agree.
    ref_video, ref_audio = _run_reference(reference, video, audio, [[], ref_sample])
    _assert_close(got.video, ref_video, f"{generation}/{name} batched video")
    _assert_close(got.audio, ref_audio, f"{generation}/{name} batched audio")


@pytest.mark.oracle
def test_masks_and_disabled_stream_match_reference(pair) -> None:
    """Context mask (B, S), self-attention strengths (B, T, T) with zeros, and a disabled audio stream."""
    generation, reference, ours = pair
    video, audio = _inputs(generation, batch=2, seed=2)
    gen = torch.Generator().manual_seed(7)
    tokens = video["latent"].shape[1]
    context_mask = torch.ones(2, CONTEXT_TOKENS, dtype=torch.int64)
    context_mask[1, 4:] = 0
    strength = torch.rand(2, tokens, tokens, generator=gen)
    strength[:, :, :6] = torch.where(strength[:, :, :6] < 0.3, 0.0, strength[:, :, :6])
    video.update(context_mask=context_mask, attention_mask=strength)
    audio.update(enabled=False)
    ref_video, ref_audio = _run_reference(reference, video, audio, [[], []])
    got = _run_ours(ours, video, audio, [SamplePerturbation()] * 2)
    _assert_close(got.video, ref_video, f"{generation} masked video")
    _assert_close(got.audio, ref_audio, f"{generation} disabled audio")
    # STG on sample 0 only: the masked self-attention runs on sample 1 alone (its mask rows selected).
    ref_video, ref_audio = _run_reference(reference, video, audio, [[("SKIP_VIDEO_SELF_ATTN", [0])], []])
    got = _run_ours(ours, video, audio, [SamplePerturbation.stg(video_blocks=[0]), SamplePerturbation()])
    _assert_close(got.video, ref_video, f"{generation} masked video, STG on sample 0")
    _assert_close(got.audio, ref_audio, f"{generation} disabled audio, STG on sample 0")


@pytest.mark.oracle
def test_one_timestep_per_sample_matches_reference(pair) -> None:
    """timesteps (B, 1) (no conditioning tokens); a single sigma broadcasts over our batch."""
    generation, reference, ours = pair
    video, audio = _inputs(generation, batch=2, seed=6)
    for stream in (video, audio):
        stream["timesteps"] = stream["sigma"][:, None]
    ref_video, ref_audio = _run_reference(reference, video, audio, [[], []])
    got = _run_ours(ours, video, audio, [SamplePerturbation()] * 2)
    _assert_close(got.video, ref_video, f"{generation} per-sample timestep video")
    _assert_close(got.audio, ref_audio, f"{generation} per-sample timestep audio")
    shared = {"sigma": torch.tensor(0.5), "timesteps": torch.full((2, 1), 0.5)}
    one = _run_ours(ours, {**video, **shared}, {**audio, **shared}, [SamplePerturbation()] * 2)
    expanded = {"sigma": torch.full((2,), 0.5), "timesteps": torch.full((2, 1), 0.5)}
    both = _run_ours(ours, {**video, **expanded}, {**audio, **expanded}, [SamplePerturbation()] * 2)
    assert torch.equal(one.video, both.video) and torch.equal(one.audio, both.audio)


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@pytest.mark.parametrize("name", ["none", "stg_video_block1"])
def test_video_only_model_matches_reference(generation: str, name: str) -> None:
    metadata = _metadata(generation)
    reference = _reference(metadata, video_only=True)
    ours = _ours(reference, metadata, video_only=True)
    assert not any(k.startswith(("audio_", "av_ca_")) or "audio" in k for k in ours.state_dict())
    sample, ref_sample = PERTURBATIONS[name]
    video, _ = _inputs(generation, batch=2, seed=3)
    ref_video, ref_audio = _run_reference(reference, video, None, [ref_sample, []])
    got = _run_ours(ours, video, None, [sample, SamplePerturbation()])
    assert ref_audio is None and got.audio is None
    _assert_close(got.video, ref_video, f"{generation} video-only {name}")


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_interleaved_float32_rope_matches_reference(generation: str) -> None:
    """The other rope layout, with the float32 frequency grid (frequencies_precision absent)."""
    metadata = _metadata(generation, rope_type="interleaved")
    del metadata["transformer"]["frequencies_precision"]
    reference = _reference(metadata)
    ours = _ours(reference, metadata)
    assert ours.config.rope_type == "interleaved" and not ours.config.double_precision_rope
    video, audio = _inputs(generation, batch=2, seed=4)
    ref_video, ref_audio = _run_reference(reference, video, audio, [[], [("SKIP_VIDEO_SELF_ATTN", [0])]])
    got = _run_ours(ours, video, audio, [SamplePerturbation(), SamplePerturbation.stg(video_blocks=[0])])
    _assert_close(got.video, ref_video, f"{generation} interleaved video")
    _assert_close(got.audio, ref_audio, f"{generation} interleaved audio")


# --------------------------------------------------------------------------------------------------------
# Precision, construction, config
# --------------------------------------------------------------------------------------------------------


@pytest.mark.oracle
def test_bf16_close_to_float32(pair) -> None:
    generation, reference, ours = pair
    metadata = _metadata(generation)
    ours_bf16 = _ours(reference, metadata, dtype=torch.bfloat16)
    video, audio = _inputs(generation, batch=2, seed=5)
    samples = [SamplePerturbation(), SamplePerturbation.stg(video_blocks=[1], audio_blocks=[1])]
    full = _run_ours(ours, video, audio, samples)
    half = _run_ours(ours_bf16, video, audio, samples, dtype=torch.bfloat16)
    for got, want, what in ((half.video, full.video, "video"), (half.audio, full.audio, "audio")):
        assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
        relative = ((got.float() - want).norm() / want.norm()).item()
        assert relative < 3e-2, f"{generation} {what}: relative bf16 error {relative:.3e}"


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_meta_construction_and_strict_assign_load(generation: str) -> None:
    config = TransformerConfig.from_metadata(_metadata(generation))
    ours = AVTransformer(config, device="meta")
    assert all(p.is_meta for p in ours.parameters())
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    with torch.device("meta"):
        reference = LTXModelConfigurator.from_config(_metadata(generation))
    assert set(ours.state_dict()) == set(reference.state_dict())
    state = {k: torch.full(v.shape, 0.5, dtype=torch.bfloat16) for k, v in ours.state_dict().items()}
    ours.load_state_dict(state, strict=True, assign=True)
    assert not any(p.is_meta for p in ours.parameters())
    assert all(p.dtype == torch.bfloat16 for p in ours.parameters())
    missing = dict(state)
    missing.pop(next(iter(missing)))
    with pytest.raises(RuntimeError, match="Missing key"):
        AVTransformer(config, device="meta").load_state_dict(missing, strict=True, assign=True)


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_config_reads_both_generations(generation: str) -> None:
    config = TransformerConfig.from_metadata(_metadata(generation))
    ltx23 = generation == tc.LTX23
    assert (config.inner_dim, config.audio_inner_dim, config.num_layers) == (64, 32, tc.NUM_LAYERS)
    assert config.rope_type == "split" and config.double_precision_rope
    assert config.caption_proj_before_connector is ltx23
    assert config.caption_channels == (None if ltx23 else tc.CAPTION_CHANNELS)
    assert config.apply_gated_attention is ltx23 and config.cross_attention_adaln is ltx23
    assert config.adaln_params == (9 if ltx23 else 6)
    assert config.av_ca_timestep_scale_multiplier == 1000.0 and config.cross_modal_max_pos == 20
    assert dataclasses.is_dataclass(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_layers = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("qk_norm", "layer_norm", "transformer.qk_norm='layer_norm', expected 'rms_norm'"),
        ("dropout", 0.1, "transformer.dropout=0.1, expected 0.0"),
        ("share_ff", True, "transformer.share_ff=True, expected False"),
        ("rope_type", "spiral", "transformer.rope_type='spiral', expected ('interleaved', 'split')"),
        ("num_layers", 0, "transformer.num_layers=0, expected 'an int in [1, 1024]'"),
        ("num_layers", 10**9, "transformer.num_layers=1000000000, expected 'an int in [1, 1024]'"),
        ("num_layers", True, "transformer.num_layers=True, expected 'an int in [1, 1024]'"),
        ("attention_head_dim", 2.5, "transformer.attention_head_dim=2.5, expected 'an int in [1, 1024]'"),
        ("norm_eps", float("nan"), "transformer.norm_eps=nan, expected 'a finite number > 0.0 <= 1.0'"),
        ("positional_embedding_max_pos", [20, 2048], "transformer.positional_embedding_max_pos=[20, 2048], "
         "expected 'a list of 3 ints in [1, 10000000]'"),
        ("apply_gated_attention", "yes", "transformer.apply_gated_attention='yes', expected 'a bool'"),
        ("cross_attention_dim", 48, "transformer.cross_attention_dim=48, expected 64"),
    ],
)
def test_config_rejects_bad_values(key: str, value: Any, message: str) -> None:
    metadata = _metadata(tc.LTX2, **{key: value})
    with pytest.raises(ValueError) as excinfo:
        TransformerConfig.from_metadata(metadata)
    assert str(excinfo.value) == message


def test_config_missing_pinned_key_and_video_only_checks() -> None:
    metadata = _metadata(tc.LTX23)
    del metadata["transformer"]["attention_bias"]
    with pytest.raises(ValueError, match=r"^transformer\.attention_bias=None, expected True$"):
        TransformerConfig.from_metadata(metadata)
    # The video-only model (like the reference's) does not pin the audio<->video switches.
    metadata = _metadata(tc.LTX23, share_ff=True)
    assert not TransformerConfig.from_metadata(metadata, with_audio=False).with_audio
    # LTX-2 needs caption_channels for its in-transformer caption projection.
    metadata = copy.deepcopy(_metadata(tc.LTX2))
    del metadata["transformer"]["caption_channels"]
    with pytest.raises(ValueError, match=r"^transformer\.caption_channels=None, expected 'an int in \[1, 65536\]'$"):
        TransformerConfig.from_metadata(metadata)


def test_forward_rejects_bad_calls(pair) -> None:
    generation, _, ours = pair
    video, audio = _inputs(generation, batch=2)
    with pytest.raises(ValueError, match="perturbations for 1 samples, expected batch size 2"):
        _run_ours(ours, video, audio, [SamplePerturbation()])
    with pytest.raises(ValueError, match="at least one stream"):
        ours(None, None)
    with pytest.raises(ValueError, match="blocks="):
        SamplePerturbation(video_self_attention=[-1])


@pytest.mark.oracle
@pytest.mark.parametrize("rope_type", ["interleaved", "split"])
@pytest.mark.parametrize("double_precision", [False, True])
def test_rotary_tables_match_reference_at_full_size(rope_type: str, double_precision: bool) -> None:
    """The 19B / 22B widths (video 32 x 128, audio cross 32 x 64): frequency grid and cos / sin tables."""
    from ltx_core.model.transformer.rope import (
        LTXRopeType,
        apply_rotary_emb,
        generate_freq_grid_np,
        generate_freq_grid_pytorch,
        precompute_freqs_cis,
    )

    from aiprod.aiprod_core.transformer.rope import apply_rotary, frequency_grid, rotary_tables

    reference_grid = generate_freq_grid_np if double_precision else generate_freq_grid_pytorch
    # The two precisions give different float32 grids at this width, so equality below tells them apart.
    assert not torch.equal(frequency_grid(10000.0, 3, 4096, True), frequency_grid(10000.0, 3, 4096, False))
    for n_dims, inner in ((3, 4096), (1, 2048)):
        assert torch.equal(
            frequency_grid(10000.0, n_dims, inner, double_precision), reference_grid(10000.0, n_dims, inner)
        )
    positions = _video_positions(2) * torch.tensor([1.0, 9.0, 7.0])[None, :, None, None]  # larger frames
    for pos, inner, max_pos in ((positions, 4096, (20, 2048, 2048)), (positions[:, :1], 2048, (20,))):
        ours = rotary_tables(
            pos,
            inner_dim=inner,
            heads=32,
            max_pos=max_pos,
            theta=10000.0,
            rope_type=rope_type,
            double_precision=double_precision,
            dtype=torch.float32,
        )
        ref = precompute_freqs_cis(
            pos,
            dim=inner,
            out_dtype=torch.float32,
            theta=10000.0,
            max_pos=list(max_pos),
            use_middle_indices_grid=True,
            num_attention_heads=32,
            rope_type=LTXRopeType(rope_type),
            freq_grid_generator=reference_grid,
        )
        _assert_close(ours.cos, ref[0], f"{rope_type} cos {inner}")
        _assert_close(ours.sin, ref[1], f"{rope_type} sin {inner}")
        x = torch.randn(2, pos.shape[2], inner, generator=torch.Generator().manual_seed(0))
        _assert_close(apply_rotary(x, ours, rope_type), apply_rotary_emb(x, ref, LTXRopeType(rope_type)), "rotated")
