"""Video VAE (LTX-2 / LTX-2.3): config, parity with ltx-core (encode, decode, tiled encode/decode), bf16,
tile-setting validation, and flat memory of tiled decode."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from support import tiny_configs as tc
from support.tiny_checkpoints import build_reference_module, init_module

from aiprod.aiprod_core.video_vae import (
    SpatialTiling,
    TemporalTiling,
    TilingConfig,
    VideoDecoder,
    VideoEncoder,
    VideoVAEConfig,
    iter_tiled_decode,
    tiled_decode,
    tiled_encode,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
VIDEO_SHAPE = (1, 3, 17, 64, 96)  # (B, 3, F, H, W): 3 latent frames of 2 x 3 cells
LATENT_SHAPE = (1, 128, 3, 2, 3)  # (B, C, F', H', W')
BF16_VIDEO_SHAPE = (1, 3, 9, 64, 64)  # 2 latent frames of 2 x 2 cells (reflect padding needs 2 cells)
BF16_LATENT_SHAPE = (1, 128, 2, 2, 2)


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def _variant_config() -> dict[str, Any]:
    """A ``vae`` section exercising what the published tiny configs do not: group norm, per-channel log-var,
    plain strided convs, width-changing residual blocks, noise injection, a causal decoder, replicate padding."""
    section = copy.deepcopy(tc.video_vae_config(tc.LTX2))
    section.update(
        norm_layer="group_norm",
        latent_log_var="per_channel",
        causal_decoder=True,
        spatial_padding_mode="replicate",
        encoder_blocks=[
            ["compress_space", {}],
            ["compress_time", {}],
            ["compress_all_x_y", {"multiplier": 1}],
            ["res_x_y", {"multiplier": 2}],
            ["compress_all", {}],
        ],
        decoder_blocks=[
            ["res_x", {"num_layers": 1, "inject_noise": True}],
            ["compress_all", {"residual": True, "multiplier": 1}],
            ["res_x_y", {"multiplier": 2}],
            ["compress_all", {"multiplier": 1}],
            ["compress_time", {"multiplier": 1}],
            ["compress_space", {"multiplier": 1}],
        ],
    )
    return {"vae": section}


VARIANT = "variant"
CONFIGS = (tc.LTX2, tc.LTX23, VARIANT)


def _metadata(name: str) -> dict[str, Any]:
    return _variant_config() if name == VARIANT else {"vae": tc.video_vae_config(name)}


@torch.no_grad()
def _init_variant(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Honest random weights for the variant (tiny_checkpoints has no rule for noise scales)."""
    gen = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            if isinstance(sub, torch.nn.Conv3d | torch.nn.Linear) and name == "weight":
                value = torch.randn(param.shape, generator=gen) / math.sqrt(param[0].numel())
            elif isinstance(sub, torch.nn.GroupNorm) and name == "weight":
                value = 1.0 + 0.1 * torch.randn(param.shape, generator=gen)
            elif name == "timestep_scale_multiplier":
                value = torch.full(param.shape, 1013.0)
            elif name.startswith("per_channel_scale"):  # noise gains: large enough to matter
                value = 0.3 * torch.randn(param.shape, generator=gen)
            else:  # biases, scale-shift tables
                value = 0.05 * torch.randn(param.shape, generator=gen)
            param.copy_(value)
    stats = module.per_channel_statistics
    stats.get_buffer("std-of-means").copy_(torch.rand(128, generator=gen) + 0.5)
    stats.get_buffer("mean-of-means").copy_(0.2 * torch.randn(128, generator=gen))
    return module


def _reference(name: str, part: str) -> torch.nn.Module:
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator

    configurator = VideoEncoderConfigurator if part == "encoder" else VideoDecoderConfigurator
    metadata = _metadata(name)
    module = build_reference_module(configurator, metadata)
    if name == VARIANT:
        return _init_variant(module, seed=11 if part == "encoder" else 12).float()

    def to_file_key(key: str) -> str:
        return f"vae.{key}" if key.startswith("per_channel_statistics.") else f"vae.{part}.{key}"

    return init_module(module, seed=0, to_file_key=to_file_key, config=metadata).float()


def _ours(reference: torch.nn.Module, name: str, part: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    config = VideoVAEConfig.from_metadata(_metadata(name))
    cls = VideoEncoder if part == "encoder" else VideoDecoder
    ours = cls(config, dtype=dtype, device="meta")
    ours.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()}, strict=True, assign=True)
    return ours.eval()


