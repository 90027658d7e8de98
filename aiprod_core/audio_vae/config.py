"""Configs of the audio VAE and the vocoders, read from a checkpoint's ``config`` metadata.

``AudioVAEConfig`` reads ``config["audio_vae"]`` (``model.params.ddconfig`` plus ``preprocessing.stft`` /
``preprocessing.mel``); ``VocoderConfig`` reads ``config["vocoder"]``: flat for LTX-2 (one HiFi-GAN generator),
nested ``vocoder`` + ``bwe`` for LTX-2.3 (BigVGAN-v2 generator followed by bandwidth extension to 48 kHz).
Defaults are the ones ltx-core applies; values our modules cannot honour are rejected before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config_reader import ConfigSection, check_ints, reject

__all__ = ["AudioVAEConfig", "BandwidthExtensionConfig", "GeneratorConfig", "VocoderConfig"]

# The audio latent has 4x fewer frames than the mel spectrogram (two stride-2 levels); hard-coded upstream.
LATENT_DOWNSAMPLE_FACTOR = 4
# Every published vocoder is stereo over 64 mel bins: its first conv takes 2 x 64 = 128 channels, its last gives 2.
VOCODER_MEL_BINS = 64
STEREO_CHANNELS = 2

CAUSALITY_AXES = (None, "width", "height", "width-compatibility")
NORM_TYPES = ("pixel", "group")
RESBLOCK_TYPES = ("1", "AMP1")  # HiFi-GAN, BigVGAN-v2
ACTIVATIONS = ("snake", "snakebeta")


# Sanity bounds (the published audio VAE: ch 128, 64 mel bins, 16 kHz, n_fft 1024, hop 160).
MAX_CHANNELS = 8192
MAX_MEL_BINS = 1024
MAX_RES_BLOCKS = 64
MAX_RESOLUTION = 65536
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000
MAX_N_FFT = 8192  # the STFT bases are (2 (n_fft / 2 + 1), n_fft): 8192 -> 0.5 GB in float32
MAX_KERNEL = 128
MAX_UPSAMPLE_RATE = 64
MAX_GENERATOR_CHANNELS = 16384
_VAE = "audio_vae.model.params.ddconfig."


def _reject(key: str, actual: Any, expected: Any) -> None:
    raise reject(key, actual, expected)


def _check_equal(key: str, actual: Any, expected: Any) -> None:
    if actual != expected:
        _reject(key, actual, expected)


def _check_positive_ints(key: str, values: tuple[Any, ...]) -> None:
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in values):
        _reject(key, values, "a non-empty list of positive ints")


@dataclass(frozen=True)
class AudioVAEConfig:
    """Audio VAE encoder/decoder hyper-parameters plus the mel front end they were trained with.

    The latent is (B, z_channels, frames, mel_bins / 4); ``ch`` sizes the per-channel statistics, which
    normalise the flattened (z_channels x latent mel bins) vector of each latent frame, hence
    ``ch == z_channels * mel_bins / 4``.
    """

    mel_bins: int
    ch: int = 128
    out_ch: int = 2
    in_channels: int = 2
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: frozenset[int] = frozenset({8, 16, 32})
    resolution: int = 256
    z_channels: int = 8
    double_z: bool = True
    mid_block_add_attention: bool = True
    norm_type: str = "pixel"
    causality_axis: str | None = "height"
    sample_rate: int = 16000
    mel_hop_length: int = 160
    n_fft: int = 1024
    is_causal: bool = True

    @classmethod
    def from_metadata(cls, config: dict[str, Any]) -> AudioVAEConfig:
        """Read ``config["audio_vae"]`` with ltx-core's defaults; raise ``ValueError`` on unsupported values."""
        section = ConfigSection(config).section("audio_vae")
        params = section.section("model").section("params")
        dd = params.section("ddconfig")
        preprocessing = section.section("preprocessing")
        stft, mel = preprocessing.section("stft"), preprocessing.section("mel")
        variables = section.section("variables")
        mel_source = next((s for s, k in ((dd, "mel_bins"), (mel, "n_mel_channels"), (variables, "mel_bins"))
                           if s.get(k)), dd)
        mel_key = "mel_bins" if mel_source is not mel else "n_mel_channels"
        # Options ltx-core pins in its constructors: only these values have an implementation.
        dd.pinned("attn_type", "vanilla", absent="vanilla")
        dd.pinned("resamp_with_conv", True, absent=True)
        built = cls(
            mel_bins=mel_source.integer(mel_key, low=LATENT_DOWNSAMPLE_FACTOR, high=MAX_MEL_BINS),
            ch=dd.integer("ch", 128, high=MAX_CHANNELS),
            out_ch=dd.integer("out_ch", 2, high=MAX_CHANNELS),
            in_channels=dd.integer("in_channels", 2, high=MAX_CHANNELS),
            ch_mult=dd.integers("ch_mult", (1, 2, 4), high=MAX_CHANNELS, max_length=8),
            num_res_blocks=dd.integer("num_res_blocks", 2, high=MAX_RES_BLOCKS),
            attn_resolutions=frozenset(dd.integers("attn_resolutions", (8, 16, 32), high=MAX_RESOLUTION,
                                                   min_length=0)),
            resolution=dd.integer("resolution", 256, high=MAX_RESOLUTION),
            z_channels=dd.integer("z_channels", 8, high=MAX_CHANNELS),
            double_z=dd.flag("double_z", True),
            mid_block_add_attention=dd.flag("mid_block_add_attention", True),
            norm_type=dd.choice("norm_type", "pixel", NORM_TYPES),
            causality_axis=dd.choice("causality_axis", "height", CAUSALITY_AXES),
            sample_rate=params.integer("sampling_rate", 16000, low=MIN_SAMPLE_RATE, high=MAX_SAMPLE_RATE),
            mel_hop_length=stft.integer("hop_length", 160, high=MAX_N_FFT),
            n_fft=stft.integer("filter_length", 1024, low=2, high=MAX_N_FFT),
            is_causal=stft.flag("causal", True),
        )
        built.validate()
        return built

    @property
    def latent_mel_bins(self) -> int:
        return self.mel_bins // 2 ** (len(self.ch_mult) - 1)

    def validate(self) -> None:
        """Raise ``ValueError`` for values the modules cannot honour (called by ``from_metadata``)."""
        if not isinstance(self.mel_bins, int) or self.mel_bins <= 0:
            _reject(_VAE + "mel_bins", self.mel_bins, "a positive int")
        _check_positive_ints(_VAE + "ch_mult", self.ch_mult)
        _check_equal(f"2 ** (len({_VAE}ch_mult) - 1)", 2 ** (len(self.ch_mult) - 1), LATENT_DOWNSAMPLE_FACTOR)
        if self.causality_axis not in CAUSALITY_AXES:
            _reject(_VAE + "causality_axis", self.causality_axis, CAUSALITY_AXES)
        if self.norm_type not in NORM_TYPES:
            _reject(_VAE + "norm_type", self.norm_type, NORM_TYPES)
        if self.norm_type == "group" and self.causality_axis is not None:
            _reject(_VAE + "norm_type", self.norm_type, "pixel (group norm only without causality)")
        if self.mel_bins % LATENT_DOWNSAMPLE_FACTOR:
            _reject(_VAE + "mel_bins", self.mel_bins, f"a multiple of {LATENT_DOWNSAMPLE_FACTOR}")
        _check_equal(_VAE + "ch", self.ch, self.z_channels * self.latent_mel_bins)
        if self.norm_type == "group" and any((self.ch * m) % 32 for m in (1, *self.ch_mult)):
            _reject(_VAE + "ch", self.ch, "channel counts divisible by the 32 GroupNorm groups")


