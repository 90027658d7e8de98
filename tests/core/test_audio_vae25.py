"""LTX-2.5 audio VAE and vocoder (``vae/ltx-2.5-audio-vae-bf16``): parity with diffusers 0.42.1.

What LTX-2.5 changes in audio, from the sources: nothing in the layers, config keys or key names. diffusers'
converter (``scripts/convert_ltx2_to_diffusers.py``, ``get_ltx2_audio_vae_config`` / ``get_ltx2_vocoder_config``)
gives version 2.5 the LTX-2.3 configs ("Same config as LTX-2.0 / 2.3", "Same config as LTX-2.3") and rename
tables; Lightricks/LTX-2 1.2.0 loads the per-component file through the same configurators and key filters as a
single-file checkpoint (``audio_vae.encoder.*`` / ``audio_vae.decoder.*`` / ``audio_vae.per_channel_statistics.*``
and ``vocoder.{vocoder,bwe_generator,mel_stft}.*``, metadata ``config`` with ``audio_vae`` / ``vocoder``
sections). The one behavioural change of 1.2.0 is that ``VocoderWithBWE.forward`` computes in float32 whatever
the weights' dtype (tested below with a bf16 file).

The diffusers modules are built tiny with their own classes; their weights are written under the Lightricks keys
found by applying diffusers' own rename tables (copied below as data) to each of our modules' keys, so the loads
are strict on both sides. Tolerance: max|ours - ref| <= 1e-5 x max(1, max|ref|).

Where diffusers and the Lightricks layout disagree, the Lightricks facts win:
- Latent statistics: Lightricks keeps ``audio_vae.per_channel_statistics.{mean,std}-of-means`` and normalises
  inside the encoder / decoder; diffusers holds ``latents_mean`` / ``latents_std`` on the autoencoder and its
  pipeline applies them to the packed (B, T, C x F) latent (``LTX2Pipeline._normalize_audio_latents``), so the
  diffusers side here is wrapped with those same static methods.
- Attention defaults: ltx-core reads a missing ``mid_block_add_attention`` as True and ``attn_resolutions`` as
  {8, 16, 32}; diffusers defaults to False / None. Our config follows ltx-core; the tiny metadata states both.
- Final activation of the 16 kHz generator: ltx-core's configurator builds it with ``apply_final_activation``
  True and ``use_tanh_at_final`` from the config (False here: a clamp to [-1, 1]); diffusers' 2.3 / 2.5 converter
  config sets ``final_act_fn=None`` (no clamp). The diffusers module is built with ``final_act_fn="clamp"``.
- Vocoder key names (diffusers <- Lightricks): ``upsamplers`` <- ``ups``, ``resnets`` <- ``resblocks``,
  ``conv_in`` / ``conv_out`` / ``act_out`` <- ``conv_pre`` / ``conv_post`` / ``act_post``, ``downsample.filter``
  <- ``downsample.lowpass.filter``; diffusers leaves the BWE STFT / mel buffers at zero for the checkpoint to fill.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path

import pytest
import torch
from support import tiny25
from support import tiny_configs as tc
from torch import nn

from aiprod.aiprod_core.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig, VocoderWithBWE
from aiprod.aiprod_core.audio_vae.bwe import mel_filterbank, stft_bases
from aiprod.loaders.component_loader import load_component

pytestmark = pytest.mark.oracle

RTOL = 1e-5
BF16_RTOL = 3e-2  # relative L2 error of a bf16 audio VAE against float32 (as for LTX-2.3, tests/core/test_audio_vae.py)
WAVEFORM_STD = 0.1  # each generator's output conv is rescaled to this: off the clamp, far from zero
LATENT_FRAMES = 4  # -> 13 mel frames

# diffusers' rename tables (Lightricks fragment -> diffusers fragment), applied in order with str.replace.
AUDIO_VAE_RENAMES = (("per_channel_statistics.mean-of-means", "latents_mean"),
                     ("per_channel_statistics.std-of-means", "latents_std"))
VOCODER_RENAMES = (("resblocks", "resnets"), ("conv_pre", "conv_in"), ("conv_post", "conv_out"),
                   ("act_post", "act_out"), ("downsample.lowpass", "downsample"), (".ups.", ".upsamplers."))


def _config(attention: bool = False) -> dict:
    config = tc.checkpoint_config(tc.LTX23)  # the 2.3 layout, which 2.5 keeps
    if attention:  # attention after each level-0 / deepest-level block and in the mid block
        config["audio_vae"]["model"]["params"]["ddconfig"].update(attn_resolutions=[256, 64],
                                                                  mid_block_add_attention=True)
    return {"audio_vae": config["audio_vae"], "vocoder": config["vocoder"]}


def _fan_in(module: nn.Module, weight: torch.Tensor) -> float:
    if isinstance(module, nn.ConvTranspose1d):  # (in, out, k): each output sees in * k / stride taps
        return weight.shape[0] * weight.shape[2] / module.stride[0]
    return float(weight[0].numel())


@torch.no_grad()
def _honest_init(module: nn.Module, seed: int) -> nn.Module:
    """normal(0, 1/fan_in) conv weights, N(0, 0.02) biases, N(0, 0.1) log-scale snakes, real latent statistics."""
    generator = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            if name == "weight":
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(_fan_in(sub, param)))
            else:
                std = 0.1 if name in ("alpha", "beta") else 0.02
                param.copy_(std * torch.randn(param.shape, generator=generator))
    for name, buffer in module.named_buffers():
        if name == "latents_mean":
            buffer.copy_(0.2 * torch.randn(buffer.shape, generator=generator))
        elif name == "latents_std":
            buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
    return module.eval()


def _log_mel(batch: int = 2, frames: int = 13, seed: int = 2) -> torch.Tensor:
    """(B, 2, frames, 64) log-mel-like values (the decoder's output range)."""
    return torch.randn(batch, 2, frames, 64, generator=torch.Generator().manual_seed(seed)) * 1.5 - 3.0


def _latent(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 8, LATENT_FRAMES, 16, generator=torch.Generator().manual_seed(seed))


@functools.cache
def _diffusers_audio_vae(attention: bool = False) -> nn.Module:
    from diffusers import AutoencoderKLLTX2Audio

    dd = _config(attention)["audio_vae"]["model"]["params"]["ddconfig"]
    model = AutoencoderKLLTX2Audio(
        base_channels=dd["ch"], output_channels=dd["out_ch"], ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=dd["num_res_blocks"], attn_resolutions=tuple(dd["attn_resolutions"]) or None,
        in_channels=dd["in_channels"], resolution=dd["resolution"], latent_channels=dd["z_channels"],
        norm_type=dd["norm_type"], causality_axis=dd["causality_axis"],
        mid_block_add_attention=dd["mid_block_add_attention"], mel_bins=dd["mel_bins"], double_z=dd["double_z"],
    )
    return _honest_init(model, seed=11 + attention)


@torch.no_grad()
def _calibrate(model: nn.Module) -> None:
    """Rescale each generator's ``conv_out`` so its waveform has std ``WAVEFORM_STD`` (in running order)."""
    for generator in (model.vocoder, model.bwe_generator):
        seen: list[float] = []
        handle = generator.conv_out.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.std().item()))
        model(_log_mel())
        handle.remove()
        generator.conv_out.weight.mul_(WAVEFORM_STD / seen[0])