_CACHE: dict[tuple[str, str], tuple[torch.nn.Module, torch.nn.Module]] = {}


def _pair(name: str, part: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(reference, ours) with the same weights, built once per session."""
    if (name, part) not in _CACHE:
        reference = _reference(name, part)
        _CACHE[name, part] = reference, _ours(reference, name, part)
    return _CACHE[name, part]


def _video(seed: int = 0, shape: tuple[int, ...] = VIDEO_SHAPE) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def _latent(seed: int = 1, shape: tuple[int, ...] = LATENT_SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    bound = 1e-5 * max(1.0, ref.abs().max().item())
    diff = (ours - ref).abs().max().item()
    assert diff <= bound, f"max|ours - ref| = {diff:.3e} > {bound:.3e}"
    return diff


def _ref_tiling(tiling: TilingConfig):
    from ltx_core.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig
    from ltx_core.model.video_vae.tiling import TilingConfig as RefTilingConfig

    spatial, temporal = tiling.spatial, tiling.temporal
    return RefTilingConfig(
        spatial_config=SpatialTilingConfig(spatial.tile_size_in_pixels, spatial.tile_overlap_in_pixels)
        if spatial
        else None,
        temporal_config=TemporalTilingConfig(temporal.tile_size_in_frames, temporal.tile_overlap_in_frames)
        if temporal
        else None,
    )


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


def test_config_reads_both_generations() -> None:
    ltx2 = VideoVAEConfig.from_metadata({"vae": tc.video_vae_config(tc.LTX2)})
    ltx23 = VideoVAEConfig.from_metadata({"vae": tc.video_vae_config(tc.LTX23)})
    assert ltx2.timestep_conditioning and not ltx23.timestep_conditioning
    # ltx-core reads only spatial_padding_mode: absent -> encoder zeros, decoder reflect.
    assert (ltx2.encoder_padding_mode, ltx2.decoder_padding_mode) == ("zeros", "reflect")
    assert (ltx23.encoder_padding_mode, ltx23.decoder_padding_mode) == ("zeros", "zeros")
    for config in (ltx2, ltx23):
        assert (config.latent_channels, config.patch_size, config.decoder_base_channels) == (128, 4, 8)
        assert config.encoder_scale_factors == config.decoder_scale_factors
        assert (config.scale_factors.time, config.scale_factors.height, config.scale_factors.width) == (8, 32, 32)
    assert [b.name for b in ltx2.decoder_blocks].count("compress_all") == 3
    assert all(b.residual and b.multiplier == 2 for b in ltx2.decoder_blocks if b.name == "compress_all")
    assert [b.multiplier for b in ltx23.decoder_blocks if b.name.startswith("compress")] == [2, 2, 1, 2]
    assert all(b.multiplier == 1 for b in ltx2.encoder_blocks if b.name.endswith("_res"))
    defaults = VideoVAEConfig.from_metadata({})
    assert (defaults.decoder_base_channels, defaults.timestep_conditioning, defaults.norm_layer) == (
        128,
        True,
        "pixel_norm",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dims": 2}, "dims=2, expected 3"),
        ({"norm_layer": "layer_norm"}, "norm_layer='layer_norm'"),
        ({"latent_log_var": "none"}, "latent_log_var='none'"),
        ({"spatial_padding_mode": "mirror"}, "spatial_padding_mode='mirror'"),
        ({"patch_size": 0}, "patch_size=0"),
        ({"timestep_conditioning": "yes"}, "timestep_conditioning='yes'"),
        ({"decoder_blocks": [["attn_res_x", {"num_layers": 1}]]}, "decoder_blocks[0][0]='attn_res_x'"),
        ({"encoder_blocks": [["res_x", {}]]}, "encoder_blocks[0].num_layers=None"),
        ({"decoder_blocks": [["compress_space", {"residual": True}]]}, "decoder_blocks[0].residual=True"),
        ({"decoder_blocks": [["compress_all", {"multiplier": 0}]]}, "decoder_blocks[0].multiplier=0"),
        ({"encoder_blocks": [["res_x", {"num_layers": -1}]]}, "encoder_blocks[0].num_layers=-1"),
        ({"decoder_blocks": [["res_x_y", {"inject_noise": True}]]}, "decoder_blocks[0].inject_noise=True"),
        ({"decoder_blocks": [["compress_all", {}]]}, "decoder_blocks="),
    ],
)
def test_config_rejects_unsupported_values(change: dict[str, Any], message: str) -> None:
    section = {**tc.video_vae_config(tc.LTX23), **change}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        VideoVAEConfig.from_metadata({"vae": section})


# --------------------------------------------------------------------------------------------------------
# Build, keys, parity
# --------------------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_keys_follow_the_checkpoint_layout(name: str) -> None:
    """Checkpoint keys filtered by ltx-core's own VAE_{ENCODER,DECODER}_COMFY_KEYS_FILTER load strictly."""
    from ltx_core.model.video_vae import VAE_DECODER_COMFY_KEYS_FILTER, VAE_ENCODER_COMFY_KEYS_FILTER

    config = VideoVAEConfig.from_metadata(_metadata(name))
    encoder = VideoEncoder(config, dtype=torch.bfloat16, device="meta")
    decoder = VideoDecoder(config, dtype=torch.bfloat16, device="meta")
    assert {p.dtype for p in [*encoder.parameters(), *decoder.parameters()]} == {torch.bfloat16}
    checkpoint = {f"vae.encoder.{k}" for k in encoder.state_dict() if not k.startswith("per_channel")}
    checkpoint |= {f"vae.decoder.{k}" for k in decoder.state_dict() if not k.startswith("per_channel")}
    checkpoint |= {"vae.per_channel_statistics.std-of-means", "vae.per_channel_statistics.mean-of-means"}
    for module, ops in ((encoder, VAE_ENCODER_COMFY_KEYS_FILTER), (decoder, VAE_DECODER_COMFY_KEYS_FILTER)):
        filtered = {ops.apply_to_key(k) for k in checkpoint} - {None}
        assert filtered == set(module.state_dict())
    for part, ours in (("encoder", encoder), ("decoder", decoder)):
        reference, _ = _pair(name, part)
        assert set(reference.state_dict()) == set(ours.state_dict())


@pytest.mark.oracle
@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_encode_matches_reference(name: str) -> None:
    reference, ours = _pair(name, "encoder")
    video = _video()
    expected = reference(video)
    got = ours(video)
    assert got.shape == LATENT_SHAPE
    _assert_close(got, expected)
    # 1 + 8k + 3 frames: both crop the 3 trailing frames.
    longer = _video(1, (1, 3, 12, 64, 64))
    _assert_close(ours(longer), reference(longer))


@pytest.mark.oracle
@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_decode_matches_reference(name: str) -> None:
    reference, ours = _pair(name, "decoder")
    latent = _latent()
    expected = reference(latent, generator=_gen())
    got = ours(latent, generator=_gen())
    assert got.shape == VIDEO_SHAPE
    _assert_close(got, expected)
    if ours.timestep_conditioning:
        # Given timestep (B,), batch of 2; the noise (from the generator) must matter.
        latent2 = _latent(2, (2, *LATENT_SHAPE[1:]))
        timestep = torch.tensor([0.05, 0.3])
        expected = reference(latent2, timestep=timestep, generator=_gen(9))
        _assert_close(ours(latent2, timestep=timestep, generator=_gen(9)), expected)
        assert (ours(latent2, timestep=timestep, generator=_gen(10)) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_bf16_is_close_to_float32(name: str) -> None:
    """bf16 compute vs float32 compute of the same bf16 weights (the checkpoints store bf16), at a smaller clip than
    the parity tests: this CPU has no bf16 convolution kernels (the full-size pair took ~50 s per generation)."""
    for part, data in (("encoder", _video(shape=BF16_VIDEO_SHAPE)), ("decoder", _latent(shape=BF16_LATENT_SHAPE))):
        reference, _ = _pair(name, part)
        ours_bf16 = _ours(reference, name, part, dtype=torch.bfloat16)
        ours_f32 = copy.deepcopy(ours_bf16).float()
        kwargs = {} if part == "encoder" else {"generator": _gen()}
        full = ours_f32(data, **kwargs)
        kwargs = {} if part == "encoder" else {"generator": _gen()}
        half = ours_bf16(data.to(torch.bfloat16), **kwargs).float()
        assert torch.isfinite(half).all()
        relative = ((half - full).norm() / full.norm()).item()
        assert relative <= 3e-2, f"{part}: ||bf16 - f32|| / ||f32|| = {relative:.3e}"


# --------------------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------------------

# (spatial, temporal): the first has a 1-latent temporal step, for which ltx-core yields an empty first chunk;
# the second has three temporal tiles overlapping at once on 8 latent frames.
DECODE_TILINGS = [
    TilingConfig(SpatialTiling(64, 32), TemporalTiling(16, 8)),
    TilingConfig(SpatialTiling(96, 64), TemporalTiling(40, 24)),
]


@pytest.mark.oracle
@pytest.mark.parametrize("name", [tc.LTX2, tc.LTX23])
@pytest.mark.parametrize("tiling_index", [0, 1])
@torch.no_grad()
def test_tiled_decode_matches_reference(name: str, tiling_index: int) -> None:
    reference, ours = _pair(name, "decoder")
    tiling = DECODE_TILINGS[tiling_index]
    latent = _latent(3, (1, 128, 4, 2, 3) if tiling_index == 0 else (1, 128, 8, 2, 2))
    ref_chunks = list(reference.tiled_decode(latent, _ref_tiling(tiling), generator=_gen()))
    chunks = list(iter_tiled_decode(ours, latent, tiling, generator=_gen()))
    # Same non-empty chunks, in order, contiguous; ltx-core's empty first chunk (if any) is not produced.
    assert [c.shape[2] for _, c in chunks] == [c.shape[2] for c in ref_chunks if c.shape[2] > 0]
    assert [start for start, _ in chunks] == [sum(c.shape[2] for _, c in chunks[:i]) for i in range(len(chunks))]
    if tiling_index == 0:
        assert ref_chunks[0].shape[2] == 0  # the reference quirk this case pins down
    expected = torch.cat(ref_chunks, dim=2)
    _assert_close(torch.cat([c for _, c in chunks], dim=2), expected)
    _assert_close(tiled_decode(ours, latent, tiling, generator=_gen()), expected)


@pytest.mark.oracle
@pytest.mark.parametrize("name", [tc.LTX2, tc.LTX23])
@torch.no_grad()
def test_tiled_encode_matches_reference(name: str) -> None:
    reference, ours = _pair(name, "encoder")
    video = _video(4, (1, 3, 25, 128, 64))
    tiling = TilingConfig(SpatialTiling(96, 64), TemporalTiling(16 + 8, 16))
    expected = reference.tiled_encode(video, _ref_tiling(tiling))
    _assert_close(tiled_encode(ours, video, tiling), expected)


@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_tiled_equals_untiled_when_tiles_cover_the_clip(name: str) -> None:
    """The one case where ltx-core's tiling is exact: tiles at least as large as the clip."""
    _, encoder = _pair(name, "encoder")
    _, decoder = _pair(name, "decoder")
    whole = TilingConfig(SpatialTiling(512, 64), TemporalTiling(64, 16))
    video, latent = _video(), _latent()
    _assert_close(tiled_encode(encoder, video, whole), encoder(video))
    _assert_close(tiled_decode(decoder, latent, whole, generator=_gen()), decoder(latent, generator=_gen()))


@pytest.mark.oracle
@torch.no_grad()
def test_tiled_decode_handles_cases_where_the_reference_fails() -> None:
    """ltx-core's tiled decode fails (1) without a temporal tiling (its default time mapping has no stop,
    video_vae.py:842) and (2) on a 1-latent-wide last tile under reflect padding (the LTX-2 decoder)."""
    reference, ours = _pair(tc.LTX2, "decoder")
    latent = _latent(6, (1, 128, 2, 2, 5))
    spatial_only = TilingConfig(SpatialTiling(64, 0))
    with_time = TilingConfig(SpatialTiling(64, 0), TemporalTiling(64, 0))
    with pytest.raises(TypeError):
        list(reference.tiled_decode(latent, _ref_tiling(spatial_only), generator=_gen()))
    with pytest.raises(RuntimeError, match="Padding size"):
        list(reference.tiled_decode(latent, _ref_tiling(with_time), generator=_gen()))
    video = tiled_decode(ours, latent, spatial_only, generator=_gen())
    assert video.shape == (1, 3, 9, 64, 160) and torch.isfinite(video).all()
    assert torch.equal(video, tiled_decode(ours, latent, with_time, generator=_gen()))
    # The 1-wide last tile is merged into its neighbour: 2 column tiles (64 + 96 px), not 3.
    assert len(list(iter_tiled_decode(ours, latent, spatial_only, generator=_gen()))) == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SpatialTiling(48), "tile_size_in_pixels=48, expected a multiple of 32 that is at least 64"),
        (lambda: SpatialTiling(100), "tile_size_in_pixels=100, expected a multiple of 32"),
        (lambda: SpatialTiling(128, 40), "tile_overlap_in_pixels=40, expected a multiple of 32"),
        (lambda: SpatialTiling(128, 128), "tile_overlap_in_pixels=128, expected less than tile_size_in_pixels=128"),
        (lambda: TemporalTiling(8), "tile_size_in_frames=8, expected a multiple of 8 that is at least 16"),
        (lambda: TemporalTiling(20), "tile_size_in_frames=20, expected a multiple of 8"),
        (lambda: TemporalTiling(24, 4), "tile_overlap_in_frames=4, expected a multiple of 8"),
        (lambda: TemporalTiling(16, 16), "tile_overlap_in_frames=16, expected less than tile_size_in_frames=16"),
    ],
)
def test_bad_tile_settings_raise(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("tiling", "message"),
    [
        (TilingConfig(SpatialTiling(128, 32)), "tile_overlap_in_pixels=32, expected at least 64 for tiled encode"),
        (TilingConfig(None, TemporalTiling(24, 8)), "tile_overlap_in_frames=8, expected at least 16 for tiled"),
    ],
)
def test_tiled_encode_rejects_small_overlaps_instead_of_raising_them(tiling: TilingConfig, message: str) -> None:
    config = VideoVAEConfig.from_metadata({"vae": tc.video_vae_config(tc.LTX23)})
    encoder = VideoEncoder(config)
    with pytest.raises(ValueError, match=message):
        tiled_encode(encoder, _video(), tiling)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, types
    import torch
    from torch.profiler import ProfilerActivity, profile

    package = types.ModuleType("aiprod")
    package.__path__ = [sys.argv[1]]
    sys.modules["aiprod"] = package
    sys.path.insert(0, sys.argv[1] + "/tests")
    from support import tiny_configs as tc
    from aiprod.aiprod_core.video_vae import TemporalTiling, TilingConfig, VideoDecoder, VideoVAEConfig, tiled_decode

    torch.set_num_threads(1)
    torch.manual_seed(0)
    decoder = VideoDecoder(VideoVAEConfig.from_metadata({"vae": tc.video_vae_config(tc.LTX2)})).eval()
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(torch.randn(p.shape) / max(1, p[0].numel() if p.ndim > 1 else 1) ** 0.5)
        decoder.per_channel_statistics.get_buffer("std-of-means").fill_(1.0)
        decoder.per_channel_statistics.get_buffer("mean-of-means").fill_(0.0)

    def peak_bytes(fn):
        # Replay the CPU allocator's allocation / free events (bytes > 0 / < 0) in time order.
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        live = peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            live += event.nbytes()
            peak = max(peak, live)
        return peak

    tiling = TilingConfig(temporal=TemporalTiling(16, 8))
    result = {}
    for frames in (4, 16):
        latent = torch.randn(1, 128, frames, 2, 2)
        out = torch.empty(1, 3, 1 + 8 * (frames - 1), 64, 64)
        with torch.no_grad():
            tiled = peak_bytes(lambda: tiled_decode(decoder, latent, tiling, generator=torch.Generator(), out=out))
            whole = peak_bytes(lambda: decoder(latent, generator=torch.Generator()))
        result[frames] = {"tiled": tiled, "untiled": whole, "out": out.numel() * out.element_size()}
    print(json.dumps(result))
    """
)


def test_tiled_decode_memory_stays_flat_when_the_clip_grows() -> None:
    """Peak working memory of tiled decode for 4 vs 16 latent frames (2-latent temporal tiles).

    Method: a fresh subprocess (no state from other tests) decodes each length into a preallocated output
    under ``torch.profiler.profile(profile_memory=True)`` and replays the CPU allocator's allocation/free
    events in time order; the peak of live bytes is the working memory above the output. The untiled decode
    is measured the same way as a control: it must grow with the clip, showing the measurement can see growth.
    """
    run = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    short, long = result["4"], result["16"]
    assert short["tiled"] > 0
    assert long["tiled"] <= 1.3 * short["tiled"], result
    assert long["untiled"] >= 2.5 * short["untiled"], result  # the control grows with the clip
    assert long["tiled"] < 0.5 * long["untiled"], result