@dataclass(frozen=True)
class GeneratorConfig:
    """One mel -> waveform generator: HiFi-GAN (``resblock="1"``) or BigVGAN-v2 (``resblock="AMP1"``).

    Input (B, 2, frames, 64) log-mel, output (B, 2, frames x prod(upsample_rates)) at ``output_sampling_rate``.
    """

    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    upsample_rates: tuple[int, ...] = (6, 5, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_initial_channel: int = 1024
    resblock: str = "1"
    output_sampling_rate: int = 24000
    activation: str = "snake"
    use_tanh_at_final: bool = True
    apply_final_activation: bool = True
    use_bias_at_final: bool = True

    @classmethod
    def from_section(
        cls, section: ConfigSection, *, output_sampling_rate: int | None = None, apply_final_activation: bool = True,
    ) -> GeneratorConfig:
        """Read one flat generator section (its path names it in error messages)."""
        dilations = section.sequence("resblock_dilation_sizes", ((1, 3, 5),) * 3, min_length=1, max_length=16)
        dilation_key = section.key("resblock_dilation_sizes")
        if output_sampling_rate is None:
            output_sampling_rate = section.integer("output_sampling_rate", 24000, low=MIN_SAMPLE_RATE,
                                                   high=MAX_SAMPLE_RATE)
        built = cls(
            resblock_kernel_sizes=section.integers("resblock_kernel_sizes", (3, 7, 11), high=MAX_KERNEL,
                                                   max_length=16),
            upsample_rates=section.integers("upsample_rates", (6, 5, 2, 2, 2), high=MAX_UPSAMPLE_RATE,
                                            max_length=16),
            upsample_kernel_sizes=section.integers("upsample_kernel_sizes", (16, 15, 8, 4, 4), high=MAX_KERNEL,
                                                   max_length=16),
            resblock_dilation_sizes=tuple(
                check_ints(f"{dilation_key}[{i}]", d, high=MAX_KERNEL, max_length=8)
                for i, d in enumerate(dilations)),
            upsample_initial_channel=section.integer("upsample_initial_channel", 1024, high=MAX_GENERATOR_CHANNELS),
            resblock=section.choice("resblock", "1", RESBLOCK_TYPES),
            output_sampling_rate=output_sampling_rate,
            activation=section.choice("activation", "snake", ACTIVATIONS),
            use_tanh_at_final=section.flag("use_tanh_at_final", True),
            apply_final_activation=apply_final_activation,
            use_bias_at_final=section.flag("use_bias_at_final", True),
        )
        built.validate(section.path + ".")
        return built

    @property
    def upsample_factor(self) -> int:
        return math.prod(self.upsample_rates)

    @property
    def is_amp(self) -> bool:
        return self.resblock == "AMP1"

    def validate(self, prefix: str = "") -> None:
        """Raise ``ValueError`` for shapes the generator cannot be built with."""
        _check_positive_ints(prefix + "upsample_rates", self.upsample_rates)
        _check_positive_ints(prefix + "resblock_kernel_sizes", self.resblock_kernel_sizes)
        _check_equal(
            f"len({prefix}upsample_kernel_sizes)", len(self.upsample_kernel_sizes), len(self.upsample_rates)
        )
        _check_equal(
            f"len({prefix}resblock_dilation_sizes)",
            len(self.resblock_dilation_sizes),
            len(self.resblock_kernel_sizes),
        )
        for dilations in self.resblock_dilation_sizes:
            _check_equal(f"len({prefix}resblock_dilation_sizes[i])", len(dilations), 3)
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            _reject(
                prefix + "upsample_initial_channel",
                self.upsample_initial_channel,
                f"a multiple of 2 ** {len(self.upsample_rates)}",
            )
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True):
            if (kernel - rate) % 2 or kernel < rate:  # the transposed conv must give exactly `rate` x the length
                _reject(prefix + "upsample_kernel_sizes", self.upsample_kernel_sizes, "kernel - rate even, >= 0")


