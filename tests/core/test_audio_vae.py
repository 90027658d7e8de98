"""Audio VAE, mel front end and vocoders of both generations against ltx-core 1.0.0 (tiny configs, float32).

The reference modules are built by ltx-core's own configurators from ``support.tiny_configs``, initialised
with seeded honest weights, and their state dicts loaded strictly into ours. Tolerance: max|ours - ref| <=
1e-5 x max(1, max|ref|) per output unless a comment states why an op needs more.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import zlib

import numpy as np
import pytest
import torch
from support import tiny_configs as tc
from torch import nn

from aiprod.aiprod_core.audio_vae import (
    AudioDecoder,
    AudioEncoder,
    AudioVAEConfig,
    MelFrontEnd,
    Vocoder,
    VocoderConfig,
    VocoderWithBWE,
    build_vocoder,
    decode_latent,
    encode_waveform,
)
from aiprod.aiprod_core.audio_vae.bwe import mel_filterbank, stft_bases

logger = logging.getLogger(__name__)

RTOL = 1e-5
BF16_RTOL = 3e-2
# LTX-2.3's BigVGAN-v2 stack in bf16: under honest random weights its residual stream grows ~1.5x per stage
# (std ~45 before the output conv), where bf16 spaces values 0.25 apart, so SnakeBeta's sin(x * e^alpha) loses
# ~0.1 rad of phase. Measured 3.5e-2 (3.6e-2 for the 16 kHz stage alone; computing the activations in float32
# does not change it: the error is in the bf16 conv outputs). Everything else stays within 3e-2 (measured <= 1.4e-2).
BF16_RTOL_BIGVGAN = 5e-2
SAMPLE_RATE = 16000
LATENT_FRAMES = 4  # -> 13 mel frames -> 2080 samples at 16 kHz
WAVEFORM_STD = 0.1  # generators' output convs are rescaled to this: off the tanh / clamp, yet far from zero


# --------------------------------------------------------------------------------------------------------
# Reference construction and honest initialisation
# --------------------------------------------------------------------------------------------------------


def _fan_in(module: nn.Module, weight: torch.Tensor) -> float:
    if isinstance(module, nn.ConvTranspose1d):  # (in, out, k): each output sees in * k / stride taps
        return weight.shape[0] * weight.shape[2] / module.stride[0]
    return float(weight[0].numel())


@torch.no_grad()
def _honest_init(module: nn.Module, seed: int) -> nn.Module:
    """normal(0, 1/fan_in) conv weights, small nonzero biases, 1 + N(0, .1) norms, N(0, .1) log-scale snakes."""
    gen = torch.Generator().manual_seed(seed)

    def normal(shape: torch.Size, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std + mean

    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            if isinstance(sub, nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.Linear) and name == "weight":
                param.copy_(normal(param.shape, 1.0 / math.sqrt(_fan_in(sub, param))))
            elif isinstance(sub, nn.GroupNorm) and name == "weight":
                param.copy_(normal(param.shape, 0.1, 1.0))
            elif name == "bias":
                param.copy_(normal(param.shape, 0.02))
            elif name in ("alpha", "beta"):
                param.copy_(normal(param.shape, 0.1))
            else:
                raise AssertionError(f"no init rule for {type(sub).__name__}.{name}")
        for name, buf in sub.named_buffers(recurse=False):
            if name == "std-of-means":
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
            elif name == "mean-of-means":
                buf.copy_(normal(buf.shape, 0.2))
    return module


@torch.no_grad()
def _calibrate_generators(vocoder: nn.Module) -> None:
    """Rescale each generator's output conv so its pre-activation waveform has std ``WAVEFORM_STD``.

    Honest weights make the SnakeBeta / residual stacks grow the signal by ~1.5x per stage, which would pin the
    waveform to the final tanh / clamp; the generators run in order (the BWE generator sees the vocoder's output).
    """
    generators = [m for m in vocoder.modules() if hasattr(m, "conv_post") and hasattr(m, "ups")]
    for generator in generators:
        captured: list[torch.Tensor] = []
        handle = generator.conv_post.register_forward_hook(lambda _m, _i, out, seen=captured: seen.append(out.std()))
        vocoder(_log_mel())
        handle.remove()
        scale = WAVEFORM_STD / captured[0].item()
        generator.conv_post.weight.mul_(scale)
        if generator.conv_post.bias is not None:
            generator.conv_post.bias.mul_(scale)


def _fill_bwe_buffers(ref: nn.Module, bwe: dict) -> None:
    """ltx-core leaves the BWE STFT / mel buffers at zero for the checkpoint: give them real values."""
    forward, inverse = stft_bases(bwe["n_fft"], bwe["hop_length"])
    with torch.no_grad():
        ref.mel_stft.stft_fn.forward_basis.copy_(forward)
        ref.mel_stft.stft_fn.inverse_basis.copy_(inverse)
        ref.mel_stft.mel_basis.copy_(mel_filterbank(bwe["num_mels"], bwe["n_fft"], bwe["input_sampling_rate"]))


VARIANTS: dict[str, dict[str, dict]] = {
    "plain": {},
    # Attention after the level blocks (resolution 256 = level 0, 64 = the deepest level) and in the mid block.
    "attention": {"ddconfig": {"attn_resolutions": [256, 64], "mid_block_add_attention": True}},
    "group_norm_noncausal": {"ddconfig": {"norm_type": "group", "causality_axis": None}},
    # BWE hop 96: the 16 kHz waveform (frames x 160 samples) is padded to whole 96-sample mel frames.
    "bwe_padding": {
        "bwe": {"hop_length": 96, "upsample_rates": [6, 6, 2, 2, 2], "upsample_kernel_sizes": [12, 12, 4, 4, 4]}
    },
}


def _config(generation: str, variant: str = "plain") -> dict:
    config = tc.checkpoint_config(generation)
    config["audio_vae"]["model"]["params"]["ddconfig"].update(VARIANTS[variant].get("ddconfig", {}))
    if "bwe" in VARIANTS[variant]:
        config["vocoder"]["bwe"].update(VARIANTS[variant]["bwe"])
    return config


@functools.cache
def _reference(kind: str, generation: str, variant: str = "plain") -> nn.Module:
    from ltx_core.model.audio_vae import AudioDecoderConfigurator, AudioEncoderConfigurator, VocoderConfigurator

    configurator = {"encoder": AudioEncoderConfigurator, "decoder": AudioDecoderConfigurator,
                    "vocoder": VocoderConfigurator}[kind]
    config = _config(generation, variant)
    with torch.random.fork_rng(devices=[]):
        module = configurator.from_config(config)
    _honest_init(module, seed=zlib.crc32(f"{kind}/{generation}/{variant}".encode()))
    if kind == "vocoder" and generation == tc.LTX23:
        _fill_bwe_buffers(module, config["vocoder"]["bwe"])
    if kind == "vocoder":
        _calibrate_generators(module)
    return module.eval()


def _build_ours(kind: str, generation: str, variant: str = "plain", **factory: object) -> nn.Module:
    config = _config(generation, variant)
    if kind == "vocoder":
        return build_vocoder(VocoderConfig.from_metadata(config), **factory)
    cls = AudioEncoder if kind == "encoder" else AudioDecoder
    return cls(AudioVAEConfig.from_metadata(config), **factory)


def _pair(kind: str, generation: str, variant: str = "plain") -> tuple[nn.Module, nn.Module]:
    ref = _reference(kind, generation, variant)
    ours = _build_ours(kind, generation, variant)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours.eval()


# --------------------------------------------------------------------------------------------------------
# Inputs and comparison
# --------------------------------------------------------------------------------------------------------


def _waveform(batch: int = 2, samples: int = 1600, seed: int = 0) -> torch.Tensor:
    """(B, 2, S) tones plus noise in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SAMPLE_RATE
    freqs = torch.rand(batch, 2, 1, generator=gen) * 3000 + 100
    tone = 0.5 * torch.sin(2 * math.pi * freqs * t)
    return (tone + 0.1 * torch.randn(batch, 2, samples, generator=gen)).clamp(-1, 1)


def _latent(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 8, LATENT_FRAMES, 16, generator=torch.Generator().manual_seed(seed))


def _log_mel(batch: int = 2, frames: int = 13, seed: int = 2) -> torch.Tensor:
    """(B, 2, frames, 64) log-mel-like values (the decoder's output range)."""
    return torch.randn(batch, 2, frames, 64, generator=torch.Generator().manual_seed(seed)) * 1.5 - 3.0


def _assert_parity(name: str, ours: torch.Tensor, ref: torch.Tensor, rtol: float = RTOL) -> float:
    assert ours.shape == ref.shape, f"{name}: {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(ref).all()
    diff = (ours.double() - ref.double()).abs().max().item()
    bound = rtol * max(1.0, ref.abs().max().item())
    logger.info("%s: max|ours - ref| = %.3e (bound %.1e, max|ref| = %.3f)", name, diff, bound, ref.abs().max())
    assert diff <= bound, f"{name}: max abs diff {diff:.3e} > {bound:.3e}"
    return diff


def _assert_live_waveform(wave: torch.Tensor) -> None:
    """Guards against a vacuous comparison: the waveform moves and is not pinned to the clamp."""
    assert wave.std() > 1e-3
    assert wave.abs().max() < 0.999


# --------------------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("sample_rate", [16000, 24000])
@torch.no_grad()
def test_mel_front_end_matches_reference(sample_rate):
    from ltx_core.model.audio_vae import AudioProcessor
    from ltx_core.types import Audio

    config = AudioVAEConfig.from_metadata(tc.checkpoint_config(tc.LTX2))
    reference = AudioProcessor(target_sample_rate=config.sample_rate, mel_bins=config.mel_bins,
                               mel_hop_length=config.mel_hop_length, n_fft=config.n_fft)
    waveform = _waveform(samples=sample_rate // 10)
    ref = reference.waveform_to_mel(Audio(waveform=waveform, sampling_rate=sample_rate))
    ours = MelFrontEnd(config)(waveform, sample_rate)
    assert ours.shape == (2, 2, 11, 64)
    assert ref.std() > 0.5  # a real spectrogram, not the log floor
    _assert_parity(f"mel@{sample_rate}", ours, ref)


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_audio_encode_matches_reference(generation):
    from ltx_core.model.audio_vae import encode_audio
    from ltx_core.types import Audio

    ref_encoder, encoder = _pair("encoder", generation)
    waveform = _waveform()
    ref = encode_audio(Audio(waveform=waveform, sampling_rate=SAMPLE_RATE), ref_encoder)
    ours = encode_waveform(waveform, SAMPLE_RATE, encoder)
    assert ours.shape == (2, 8, 3, 16)  # 11 mel frames -> ceil(11 / 4) latent frames
    _assert_parity(f"encode[{generation}]", ours, ref)


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_audio_decode_matches_reference(generation):
    ref_decoder, decoder = _pair("decoder", generation)
    latent = _latent()
    ref = ref_decoder(latent)
    ours = decoder(latent)
    assert ours.shape == (2, 2, 4 * LATENT_FRAMES - 3, 64)
    _assert_parity(f"decode[{generation}]", ours, ref)


@pytest.mark.oracle
@pytest.mark.parametrize("variant", ["attention", "group_norm_noncausal"])
@torch.no_grad()
def test_audio_vae_variants_match_reference(variant):
    ref_encoder, encoder = _pair("encoder", tc.LTX2, variant)
    ref_decoder, decoder = _pair("decoder", tc.LTX2, variant)
    mel = MelFrontEnd(encoder.config)(_waveform(batch=1), SAMPLE_RATE)
    _assert_parity(f"encode[{variant}]", encoder(mel), ref_encoder(mel))
    latent = _latent(batch=1)
    ref = ref_decoder(latent)
    frames = 4 * LATENT_FRAMES - (0 if variant == "group_norm_noncausal" else 3)
    assert ref.shape == (1, 2, frames, 64)
    _assert_parity(f"decode[{variant}]", decoder(latent), ref)


@pytest.mark.oracle
@torch.no_grad()
def test_vocoder_2_0_matches_reference():
    ref_vocoder, vocoder = _pair("vocoder", tc.LTX2)
    assert isinstance(vocoder, Vocoder)
    assert vocoder.output_sampling_rate == 24000
    mel = _log_mel()
    ref = ref_vocoder(mel)
    ours = vocoder(mel)
    assert ours.shape == (2, 2, 13 * 240)
    _assert_live_waveform(ref)
    _assert_parity("vocoder[ltx2]", ours, ref)


@pytest.mark.oracle
@torch.no_grad()
def test_vocoder_2_3_with_bwe_matches_reference():
    ref_vocoder, vocoder = _pair("vocoder", tc.LTX23)
    assert isinstance(vocoder, VocoderWithBWE)
    assert vocoder.output_sampling_rate == 48000
    mel = _log_mel()
    ref = ref_vocoder(mel)
    ours = vocoder(mel)
    assert ours.shape == (2, 2, 13 * 160 * 3)
    _assert_live_waveform(ref)
    # The 16 kHz stage on its own, and the BWE residual really contributes (not just the x3 resample).
    low_ref, low = ref_vocoder.vocoder(mel), vocoder.vocoder(mel)
    _assert_parity("vocoder[ltx23].vocoder", low, low_ref)
    assert (ours - vocoder.resampler(low)).abs().max() > 1e-3
    # The x3 skip resampler is the sinc torchaudio.functional.resample uses, and ours equals ltx-core's.
    _assert_parity("vocoder[ltx23].resampler", vocoder.resampler(low), ref_vocoder.resampler(low_ref))
    _assert_parity("vocoder[ltx23]", ours, ref)


@pytest.mark.oracle
@torch.no_grad()
def test_vocoder_2_3_pads_to_whole_bwe_frames_like_reference():
    ref_vocoder, vocoder = _pair("vocoder", tc.LTX23, "bwe_padding")
    mel = _log_mel(batch=1)
    assert (13 * 160) % vocoder.config.hop_length  # the padding path runs
    ref = ref_vocoder(mel)
    _assert_live_waveform(ref)
    _assert_parity("vocoder[ltx23, bwe hop 96]", vocoder(mel), ref)


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@torch.no_grad()
def test_decode_vocoder_chain_matches_reference(generation):
    from ltx_core.model.audio_vae import decode_audio

    ref_decoder, decoder = _pair("decoder", generation)
    ref_vocoder, vocoder = _pair("vocoder", generation)
    latent = _latent(batch=1)
    ref = decode_audio(latent, ref_decoder, ref_vocoder)  # squeezes the batch axis
    ours = decode_latent(latent, decoder, vocoder)
    assert ref.sampling_rate == vocoder.output_sampling_rate
    _assert_live_waveform(ref.waveform)
    _assert_parity(f"decode->vocoder[{generation}]", ours[0], ref.waveform)


@pytest.mark.oracle
@pytest.mark.parametrize("generation", tc.GENERATIONS)
@pytest.mark.parametrize("kind", ["encoder", "decoder", "vocoder"])
@torch.no_grad()
def test_meta_construction_and_strict_assign_load(kind, generation):
    ref = _reference(kind, generation)
    ours = _build_ours(kind, generation, device="meta")
    assert all(t.is_meta for t in ours.state_dict().values())
    ours.load_state_dict(copy.deepcopy(ref.state_dict()), strict=True, assign=True)
    assert not any(t.is_meta for t in [*ours.parameters(), *ours.buffers()])
    inputs = {"encoder": lambda: MelFrontEnd(ours.config)(_waveform(batch=1), SAMPLE_RATE),
              "decoder": lambda: _latent(batch=1), "vocoder": lambda: _log_mel(batch=1)}[kind]()
    _assert_parity(f"meta {kind}[{generation}]", ours.eval()(inputs), ref(inputs))


@pytest.mark.parametrize("generation", tc.GENERATIONS)
@pytest.mark.parametrize("kind", ["encoder", "decoder", "vocoder"])
@torch.no_grad()
def test_bf16_close_to_float32(kind, generation):
    ref = _reference(kind, generation)  # only a source of honest weights here
    f32 = _build_ours(kind, generation)
    f32.load_state_dict(ref.state_dict(), strict=True)
    bf16 = _build_ours(kind, generation, dtype=torch.bfloat16)
    bf16.load_state_dict(ref.state_dict(), strict=True)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    if kind == "encoder":
        out32 = encode_waveform(_waveform(batch=1), SAMPLE_RATE, f32.eval())
        out16 = encode_waveform(_waveform(batch=1), SAMPLE_RATE, bf16.eval())
    else:
        inputs = _latent(batch=1) if kind == "decoder" else _log_mel(batch=1)
        out32, out16 = f32.eval()(inputs), bf16.eval()(inputs.bfloat16())
    assert out16.dtype == torch.bfloat16
    assert torch.isfinite(out16).all()
    relative = (torch.linalg.vector_norm(out16.float() - out32) / torch.linalg.vector_norm(out32)).item()
    logger.info("bf16 %s[%s]: relative error %.3e", kind, generation, relative)
    assert relative <= (BF16_RTOL_BIGVGAN if (kind, generation) == ("vocoder", tc.LTX23) else BF16_RTOL)


# --------------------------------------------------------------------------------------------------------
# Computed buffers
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_bwe_stft_and_mel_buffers_hold_real_values():
    vocoder = _build_ours("vocoder", tc.LTX23)
    bwe = tc.vocoder_config(tc.LTX23)["bwe"]
    n_fft, hop = bwe["n_fft"], bwe["hop_length"]
    # Magnitudes of the causal conv-STFT equal torch.stft's with a periodic Hann window on the same frames.
    signal = torch.randn(2, 8 * hop, generator=torch.Generator().manual_seed(3))
    ours = vocoder.mel_stft.stft_fn.magnitude(signal)
    padded = torch.nn.functional.pad(signal, (n_fft - hop, 0))
    spectrum = torch.stft(padded, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True)
    _assert_parity("stft magnitude", ours, spectrum.abs(), rtol=1e-5)
    # Inverse basis: pinv(n_fft / hop * DFT rows).T times the window (the Tacotron-2 STFT construction).
    dft = np.fft.fft(np.eye(n_fft))[: n_fft // 2 + 1]
    rows = np.concatenate([dft.real, dft.imag])
    window = np.hanning(n_fft + 1)[:-1]
    expected = np.linalg.pinv(n_fft / hop * rows).T * window
    inverse = vocoder.mel_stft.stft_fn.inverse_basis[:, 0].double().numpy()
    np.testing.assert_allclose(inverse, expected, atol=1e-7)
    # Mel: 64 Slaney triangles over 0..8 kHz, each row a non-empty non-negative filter.
    mel = vocoder.mel_stft.mel_basis
    assert mel.shape == (64, n_fft // 2 + 1)
    assert (mel >= 0).all() and (mel.sum(dim=1) > 0).all()
    assert torch.equal(mel.argmax(dim=1), mel.argmax(dim=1).sort().values)


@torch.no_grad()
def test_anti_alias_filters_equal_the_reference_construction():
    ref = _reference("vocoder", tc.LTX23)
    ours = _build_ours("vocoder", tc.LTX23)
    ref_buffers = dict(ref.named_buffers())
    filters = {k: v for k, v in ours.named_buffers() if k.endswith("filter")}
    assert len(filters) > 10
    for key, value in filters.items():
        torch.testing.assert_close(value, ref_buffers[key], atol=1e-7, rtol=0)


# --------------------------------------------------------------------------------------------------------
# Config rejection
# --------------------------------------------------------------------------------------------------------


def _audio_with(**ddconfig: object) -> dict:
    config = tc.checkpoint_config(tc.LTX2)
    config["audio_vae"]["model"]["params"]["ddconfig"].update(ddconfig)
    return config


def _vocoder_with(generation: str, path: tuple[str, ...], value: object) -> dict:
    config = tc.checkpoint_config(generation)
    section = config["vocoder"]
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    return config


DD = "audio_vae.model.params.ddconfig."  # the audio VAE keys' path in error messages


@pytest.mark.parametrize(
    ("config", "config_cls", "message"),
    [
        (_audio_with(ch=256), AudioVAEConfig, DD + "ch=256, expected 128"),
        (_audio_with(attn_type="linear"), AudioVAEConfig, DD + "attn_type='linear', expected 'vanilla'"),
        (_audio_with(norm_type="batch"), AudioVAEConfig, DD + "norm_type='batch', expected ('pixel', 'group')"),
        (_audio_with(norm_type="group"), AudioVAEConfig, DD + "norm_type='group', expected 'pixel (group norm"),
        (_audio_with(ch_mult=[1, 2]), AudioVAEConfig, f"2 ** (len({DD}ch_mult) - 1)=2, expected 4"),
        (_vocoder_with(tc.LTX2, ("resblock",), "2"), VocoderConfig, "vocoder.resblock='2', expected '1'"),
        (_vocoder_with(tc.LTX2, ("stereo",), False), VocoderConfig, "vocoder.stereo=False, expected True"),
        (_vocoder_with(tc.LTX23, ("bwe", "activation"), "snake"), VocoderConfig,
         "vocoder.bwe.activation='snake', expected 'snakebeta'"),
        (_vocoder_with(tc.LTX23, ("bwe", "num_mels"), 80), VocoderConfig, "vocoder.bwe.num_mels=80, expected 64"),
        (_vocoder_with(tc.LTX23, ("bwe", "hop_length"), 100), VocoderConfig,
         "prod(vocoder.bwe.upsample_rates)=240, expected 300"),
        (_vocoder_with(tc.LTX23, ("bwe", "n_fft"), 65536), VocoderConfig,
         "vocoder.bwe.n_fft=65536, expected 'an int in [2, 8192]'"),
        (_vocoder_with(tc.LTX23, ("bwe", "input_sampling_rate"), 0.5), VocoderConfig,
         "vocoder.bwe.input_sampling_rate=0.5, expected 'an int in [1000, 384000]'"),
        (_vocoder_with(tc.LTX23, ("vocoder", "upsample_rates"), [5, -2]), VocoderConfig,
         "vocoder.vocoder.upsample_rates=[5, -2], expected 'a list of 1 to 16 ints in [1, 64]'"),
        (_vocoder_with(tc.LTX23, ("vocoder", "resblock_dilation_sizes"), [[1, 3, 5], "x"]), VocoderConfig,
         "vocoder.vocoder.resblock_dilation_sizes[1]='x', expected 'a list of 1 to 8 ints in [1, 128]'"),
        (_audio_with(ch="128"), AudioVAEConfig, DD + "ch='128', expected 'an int in [1, 8192]'"),
    ],
)
def test_config_rejects_unsupported_values(config, config_cls, message):
    with pytest.raises(ValueError) as info:
        config_cls.from_metadata(config)
    assert str(info.value).startswith(message), str(info.value)


def test_configs_read_both_generations():
    for generation in tc.GENERATIONS:
        audio = AudioVAEConfig.from_metadata(tc.checkpoint_config(generation))
        assert (audio.ch, audio.z_channels, audio.latent_mel_bins, audio.mel_bins) == (128, 8, 16, 64)
        assert audio.causality_axis == "height" and not audio.mid_block_add_attention
    ltx2 = VocoderConfig.from_metadata(tc.checkpoint_config(tc.LTX2))
    assert ltx2.bwe is None and ltx2.output_sampling_rate == 24000 and ltx2.generator.upsample_factor == 240
    ltx23 = VocoderConfig.from_metadata(tc.checkpoint_config(tc.LTX23))
    assert ltx23.generator.output_sampling_rate == 16000 and ltx23.output_sampling_rate == 48000
    assert not ltx23.bwe.generator.apply_final_activation and ltx23.generator.apply_final_activation
    assert not ltx23.generator.use_tanh_at_final  # the 16 kHz stage clamps
