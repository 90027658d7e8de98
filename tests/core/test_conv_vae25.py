"""LTX-2.5 conv video decoder (``ltx-2.5-video-vae-conv``): parity with diffusers 0.42.1's ``AutoencoderKLLTX2Video``.

diffusers' converter states the 2.5 conv VAE's metadata blocks are byte-identical to LTX-2.3's, so the file is
the flat ``CausalVideoAutoencoder`` section with ``model_version`` 2.5; it loads through the existing
``video_decoder`` component. The diffusers decoder is built tiny with its own classes; its weights are written
under the Lightricks keys found by applying diffusers' own rename table (``LTX_2_3_VIDEO_VAE_RENAME_DICT`` of
``scripts/convert_ltx2_to_diffusers.py``, copied below as data) to each of our module's keys. The tiled decode
follows the Lightricks geometry (diffusers blends its tiles differently) and is checked against ltx-core in
tests/core/test_video_vae.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from support import tiny25
from support import tiny_configs as tc

from aiprod.aiprod_core.video_vae import VideoDecoder, VideoVAEConfig, decode_video
from aiprod.loaders.component_loader import load_component

# Lightricks key fragment -> diffusers fragment, applied in order with str.replace (the converter's table).
RENAMES = (
    ("up_blocks.0", "mid_block"), ("up_blocks.1", "up_blocks.0.upsamplers.0"), ("up_blocks.2", "up_blocks.0"),
    ("up_blocks.3", "up_blocks.1.upsamplers.0"), ("up_blocks.4", "up_blocks.1"),
    ("up_blocks.5", "up_blocks.2.upsamplers.0"), ("up_blocks.6", "up_blocks.2"),
    ("last_time_embedder", "time_embedder"), ("last_scale_shift_table", "scale_shift_table"),
    ("res_blocks", "resnets"), ("per_channel_statistics.mean-of-means", "latents_mean"),
    ("per_channel_statistics.std-of-means", "latents_std"),
    ("up_blocks.7", "up_blocks.3.upsamplers.0"), ("up_blocks.8", "up_blocks.3"),
)


def _diffusers_key(key: str) -> str:
    name = key if key.startswith("per_channel_statistics.") else f"decoder.{key}"
    for old, new in RENAMES:
        name = name.replace(old, new)
    return name


def test_conv_decoder_matches_diffusers(tmp_path: Path) -> None:
    from diffusers import AutoencoderKLLTX2Video

    section = tc.video_vae_config(tc.LTX23)  # the 2.3 block layout, which the 2.5 conv VAE keeps
    # Decoder widths (diffusers order): base 8 x (2, 4, 4, 8) from the tiny config's multipliers 2, 2, 1, 2.
    reference = AutoencoderKLLTX2Video(
        block_out_channels=(16, 16, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
        decoder_block_out_channels=(16, 32, 32, 64), decoder_layers_per_block=(1, 1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True, True), decoder_inject_noise=(False,) * 5,
        upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
        upsample_residual=(False,) * 4, upsample_factor=(2, 2, 1, 2), timestep_conditioning=False,
        decoder_causal=False, decoder_spatial_padding_mode="zeros",
    )
    tiny25.honest_init(reference, seed=2).eval()
    generator = torch.Generator().manual_seed(3)
    reference.latents_mean.copy_(0.2 * torch.randn(128, generator=generator))
    reference.latents_std.copy_(torch.rand(128, generator=generator) + 0.5)
    state = reference.state_dict()
    ours_meta = VideoDecoder(VideoVAEConfig.from_metadata({"vae": section}), device="meta")
    used = {_diffusers_key(k) for k in ours_meta.state_dict()}
    assert used == {k for k in state if k.startswith("decoder.") or k.startswith("latents_")}
    tensors = {(k if k.startswith("per_channel_statistics.") else f"decoder.{k}"): state[_diffusers_key(k)]
               for k in ours_meta.state_dict()}
    path = tiny25.write_file(tmp_path / "ltx-2.5-video-vae-conv-tiny.safetensors",
                             {f"vae.{k}": v for k, v in tensors.items()}, {"vae": section})
    ours = load_component(path, "video_decoder", dtype=torch.float32).module
    latent = torch.randn(1, 128, 3, 2, 3, generator=generator)
    with torch.no_grad():
        expected = reference.decode(tiny25.denormalize(reference, latent)).sample
        got = decode_video(latent, ours)
    assert got.shape == expected.shape == (1, 3, 17, 64, 96)
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))