@dataclass(frozen=True)
class BandwidthExtensionConfig:
    """LTX-2.3 bandwidth extension: causal log-mel of the 16 kHz waveform -> residual added to a x3 resample."""

    generator: GeneratorConfig
    input_sampling_rate: int
    output_sampling_rate: int
    hop_length: int
    n_fft: int
    num_mels: int

    @property
    def ratio(self) -> int:
        return self.output_sampling_rate // self.input_sampling_rate


@dataclass(frozen=True)
class VocoderConfig:
    """``config["vocoder"]``: the mel -> waveform generator and, for LTX-2.3, its bandwidth extension."""

    generator: GeneratorConfig
    bwe: BandwidthExtensionConfig | None = None

    @property
    def output_sampling_rate(self) -> int:
        return self.bwe.output_sampling_rate if self.bwe is not None else self.generator.output_sampling_rate

    @classmethod
    def from_metadata(cls, config: dict[str, Any]) -> VocoderConfig:
        """Read ``config["vocoder"]`` (flat: LTX-2, nested ``vocoder`` + ``bwe``: LTX-2.3)."""
        section = ConfigSection(config).section("vocoder")
        if "bwe" not in section:
            section.pinned("resblock", "1")
            section.pinned("stereo", True)
            return cls(generator=GeneratorConfig.from_section(section))
        main, bwe = section.section("vocoder"), section.section("bwe")
        for sub in (main, bwe):
            sub.pinned("resblock", "AMP1")
            sub.pinned("stereo", True)
            sub.pinned("activation", "snakebeta")
        rates = {k: bwe.integer(k, low=MIN_SAMPLE_RATE, high=MAX_SAMPLE_RATE)
                 for k in ("input_sampling_rate", "output_sampling_rate")}
        hop_length = bwe.integer("hop_length", high=MAX_N_FFT)
        stft = {"hop_length": hop_length, "n_fft": bwe.integer("n_fft", low=2, high=MAX_N_FFT),
                "num_mels": bwe.integer("num_mels", high=MAX_MEL_BINS)}
        _check_equal("vocoder.bwe.num_mels", stft["num_mels"], VOCODER_MEL_BINS)
        if rates["output_sampling_rate"] % rates["input_sampling_rate"]:
            _reject("vocoder.bwe.output_sampling_rate", rates["output_sampling_rate"], "a multiple of the input rate")
        if stft["n_fft"] < stft["hop_length"]:
            _reject("vocoder.bwe.n_fft", stft["n_fft"], f">= hop_length {stft['hop_length']}")
        generator = GeneratorConfig.from_section(main, output_sampling_rate=rates["input_sampling_rate"])
        bwe_generator = GeneratorConfig.from_section(
            bwe, output_sampling_rate=rates["output_sampling_rate"], apply_final_activation=False
        )
        extension = BandwidthExtensionConfig(generator=bwe_generator, **rates, **stft)
        # One mel frame (hop_length input samples) must become exactly `ratio` x hop_length output samples.
        expected_factor = stft["hop_length"] * extension.ratio
        _check_equal("prod(vocoder.bwe.upsample_rates)", bwe_generator.upsample_factor, expected_factor)
        return cls(generator=generator, bwe=extension)
