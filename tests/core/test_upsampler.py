"""Latent upsampler (x2 pixel shuffle, rational x1.5): parity with ltx-core, bf16, meta build + strict load."""

from __future__ import annotations

import pytest
import torch
from support import tiny_configs as tc
from support.tiny_checkpoints import build_reference_module, init_module

from aiprod.aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig, upsample_latent

LATENT_SHAPE = (2, 128, 2, 4, 6)  # (B, C, F, H, W)


def _reference(scale: float) -> torch.nn.Module:
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    config = tc.upsampler_config(scale)
    module = build_reference_module(LatentUpsamplerConfigurator, config)
    return init_module(module, seed=3, to_file_key=lambda k: f"x{scale}:{k}", config=config).float()


def _ours_from(reference: torch.nn.Module, scale: float, dtype: torch.dtype = torch.float32) -> LatentUpsampler:
    config = LatentUpsamplerConfig.from_metadata(tc.upsampler_config(scale))
    ours = LatentUpsampler(config, dtype=dtype, device="meta")
    state = {k: v.to(dtype) for k, v in reference.state_dict().items()}
    ours.load_state_dict(state, strict=True, assign=True)
    return ours.eval()


def _latent(seed: int = 0) -> torch.Tensor:
    return torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(seed))


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    bound = 1e-5 * max(1.0, ref.abs().max().item())
    diff = (ours - ref).abs().max().item()
    assert diff <= bound, f"max|ours - ref| = {diff:.3e} > {bound:.3e}"


@pytest.mark.oracle
@pytest.mark.parametrize("scale", tc.UPSAMPLER_SCALES)
@torch.no_grad()
def test_upsampler_matches_reference(scale: float) -> None:
    reference = _reference(scale)
    ours = _ours_from(reference, scale)
    latent = _latent()
    expected = reference(latent)
    got = ours(latent)
    side = int(4 * scale), int(6 * scale)
    assert got.shape == (*LATENT_SHAPE[:3], *side)
    _assert_close(got, expected)


# Variants no published file uses yet, still built by the reference: temporal x2, spatio-temporal x2, per-frame 2-D.
_OTHER_VARIANTS = {
    "temporal": {"spatial_upsample": False, "temporal_upsample": True},
    "spatiotemporal": {"temporal_upsample": True},
    "dims2": {"dims": 2},
}


@pytest.mark.oracle
@pytest.mark.parametrize("variant", sorted(_OTHER_VARIANTS))
@torch.no_grad()
def test_other_upsampler_variants_match_reference(variant: str) -> None:
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    config = {**tc.upsampler_config(2.0), **_OTHER_VARIANTS[variant]}
    reference = build_reference_module(LatentUpsamplerConfigurator, config)
    reference = init_module(reference, seed=4, to_file_key=lambda k: f"{variant}:{k}", config=config).float()
    ours = LatentUpsampler(LatentUpsamplerConfig.from_metadata(config), device="meta")
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    latent = _latent(2)
    expected = reference(latent)
    frames = 2 * LATENT_SHAPE[2] - 1 if config.get("temporal_upsample") else LATENT_SHAPE[2]
    assert expected.shape[2] == frames
    _assert_close(ours(latent), expected)


@pytest.mark.oracle
@pytest.mark.parametrize("scale", tc.UPSAMPLER_SCALES)
@torch.no_grad()
def test_upsample_latent_matches_reference_with_statistics(scale: float) -> None:
    from ltx_core.model.upsampler import upsample_video

    reference = _reference(scale)
    ours = _ours_from(reference, scale)
    gen = torch.Generator().manual_seed(7)
    mean, std = torch.randn(128, generator=gen) * 0.2, torch.rand(128, generator=gen) + 0.5

    class _Stats(torch.nn.Module):  # the reference reads video_encoder.per_channel_statistics
        def __init__(self) -> None:
            super().__init__()
            from ltx_core.model.video_vae.ops import PerChannelStatistics

            self.per_channel_statistics = PerChannelStatistics(128)
            self.per_channel_statistics.get_buffer("mean-of-means").copy_(mean)
            self.per_channel_statistics.get_buffer("std-of-means").copy_(std)

    latent = _latent(1)
    expected = upsample_video(latent, _Stats(), reference)
    _assert_close(upsample_latent(latent, ours, mean, std), expected)


@pytest.mark.parametrize("scale", tc.UPSAMPLER_SCALES)
@torch.no_grad()
def test_upsampler_bf16_close_to_float32(scale: float) -> None:
    reference = _reference(scale)
    f32 = _ours_from(reference, scale)(_latent())
    bf16 = _ours_from(reference, scale, torch.bfloat16)(_latent().bfloat16()).float()
    assert torch.isfinite(bf16).all()
    rel = ((bf16 - f32).norm() / f32.norm()).item()
    assert rel < 3e-2, rel


@pytest.mark.parametrize("scale", tc.UPSAMPLER_SCALES)
def test_upsampler_meta_build_and_strict_load(scale: float) -> None:
    reference = _reference(scale)
    config = LatentUpsamplerConfig.from_metadata(tc.upsampler_config(scale))
    ours = LatentUpsampler(config, device="meta")
    assert all(t.is_meta for t in ours.state_dict().values())
    assert set(ours.state_dict()) == set(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert not any(t.is_meta for t in ours.state_dict().values())
    missing = dict(reference.state_dict())
    missing.pop(next(iter(missing)))
    with pytest.raises(RuntimeError, match="Missing key"):
        LatentUpsampler(config, device="meta").load_state_dict(missing, strict=True, assign=True)


def test_upsampler_config_defaults_and_rejections() -> None:
    assert LatentUpsamplerConfig.from_metadata({}) == LatentUpsamplerConfig(
        in_channels=128, mid_channels=512, num_blocks_per_stage=4, dims=3, spatial_scale=2.0
    )
    with pytest.raises(ValueError, match=r"spatial_scale=1\.25, expected"):
        LatentUpsamplerConfig.from_metadata({"spatial_scale": 1.25, "rational_resampler": True})
    with pytest.raises(ValueError, match=r"spatial_scale=1\.5, expected 2\.0"):
        LatentUpsamplerConfig.from_metadata({"spatial_scale": 1.5})
    with pytest.raises(ValueError, match="dims=4"):
        LatentUpsamplerConfig.from_metadata({"dims": 4})
    with pytest.raises(ValueError, match="mid_channels=48"):
        LatentUpsamplerConfig.from_metadata({"mid_channels": 48})
