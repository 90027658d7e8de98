"""LTX-2.5 diffusion video decoder: config, parity with diffusers 0.42.1 (whole and tiled decodes, gated files,
bf16), windowed stages 1-3, loader layouts and errors, detection.

The oracle is diffusers' ``LTX2VideoDiffusionDecoderModel`` built tiny with diffusers' own classes; our side
loads the Lightricks 2.5 file layout written from its weights (`support.tiny25`). Float32 tolerance:
1e-5 x max(1, max|ref|). Where diffusers and the Lightricks reference (ltx-core 1.2.0) disagree, the Lightricks
facts are what we implement, and the tests stay where both agree:
- defaults for keys a file omits: Lightricks 2 steps / multiplier 1.0 / "v" (diffusers 1 / 1000 / "x0"); the
  tiny files state every value, so both read the same;
- ``stage_kernels`` has five entries in the Lightricks files (diffusers takes the first four);
- clips shorter than the stage-5 kernel keep ghost frames (Lightricks) where diffusers would fail, and latents
  under ``min_latent_size`` are padded (Lightricks): the parity latents are large enough for neither to matter;
- tile geometry and blending are the Lightricks ones (diffusers blends its own tiles differently): the tiled
  parity uses pointwise stage-4/5 windows, where both tilings are exact, so both must equal the untiled decode.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from support import tiny25

from aiprod.aiprod_core.video_vae import (
    DiffusionDecoderConfig,
    SpatialTiling,
    TemporalTiling,
    TilingConfig,
    decode_video,
    video_encoder_config,
)
from aiprod.aiprod_core.video_vae.diffusion_decode import _plan, _stage_4_input
from aiprod.aiprod_core.video_vae.neighborhood_attention import neighborhood_attention
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.detect import describe_file
from aiprod.loaders.errors import WrongComponentError

REPO_ROOT = Path(__file__).resolve().parents[2]
LATENT_SHAPE = (1, 128, 3, 3, 3)  # (B, C, F', H', W'): min_latent_size (3, 3, 3) of the tiny decoder
# The published LTX-2.5 (diffusers: "2.4") decoder section, as ComfyUI's na_diffusion_decoder.py lists it.
PUBLISHED_DECODER = {
    "in_channels": 128, "out_channels": 3, "patch_size": 4, "head_dim": 64,
    "stage_channels": [2048, 1024, 512, 512, 256], "stage_depths": [4, 6, 4, 2, 8],
    "stage_kernels": [[3, 7, 7], [3, 7, 7], [3, 5, 5], [3, 5, 5], [11, 11, 11]],
    "upsamples": [[[1, 2, 2], 2], [[2, 1, 1], 2], [[2, 2, 2], 1], [[2, 2, 2], 2]],
    "stage5_kernel": [11, 11, 11], "timestep_scale_multiplier": 1000.0, "default_num_inference_steps": 1,
}


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _tolerance(reference: torch.Tensor) -> float:
    return 1e-5 * max(1.0, float(reference.abs().max()))


def _latent(shape: tuple[int, ...] = LATENT_SHAPE, seed: int = 3) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _pair(tmp_path: Path, section: dict, *, prefix: str = "vae.", dtype: torch.dtype = torch.float32,
          extra: dict[str, torch.Tensor] | None = None):
    """(diffusers reference, our decoder loaded from the Lightricks-layout file written from its weights)."""
    reference = tiny25.diffusers_diffusion_decoder(section)
    tiny25.use_kitchen_neighborhood_attention(reference)
    tensors = tiny25.diffusion_decoder_file_tensors(reference, prefix=prefix)
    tensors.update(extra or {})
    path = tiny25.write_file(tmp_path / "ltx-2.5-video-vae-tiny.safetensors", tensors, {"vae": section})
    ours = load_component(path, "diffusion_video_decoder", dtype=dtype).module
    return reference, ours


@torch.no_grad()
def _reference_decode(reference: torch.nn.Module, latent: torch.Tensor, seed: int) -> torch.Tensor:
    return reference.decode(tiny25.denormalize(reference, latent), generator=torch.Generator().manual_seed(seed)).sample


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


def test_config_reads_the_published_section_and_lightricks_defaults() -> None:
    config = DiffusionDecoderConfig.from_metadata(
        {"vae": {"_class_name": "CausalDiffusionVAE", "model_output_type": "x0", "decoder": PUBLISHED_DECODER}})
    assert config.stage5_kernel == (11, 11, 11) and config.default_num_inference_steps == 1
    assert config.timestep_scale_multiplier == 1000.0 and config.model_output_type == "x0"
    # ltx-core 1.2.0 diffusion_tiling facts for this geometry:
    assert config.trailing_pad_latent_frames == 2
    assert config.min_latent_size == (3, 7, 7)
    assert config.min_tile_size == (6, 6, 6)
    assert config.min_tile_overlap == (40, 160)
    assert config.pixel_scale == (2, 8, 8)
    # Keys a file leaves out take the Lightricks reference's defaults (diffusers' differ: 1 step, 1000, "x0").
    bare = DiffusionDecoderConfig.from_metadata({"vae": {"_class_name": "CausalDiffusionVAE", "decoder": {}}})
    assert (bare.default_num_inference_steps, bare.timestep_scale_multiplier, bare.model_output_type) == (2, 1.0, "v")
    assert bare.stage_channels == (1024, 512, 256, 256, 128) and bare.stage5_kernel == (3, 7, 7)


def _published(**decoder_change) -> dict:
    section = {"_class_name": "CausalDiffusionVAE", "decoder": copy.deepcopy(PUBLISHED_DECODER)}
    section["decoder"].update(decoder_change)
    return {"vae": section}


@pytest.mark.parametrize(("metadata", "message"), [
    ({"vae": {"_class_name": "CausalVideoAutoencoder"}}, r"vae._class_name='CausalVideoAutoencoder', expected "
                                                         r"'CausalDiffusionVAE'"),
    ({"vae": {"_class_name": "CausalDiffusionVAE", "model_output_type": "eps", "decoder": PUBLISHED_DECODER}},
     r"vae.model_output_type='eps'"),
    (_published(stage_channels=[2048, 1024, 512, 256, 256]), r"stage_channels\[3\]=256, expected '512"),
    (_published(stage5_kernel=[11, 10, 11]), r"stage5_kernel=\[11, 10, 11\], expected '3 positive odd ints"),
    (_published(stage_depths=[4, 6, 4, 2]), r"vae.decoder.stage_depths=\[4, 6, 4, 2\], expected 'a list of 5"),
    (_published(upsamples=[[[1, 2, 2], 2], [[2, 1, 1], 2], [[2, 2, 2], 1], [[1, 2, 2], 2]]),
     r"vae.decoder.upsamples=.*, expected 'strides whose product is \(8, 32"),
    (_published(head_dim=60), r"head_dim=60, expected .a multiple of 8"),
    (_published(head_dim=8, stage_channels=[64, 32, 16, 16, 8]),
     r"head_dim=8, expected .a multiple of 8 of at least 16"),
    (_published(default_num_inference_steps=0), r"vae.decoder.default_num_inference_steps=0"),
])
def test_config_rejects_unsupported_values(metadata: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiffusionDecoderConfig.from_metadata(metadata)


def test_encoder_config_of_the_nested_section() -> None:
    section = tiny25.diffusion_vae_section()
    config = video_encoder_config({"vae": section})
    assert config.latent_channels == 128 and config.latent_log_var == "constant"
    assert [b.name for b in config.encoder_blocks] == [b[0] for b in section["encoder"]["blocks"]]
    assert config.encoder_scale_factors.time == 8 and config.encoder_scale_factors.height == 32


# --------------------------------------------------------------------------------------------------------
# Neighborhood attention
# --------------------------------------------------------------------------------------------------------


def test_neighborhood_attention_matches_natten_semantics() -> None:
    """Against comfy-kitchen's eager na3d and diffusers' own FlexAttention block mask (both NATTEN semantics)."""
    import comfy_kitchen
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import _neighborhood_block_mask
    from torch.nn.attention.flex_attention import flex_attention

    generator = torch.Generator().manual_seed(0)
    for shape, kernel in (((1, 5, 7, 9, 2, 8), (3, 5, 5)), ((2, 4, 6, 6, 3, 8), (3, 3, 5)), ((1, 3, 4, 5, 1, 8),
                                                                                            (3, 3, 5))):
        q, k, v = (torch.randn(shape, generator=generator) for _ in range(3))
        ours = neighborhood_attention(q, k, v, kernel)
        kitchen = comfy_kitchen.na3d(q, k, v, list(kernel), None, 1.0)
        assert (ours - kitchen).abs().max() < 1e-5
    b, t, h, w, heads, dim = shape  # the last, smallest case also against the dense flex mask
    mask = _neighborhood_block_mask(t, h, w, kernel, q.device)
    flat = [x.reshape(b, t * h * w, heads, dim).transpose(1, 2) for x in (q, k, v)]
    flex = flex_attention(*flat, block_mask=mask, scale=1.0).transpose(1, 2).reshape(shape)
    assert (ours - flex).abs().max() < 1e-5
    with pytest.raises(ValueError, match=r"grid \(T, H, W\)=\(2, 4, 5\), expected at least the kernel \(3, 3, 5\)"):
        neighborhood_attention(q[:, :2], k[:, :2], v[:, :2], (3, 3, 5))


# --------------------------------------------------------------------------------------------------------
# Parity with diffusers
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("output_type", "steps"), [("x0", 1), ("v", 2), ("x0", 3)])
def test_decode_matches_diffusers(tmp_path: Path, output_type: str, steps: int) -> None:
    section = tiny25.diffusion_vae_section(output_type=output_type, steps=steps)
    reference, ours = _pair(tmp_path, section)
    latent = _latent()
    expected = _reference_decode(reference, latent, seed=5)
    with torch.no_grad():
        got = decode_video(latent, ours, generator=torch.Generator().manual_seed(5))
    assert got.shape == expected.shape == (1, 3, 17, 96, 96)
    assert (got - expected).abs().max() <= _tolerance(expected)
    assert expected.std() > 0.1  # a real signal, not a constant


def test_split_layout_and_preview_head_load(tmp_path: Path) -> None:
    """ComfyUI / Kijai split files drop the ``vae.`` prefix; the bundled ``coarse_*`` head is ignored."""
    section = tiny25.diffusion_vae_section()
    coarse = {"decoder.coarse_head.weight": torch.ones(4, 4)}
    reference, ours = _pair(tmp_path, section, prefix="", extra=coarse)
    latent = _latent()
    expected = _reference_decode(reference, latent, seed=1)
    with torch.no_grad():
        got = decode_video(latent, ours, generator=torch.Generator().manual_seed(1))
    assert (got - expected).abs().max() <= _tolerance(expected)


def test_gated_file_matches_the_folded_reference(tmp_path: Path) -> None:
    """Standalone distilled files carry static gates; the reference folds them into the gated linears."""
    section = tiny25.diffusion_vae_section(output_type="v", steps=2)
    reference = tiny25.diffusers_diffusion_decoder(section)
    tiny25.use_kitchen_neighborhood_attention(reference)
    tensors = tiny25.diffusion_decoder_file_tensors(reference)
    generator = torch.Generator().manual_seed(9)
    folds = {"gate_msa": (".attn.to_out.0.weight", ".attn.to_out.0.bias"), "gate_mlp": (".mlp.w_down.weight",),
             "gate_ctx": (".context_proj.weight", ".context_proj.bias")}
    state = reference.state_dict()
    with torch.no_grad():
        for block in range(len(reference.decoder.diff_blocks)):
            for gate, targets in folds.items():
                value = 1 + 0.5 * torch.randn(tiny25.STAGE_CHANNELS[-1], generator=generator)
                tensors[f"vae.decoder.diff_blocks.{block}.{gate}"] = value
                for target in targets:
                    param = state[f"decoder.diff_blocks.{block}{target}"]
                    param.copy_(value[:, None] * param if param.ndim == 2 else value * param)
    path = tiny25.write_file(tmp_path / "gated.safetensors", tensors, {"vae": section})
    ours = load_component(path, "diffusion_video_decoder", dtype=torch.float32).module
    assert ours.diff_blocks[0].gates == ("gate_msa", "gate_mlp", "gate_ctx")
    latent = _latent()
    expected = _reference_decode(reference, latent, seed=2)
    with torch.no_grad():
        got = decode_video(latent, ours, generator=torch.Generator().manual_seed(2))
    assert (got - expected).abs().max() <= _tolerance(expected)


def test_tiled_decode_matches_diffusers_tiled(tmp_path: Path) -> None:
    """Pointwise stage-4/5 windows make both tilings exact: ours tiled == diffusers tiled == diffusers untiled.

    (With wider windows the two tilings blend different tiles, and the Lightricks geometry is ours.) Checks the
    tile bookkeeping: origin / non-origin temporal tiles, the trailing tile's ghost frames, the noise canvas.
    """
    section = tiny25.diffusion_vae_section(output_type="v", steps=2, kernels=([3, 3, 3],) * 3 + ([1, 1, 1],),
                                           stage5_kernel=[1, 1, 1])
    reference, ours = _pair(tmp_path, section)
    latent = _latent()
    whole = _reference_decode(reference, latent, seed=4)
    reference.enable_tiling(tile_sample_min_num_frames=16, tile_sample_stride_num_frames=8,
                            tile_sample_min_height=48, tile_sample_stride_height=32,
                            tile_sample_min_width=48, tile_sample_stride_width=32)
    reference_tiled = _reference_decode(reference, latent, seed=4)
    tiling = TilingConfig(SpatialTiling(64, 32), TemporalTiling(16, 8))
    plan = _plan(ours, latent, tiling)
    assert [len(axis) for axis in plan.tiles] == [2, 2, 2]  # 9 x 6 x 6 stage-4 cells in 8 x 4 x 4 tiles
    with torch.no_grad():
        got = decode_video(latent, ours, tiling, generator=torch.Generator().manual_seed(4))
    assert (reference_tiled - whole).abs().max() <= _tolerance(whole)
    assert (got - whole).abs().max() <= _tolerance(whole)


def test_windowed_stages_match_the_whole_clip(tmp_path: Path) -> None:
    """Stages 1-3 of a temporal window (plus its halo) equal diffusers' stages 1-3 over the whole clip."""
    section = tiny25.diffusion_vae_section()
    reference, ours = _pair(tmp_path, section)
    latent = _latent((1, 128, 9, 3, 3))
    plan = _plan(ours, latent, None)
    with torch.no_grad():
        whole = reference.decoder.forward_stages_1_to_3(tiny25.denormalize(reference, latent))
        assert whole.shape[1] == plan.ghost_cells
        for start, stop in ((0, 9), (5, 17), (14, 25), (20, plan.ghost_cells)):
            window = _stage_4_input(ours, plan, start, stop)
            expected = whole[:, start:stop]
            assert (window - expected).abs().max() <= _tolerance(expected), (start, stop)


