"""LTX-2.5 latent upsamplers (``spatial-upscaler-x2``, ``temporal-upscaler-x2``): parity with diffusers 0.42.1's
``LTX2LatentUpsamplerModel`` on tiny files in the Lightricks layout (the upsampler's keys are the same in both;
flat ``config`` metadata), and the `temporal_upsample` API: (frames - 1) x 2 + 1 frames at twice the frame rate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import tiny25

from aiprod.aiprod_core.upsampler import temporal_upsample, temporally_upsampled_frames, upsample_latent
from aiprod.loaders.component_loader import load_component


def _config(temporal: bool) -> dict:
    return {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1,
            "dims": 3, "spatial_upsample": not temporal, "temporal_upsample": temporal, "spatial_scale": 2.0,
            "rational_resampler": False}


def _pair(tmp_path: Path, temporal: bool):
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    reference = LTX2LatentUpsamplerModel(in_channels=128, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                         spatial_upsample=not temporal, temporal_upsample=temporal,
                                         rational_spatial_scale=2.0, use_rational_resampler=False)
    tiny25.honest_init(reference, seed=4).eval()
    name = "ltx-2.5-latent-temporal-upscaler-x2-tiny" if temporal else "ltx-2.5-latent-spatial-upscaler-x2-tiny"
    path = tiny25.write_file(tmp_path / f"{name}.safetensors", reference.state_dict(), _config(temporal))
    return reference, load_component(path, "latent_upsampler", dtype=torch.float32).module


@pytest.mark.parametrize("temporal", [False, True], ids=["spatial_x2", "temporal_x2"])
def test_upsampler_matches_diffusers(tmp_path: Path, temporal: bool) -> None:
    reference, ours = _pair(tmp_path, temporal)
    latent = torch.randn(1, 128, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(latent), ours(latent)
    assert got.shape == expected.shape == ((1, 128, 5, 4, 5) if temporal else (1, 128, 3, 8, 10))
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_temporal_upsample_doubles_the_frame_rate(tmp_path: Path) -> None:
    reference, ours = _pair(tmp_path, temporal=True)
    generator = torch.Generator().manual_seed(1)
    mean, std = 0.1 * torch.randn(128, generator=generator), torch.rand(128, generator=generator) + 0.5
    latent = torch.randn(1, 128, 4, 3, 3, generator=generator)  # 25 video frames
    with torch.no_grad():
        result = temporal_upsample(latent, ours, mean, std, frame_rate=24.0)
        view = (1, -1, 1, 1, 1)
        expected = (reference(latent * std.view(view) + mean.view(view)) - mean.view(view)) / std.view(view)
    assert result.frame_rate == 48.0
    assert result.latent.shape[2] == 7 and 1 + 8 * (7 - 1) == temporally_upsampled_frames(25) == 49
    assert (result.latent - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_temporal_upsample_refuses_a_spatial_upsampler(tmp_path: Path) -> None:
    _, spatial = _pair(tmp_path, temporal=False)
    latent = torch.zeros(1, 128, 2, 2, 2)
    with pytest.raises(ValueError, match=r"temporal_upsample=False, spatial_upsample=True, expected a temporal-only"):
        temporal_upsample(latent, spatial, torch.zeros(128), torch.ones(128), frame_rate=24.0)
    assert upsample_latent(latent, spatial, torch.zeros(128), torch.ones(128)).shape == (1, 128, 2, 4, 4)