@functools.cache
def _diffusers_vocoder() -> nn.Module:
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    section = _config()["vocoder"]
    main, bwe = section["vocoder"], section["bwe"]

    def generator(sub: dict, prefix: str, final: str | None) -> dict:
        return {f"{prefix}hidden_channels": sub["upsample_initial_channel"],
                f"{prefix}upsample_kernel_sizes": sub["upsample_kernel_sizes"],
                f"{prefix}upsample_factors": sub["upsample_rates"],
                f"{prefix}resnet_kernel_sizes": sub["resblock_kernel_sizes"],
                f"{prefix}resnet_dilations": sub["resblock_dilation_sizes"], f"{prefix}act_fn": "snakebeta",
                f"{prefix}antialias": True, f"{prefix}final_act_fn": final,
                f"{prefix}final_bias": sub["use_bias_at_final"]}

    model = LTX2VocoderWithBWE(
        **generator(main, "", "clamp"), **generator(bwe, "bwe_", None), filter_length=bwe["n_fft"],
        hop_length=bwe["hop_length"], window_length=bwe["n_fft"], num_mel_channels=bwe["num_mels"],
        input_sampling_rate=bwe["input_sampling_rate"], output_sampling_rate=bwe["output_sampling_rate"],
    )
    _honest_init(model, seed=13)
    forward, inverse = stft_bases(bwe["n_fft"], bwe["hop_length"])  # the values the Lightricks file stores
    with torch.no_grad():
        model.mel_stft.stft_fn.forward_basis.copy_(forward)
        model.mel_stft.stft_fn.inverse_basis.copy_(inverse)
        model.mel_stft.mel_basis.copy_(mel_filterbank(bwe["num_mels"], bwe["n_fft"], bwe["input_sampling_rate"]))
    _calibrate(model)
    return model


