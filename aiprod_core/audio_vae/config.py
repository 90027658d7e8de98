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

__all__ = ["AudioVAEConfig", "BandwidthExtensionConfig", "GeneratorConfig", "VocoderConfig"]

# The audio latent has 4x fewer frames than the mel spectrogram (two stride-2 levels); hard-coded upstream.
LATENT_DOWNSAMPLE_FACTOR = 4
# Every published vocoder is stereo over 64 mel bins: its first conv takes 2 x 64 = 128 channels, its last gives 2.
VOCODER_MEL_BINS = 64
STEREO_CHANNELS = 2

CAUSALITY_AXES = (None, "width", "height", "width-compatibility")
NORM_TYPES = ("pixel", "group")


def _reject(key: str, actual: Any, expected: Any) -> None:
    raise ValueError(f"{key}={actual!r}, expected {expected!r}")


def _check_equal(key: str, actual: Any, expected: Any) -> None:
    if actual != expected:
        _reject(key, actual, expected)


def _check_positive_ints(key: str, values: tuple[Any, ...]) -> None:
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in values):
        _reject(key, values, "a non-empty list of positive ints")


def _required(section: dict[str, Any], key: str, prefix: str) -> Any:
    if key not in section:
        _reject(prefix + key, None, "a value")
    return section[key]


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
        section = config.get("audio_vae", {})
        params = section.get("model", {}).get("params", {})
        dd = params.get("ddconfig", {})
        preprocessing = section.get("preprocessing", {})
        stft, mel = preprocessing.get("stft", {}), preprocessing.get("mel", {})
        mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or section.get("variables", {}).get("mel_bins")
        # Options ltx-core pins in its constructors: only these values have an implementation.
        _check_equal("attn_type", dd.get("attn_type", "vanilla"), "vanilla")
        _check_equal("resamp_with_conv", dd.get("resamp_with_conv", True), True)
        built = cls(
            mel_bins=mel_bins,
            ch=dd.get("ch", 128),
            out_ch=dd.get("out_ch", 2),
            in_channels=dd.get("in_channels", 2),
            ch_mult=tuple(dd.get("ch_mult", (1, 2, 4))),
            num_res_blocks=dd.get("num_res_blocks", 2),
            attn_resolutions=frozenset(dd.get("attn_resolutions", (8, 16, 32))),
            resolution=dd.get("resolution", 256),
            z_channels=dd.get("z_channels", 8),
            double_z=dd.get("double_z", True),
            mid_block_add_attention=dd.get("mid_block_add_attention", True),
            norm_type=dd.get("norm_type", "pixel"),
            causality_axis=dd.get("causality_axis", "height"),
            sample_rate=params.get("sampling_rate", 16000),
            mel_hop_length=stft.get("hop_length", 160),
            n_fft=stft.get("filter_length", 1024),
            is_causal=stft.get("causal", True),
        )
        built.validate()
        return built

    @property
    def latent_mel_bins(self) -> int:
        return self.mel_bins // 2 ** (len(self.ch_mult) - 1)

    def validate(self) -> None:
        """Raise ``ValueError`` for values the modules cannot honour (called by ``from_metadata``)."""
        if not isinstance(self.mel_bins, int) or self.mel_bins <= 0:
            _reject("mel_bins", self.mel_bins, "a positive int")
        _check_positive_ints("ch_mult", self.ch_mult)
        _check_equal("2 ** (len(ch_mult) - 1)", 2 ** (len(self.ch_mult) - 1), LATENT_DOWNSAMPLE_FACTOR)
        if self.causality_axis not in CAUSALITY_AXES:
            _reject("causality_axis", self.causality_axis, CAUSALITY_AXES)
        if self.norm_type not in NORM_TYPES:
            _reject("norm_type", self.norm_type, NORM_TYPES)
        if self.norm_type == "group" and self.causality_axis is not None:
            _reject("norm_type", self.norm_type, "pixel (group norm only without causality)")
        if self.mel_bins % LATENT_DOWNSAMPLE_FACTOR:
            _reject("mel_bins", self.mel_bins, f"a multiple of {LATENT_DOWNSAMPLE_FACTOR}")
        _check_equal("ch", self.ch, self.z_channels * self.latent_mel_bins)
        if self.norm_type == "group" and any((self.ch * m) % 32 for m in (1, *self.ch_mult)):
            _reject("ch", self.ch, "channel counts divisible by the 32 GroupNorm groups")


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
        cls, section: dict[str, Any], prefix: str, *, output_sampling_rate: int | None = None,
        apply_final_activation: bool = True,
    ) -> GeneratorConfig:
        """Read one flat generator section (``prefix`` names it in error messages)."""
        built = cls(
            resblock_kernel_sizes=tuple(section.get("resblock_kernel_sizes", (3, 7, 11))),
            upsample_rates=tuple(section.get("upsample_rates", (6, 5, 2, 2, 2))),
            upsample_kernel_sizes=tuple(section.get("upsample_kernel_sizes", (16, 15, 8, 4, 4))),
            resblock_dilation_sizes=tuple(
                tuple(d) for d in section.get("resblock_dilation_sizes", ((1, 3, 5), (1, 3, 5), (1, 3, 5)))
            ),
            upsample_initial_channel=section.get("upsample_initial_channel", 1024),
            resblock=section.get("resblock", "1"),
            output_sampling_rate=(
                output_sampling_rate if output_sampling_rate is not None
                else section.get("output_sampling_rate", 24000)
            ),
            activation=section.get("activation", "snake"),
            use_tanh_at_final=section.get("use_tanh_at_final", True),
            apply_final_activation=apply_final_activation,
            use_bias_at_final=section.get("use_bias_at_final", True),
        )
        built.validate(prefix)
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
        section = config.get("vocoder", {})
        if "bwe" not in section:
            _check_equal("vocoder.resblock", section.get("resblock"), "1")
            _check_equal("vocoder.stereo", section.get("stereo"), True)
            return cls(generator=GeneratorConfig.from_section(section, "vocoder."))
        main, bwe = section.get("vocoder", {}), section["bwe"]
        for prefix, sub in (("vocoder.vocoder.", main), ("vocoder.bwe.", bwe)):
            _check_equal(prefix + "resblock", sub.get("resblock"), "AMP1")
            _check_equal(prefix + "stereo", sub.get("stereo"), True)
            _check_equal(prefix + "activation", sub.get("activation"), "snakebeta")
        rates = {k: _required(bwe, k, "vocoder.bwe.") for k in ("input_sampling_rate", "output_sampling_rate")}
        stft = {k: _required(bwe, k, "vocoder.bwe.") for k in ("hop_length", "n_fft", "num_mels")}
        _check_equal("vocoder.bwe.num_mels", stft["num_mels"], VOCODER_MEL_BINS)
        if rates["output_sampling_rate"] % rates["input_sampling_rate"]:
            _reject("vocoder.bwe.output_sampling_rate", rates["output_sampling_rate"], "a multiple of the input rate")
        if stft["n_fft"] < stft["hop_length"]:
            _reject("vocoder.bwe.n_fft", stft["n_fft"], f">= hop_length {stft['hop_length']}")
        generator = GeneratorConfig.from_section(
            main, "vocoder.vocoder.", output_sampling_rate=rates["input_sampling_rate"]
        )
        bwe_generator = GeneratorConfig.from_section(
            bwe, "vocoder.bwe.", output_sampling_rate=rates["output_sampling_rate"], apply_final_activation=False
        )
        extension = BandwidthExtensionConfig(generator=bwe_generator, **rates, **stft)
        # One mel frame (hop_length input samples) must become exactly `ratio` x hop_length output samples.
        expected_factor = stft["hop_length"] * extension.ratio
        _check_equal("prod(vocoder.bwe.upsample_rates)", bwe_generator.upsample_factor, expected_factor)
        return cls(generator=generator, bwe=extension)