def test_bf16_is_close_to_float32(tmp_path: Path) -> None:
    """bf16 weights and compute vs the float32 reference, same seed (noise is drawn in float32 and cast).

    Bounds: mean |error| <= 1 % and max <= 30 % of max(1, max|ref|) (measured: 0.2 % / 17 %; the max is a few
    pixels where bf16 rounding is amplified by the random tiny weights). diffusers' own bf16 decode is no yardstick:
    it draws its noise in bf16, a different sample (mean error 19 % on the same case).
    """
    section = tiny25.diffusion_vae_section(output_type="v", steps=2)
    reference, ours = _pair(tmp_path, section, dtype=torch.bfloat16)
    latent = _latent()
    expected = _reference_decode(reference, latent, seed=6)
    with torch.no_grad():
        got = decode_video(latent, ours, generator=torch.Generator().manual_seed(6)).float()
    error = (got - expected).abs()
    scale = max(1.0, float(expected.abs().max()))
    assert error.max() <= 0.3 * scale, float(error.max())
    assert error.mean() <= 0.01 * scale, float(error.mean())


# --------------------------------------------------------------------------------------------------------
# Loading, detection
# --------------------------------------------------------------------------------------------------------


def test_wrong_decoder_component_is_named(tmp_path: Path) -> None:
    section = tiny25.diffusion_vae_section()
    reference = tiny25.diffusers_diffusion_decoder(section)
    path = tiny25.write_file(tmp_path / "vae.safetensors", tiny25.diffusion_decoder_file_tensors(reference),
                             {"vae": section})
    with pytest.raises(ValueError, match="component 'diffusion_video_decoder'"):
        load_component(path, "video_decoder")
    conv = tiny25.write_file(tmp_path / "conv.safetensors", {"vae.decoder.conv_in.conv.weight": torch.ones(1)},
                             {"vae": {"_class_name": "CausalVideoAutoencoder"}})
    with pytest.raises(WrongComponentError, match=r"vae.decoder.diff_blocks.\* or decoder.diff_blocks.\*"):
        load_component(conv, "diffusion_video_decoder")