def _renamed(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


def _meta_vocoder(config: dict) -> nn.Module:
    from aiprod.aiprod_core.audio_vae import VocoderConfig, build_vocoder

    return build_vocoder(VocoderConfig.from_metadata(config), device="meta")


def _write_file(tmp_path: Path, attention: bool = False, dtype: torch.dtype = torch.float32,
                metadata: dict | None = None) -> Path:
    """The diffusers weights under the Lightricks 2.5 audio file keys (each of our keys mapped by the tables);
    ``metadata`` replaces the ``config`` written to the file."""
    config = _config(attention)
    vae, vocoder = _diffusers_audio_vae(attention).state_dict(), _diffusers_vocoder().state_dict()
    audio = AudioVAEConfig.from_metadata(config)
    tensors: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for half, module in (("encoder", AudioEncoder(audio, device="meta")),
                         ("decoder", AudioDecoder(audio, device="meta"))):
        for key in module.state_dict():
            shared = key.startswith("per_channel_statistics.")  # one copy in the file, read by both halves
            name = _renamed(key, AUDIO_VAE_RENAMES) if shared else f"{half}.{key}"
            tensors[f"audio_vae.{key}" if shared else f"audio_vae.{half}.{key}"] = vae[name]
            used.add(name)
    assert used == set(vae), used ^ set(vae)  # every diffusers tensor has exactly one Lightricks key
    for key in _meta_vocoder(config).state_dict():
        tensors[f"vocoder.{key}"] = vocoder[_renamed(key, VOCODER_RENAMES)]
    assert {_renamed(k.removeprefix("vocoder."), VOCODER_RENAMES) for k in tensors if k.startswith("vocoder.")} \
        == set(vocoder)
    return tiny25.write_file(tmp_path / f"ltx-2.5-audio-vae-tiny-{attention}.safetensors", tensors,
                             metadata or config, dtype=dtype)


def _statistics(vae: nn.Module, latent: torch.Tensor, normalize: bool) -> torch.Tensor:
    """diffusers' pipeline (un-)normalisation of a (B, C, T, F) latent: packed to (B, T, C x F) and back."""
    from diffusers import LTX2Pipeline

    _, _, frames, bins = latent.shape
    packed = LTX2Pipeline._pack_audio_latents(latent)
    apply = LTX2Pipeline._normalize_audio_latents if normalize else LTX2Pipeline._denormalize_audio_latents
    return LTX2Pipeline._unpack_audio_latents(apply(packed, vae.latents_mean, vae.latents_std), frames, bins)


def _assert_parity(ours: torch.Tensor, ref: torch.Tensor, rtol: float = RTOL) -> None:
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    assert torch.isfinite(ref).all() and ref.std() > 1e-3
    diff = (ours.double() - ref.double()).abs().max().item()
    assert diff <= rtol * max(1.0, ref.abs().max().item()), f"max|ours - ref| = {diff:.3e}"


@pytest.fixture(scope="module")
def audio_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_file(tmp_path_factory.mktemp("audio25"))


@pytest.mark.parametrize("attention", [False, True])
@torch.no_grad()
def test_audio_encode_decode_match_diffusers(tmp_path: Path, audio_file: Path, attention: bool) -> None:
    path = _write_file(tmp_path, attention) if attention else audio_file
    reference = _diffusers_audio_vae(attention)
    encoder = load_component(path, "audio_encoder", dtype=torch.float32).module
    decoder = load_component(path, "audio_decoder", dtype=torch.float32).module
    mel = _log_mel(frames=14)  # 14 mel frames -> ceil(14 / 4) = 4 latent frames
    expected = _statistics(reference, reference.encode(mel).latent_dist.mode(), normalize=True)
    got = encoder(mel)
    assert got.shape == (2, 8, 4, 16)
    _assert_parity(got, expected)
    latent = _latent()
    expected = reference.decode(_statistics(reference, latent, normalize=False)).sample
    got = decoder(latent)
    assert got.shape == (2, 2, 4 * LATENT_FRAMES - 3, 64)
    _assert_parity(got, expected)


@torch.no_grad()
def test_vocoder_with_bwe_matches_diffusers(audio_file: Path) -> None:
    reference = _diffusers_vocoder()
    vocoder = load_component(audio_file, "vocoder", dtype=torch.float32).module
    assert isinstance(vocoder, VocoderWithBWE) and vocoder.output_sampling_rate == 48000
    mel = _log_mel()
    expected = reference(mel)
    got = vocoder(mel)
    assert got.shape == (2, 2, 13 * 160 * 3)
    assert expected.abs().max() < 0.999  # not pinned to the final clamp
    _assert_parity(vocoder.vocoder(mel), reference.vocoder(mel))  # the 16 kHz stage alone
    assert (got - vocoder.resampler(vocoder.vocoder(mel))).abs().max() > 1e-3  # the BWE residual contributes
    _assert_parity(got, expected)


@torch.no_grad()
def test_bf16_file(tmp_path: Path) -> None:
    """The file as shipped (bf16). The vocoder computes in float32 over its bf16 weights (Lightricks 1.2.0), so it
    equals diffusers run in float32 on the same bf16-rounded weights; the audio VAE computes in bf16."""
    path = _write_file(tmp_path, dtype=torch.bfloat16)
    vocoder = load_component(path, "vocoder", dtype=torch.bfloat16).module
    decoder = load_component(path, "audio_decoder", dtype=torch.bfloat16).module
    assert all(p.dtype == torch.bfloat16 for p in [*vocoder.parameters(), *decoder.parameters()])
    rounded = {k: v.bfloat16().float() for k, v in _diffusers_vocoder().state_dict().items()}
    reference = _diffusers_vocoder_like(rounded)
    mel = _log_mel()
    got = vocoder(mel)
    assert got.dtype == torch.float32  # the input's dtype
    _assert_parity(got, reference(mel))
    assert vocoder(mel.bfloat16()).dtype == torch.bfloat16
    latent = _latent()
    f32 = _diffusers_audio_vae()
    expected = f32.decode(_statistics(f32, latent, normalize=False)).sample
    got = decoder(latent.bfloat16())
    assert got.dtype == torch.bfloat16
    relative = (torch.linalg.vector_norm(got.float() - expected) / torch.linalg.vector_norm(expected)).item()
    assert relative <= BF16_RTOL, relative


def _diffusers_vocoder_like(state: dict[str, torch.Tensor]) -> nn.Module:
    model = copy.deepcopy(_diffusers_vocoder())
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_audio_file_is_detected_as_ltx25_audio(audio_file: Path) -> None:
    from aiprod.loaders.detect import describe_file

    description = describe_file(audio_file)
    assert description.generation == "LTX-2.5 (22B family)"
    assert description.kind == "audio VAE + vocoder"
    assert description.loader.startswith("AIPROD Audio VAE Loader")


def test_audio_file_config_errors_name_the_key(tmp_path: Path) -> None:
    config = _config()
    config["vocoder"]["bwe"]["num_mels"] = 80
    path = _write_file(tmp_path, metadata=config)
    with pytest.raises(ValueError, match=re.escape("vocoder.bwe.num_mels=80, expected 64")):
        load_component(path, "vocoder", dtype=torch.float32)
    config = _config()
    config["audio_vae"]["model"]["params"]["ddconfig"]["ch"] = 64
    path = _write_file(tmp_path, metadata=config)
    with pytest.raises(ValueError, match=re.escape("ch=64, expected 128")):
        load_component(path, "audio_decoder", dtype=torch.float32)