def test_detect_names_ltx25_video_vae_and_temporal_upsampler(tmp_path: Path) -> None:
    section = tiny25.diffusion_vae_section()
    reference = tiny25.diffusers_diffusion_decoder(section)
    path = tiny25.write_file(tmp_path / "vae.safetensors", tiny25.diffusion_decoder_file_tensors(reference),
                             {"vae": section})
    desc = describe_file(path)
    assert desc.generation.startswith("LTX-2.5")
    assert desc.kind == "video VAE with the LTX-2.5 diffusion decoder"
    bare = tiny25.write_file(tmp_path / "bare.safetensors", tiny25.diffusion_decoder_file_tensors(reference, ""),
                             {"vae": section}, model_version="")
    assert "diffusion decoder keys" in describe_file(bare).generation
    upsampler = tiny25.write_file(tmp_path / "up.safetensors", {"initial_conv.weight": torch.ones(1)},
                                  {"temporal_upsample": True, "spatial_upsample": False})
    assert describe_file(upsampler).kind == "latent upsampler (temporal x2: twice the frame rate)"


# --------------------------------------------------------------------------------------------------------
# Memory of a tiled decode
# --------------------------------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, types
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    package = types.ModuleType("aiprod")
    package.__path__ = [sys.argv[1]]
    sys.modules["aiprod"] = package
    sys.path.insert(0, sys.argv[1] + "/tests")
    from support import tiny25
    from aiprod.aiprod_core.video_vae import (DiffusionDecoderConfig, DiffusionVideoDecoder, TemporalTiling,
                                              TilingConfig, diffusion_decode)
    from aiprod.aiprod_core.video_vae import neighborhood_attention

    torch.set_num_threads(1)
    # A small score budget for the PyTorch attention, so that the (fixed-size) attention scratch does not hide
    # how the activations scale with the clip.
    neighborhood_attention.SCORE_BUDGET = 2**16
    tiling = TilingConfig(temporal=TemporalTiling(16, 8))
    runs = []
    for output_type, steps in (("x0", 1), ("v", 2)):
        section = tiny25.diffusion_vae_section(output_type=output_type, steps=steps)
        decoder = tiny25.honest_init(DiffusionVideoDecoder(DiffusionDecoderConfig.from_metadata({"vae": section})),
                                     seed=0).eval()
        for frames in (4, 16):
            latent = torch.randn(1, 128, frames, 3, 3)
            out = torch.empty(1, 3, 1 + 8 * (frames - 1), 96, 96)
            for kind, grid in (("tiled", tiling), ("untiled", None)):
                runs.append((f"{output_type}{frames}/{kind}", decoder, latent, grid, out))
    # One profile, one record_function window per decode: the allocator's events (bytes > 0 / < 0) replayed in
    # time order within each window give its peak of live bytes (separate profiles leak events into each other).
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for name, decoder, latent, grid, out in runs:
            with record_function(name):
                diffusion_decode(decoder, latent, grid, generator=torch.Generator().manual_seed(0), out=out)
    events = prof.profiler.kineto_results.events()
    memory = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    result = {}
    for name, *_ in runs:
        window = next(e for e in events if e.name() == name)
        live = peak = 0
        for event in memory:
            if window.start_ns() <= event.start_ns() <= window.end_ns():
                live += event.nbytes()
                peak = max(peak, live)
        clip, kind = name.split("/")
        result.setdefault(clip, {})[kind] = peak
    print(json.dumps(result))
    """
)


def test_tiled_decode_memory_stays_flat_when_the_clip_grows() -> None:
    """Peak working memory of a temporally tiled diffusion decode for 4 vs 16 latent frames, measured as the conv
    decoder's is (tests/core/test_video_vae.py): a fresh subprocess decodes each length into a preallocated
    float32 output under ``torch.profiler.profile(profile_memory=True)`` and replays the allocator events; the
    untiled decode is the control that must grow. Single-step x0 draws noise per tile; the multi-step v decode
    keeps its noise canvas in the output buffer. The attention's score budget is lowered there (its scratch is a
    fixed size, 64 MB by default, larger than the tiny model's activations, and would hide any growth). Measured
    (KB, 4 -> 16 latent frames): tiled x0 10549 -> 11688, v 13646 -> 14785; untiled x0 12982 -> 62693, v 17977 -> 86268.
    """
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(REPO_ROOT)], capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for kind in ("x0", "v"):
        short, long = result[f"{kind}4"], result[f"{kind}16"]
        assert short["tiled"] > 0
        assert long["tiled"] <= 1.3 * short["tiled"], result
        assert long["untiled"] >= 2.5 * short["untiled"], result
        assert long["tiled"] < 0.5 * long["untiled"], result
    assert math.isfinite(result["x04"]["tiled"])


def test_encoder_of_a_diffusion_vae_file_loads_from_its_nested_config(tmp_path: Path) -> None:
    """The diffusion-VAE file keeps the conv encoder (``vae.encoder.*``) under a nested ``encoder`` section; it
    loads as the usual `VideoEncoder` and encodes as ltx-core's encoder built from the same blocks."""
    from ltx_core.model.video_vae import VideoEncoderConfigurator

    from aiprod.aiprod_core.video_vae import VideoEncoder

    section = tiny25.diffusion_vae_section()
    flat = {"vae": {"encoder_blocks": section["encoder"]["blocks"], "latent_log_var": "constant",
                    "spatial_padding_mode": "zeros", "norm_layer": "pixel_norm", "patch_size": 4}}
    reference = tiny25.honest_init(VideoEncoderConfigurator.from_config(flat), seed=8).eval()
    stats = reference.per_channel_statistics
    stats.get_buffer("std-of-means").copy_(torch.rand(128) + 0.5)
    stats.get_buffer("mean-of-means").copy_(0.1 * torch.randn(128))
    decoder = tiny25.diffusers_diffusion_decoder(section)
    tensors = tiny25.diffusion_decoder_file_tensors(decoder)
    tensors.update({f"vae.encoder.{k}": v for k, v in reference.state_dict().items()
                    if not k.startswith("per_channel_statistics.")})
    tensors.update({f"vae.{k}": v for k, v in reference.state_dict().items()
                    if k.startswith("per_channel_statistics.")})
    path = tiny25.write_file(tmp_path / "vae.safetensors", tensors, {"vae": section})
    ours = load_component(path, "video_encoder", dtype=torch.float32).module
    assert isinstance(ours, VideoEncoder)
    video = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected, got = reference(video), ours(video)
    assert got.shape == expected.shape == (1, 128, 2, 2, 2)
    assert (got - expected).abs().max() <= _tolerance(expected)
