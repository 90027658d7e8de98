"""Configuration of the LTX-2 / LTX-2.3 video VAE, read from the checkpoint's ``config["vae"]`` metadata.

The same section drives both halves. Defaults follow ltx-core 1.0.0 (``VideoEncoderConfigurator`` /
``VideoDecoderConfigurator``), including its one asymmetry: the only padding key it reads is
``spatial_padding_mode``, and when that key is absent the encoder pads with zeros while the decoder reflects
(``encoder_spatial_padding_mode`` / ``decoder_spatial_padding_mode``, present in LTX-2 metadata, are ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config_reader import ConfigSection, reject

__all__ = ["BlockSpec", "ScaleFactors", "VideoVAEConfig"]

NORM_LAYERS = ("pixel_norm", "group_norm")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# "none" is accepted by ltx-core's enum but its encoder then splits 128 channels into 64 means / 64 log-vars and
# fails on the 128-channel statistics: rejected here.
LOG_VAR_MODES = ("per_channel", "uniform", "constant")

# Block name -> (stride (t, h, w), default channel multiplier). Encoder multipliers multiply the width,
# decoder multipliers divide it.
_ENCODER_BLOCKS: dict[str, tuple[tuple[int, int, int], int]] = {
    "res_x": ((1, 1, 1), 1),
    "res_x_y": ((1, 1, 1), 2),
    "compress_time": ((2, 1, 1), 1),
    "compress_space": ((1, 2, 2), 1),
    "compress_all": ((2, 2, 2), 1),
    "compress_all_x_y": ((2, 2, 2), 2),
    "compress_all_res": ((2, 2, 2), 2),
    "compress_space_res": ((1, 2, 2), 2),
    "compress_time_res": ((2, 1, 1), 2),
}
_DECODER_BLOCKS: dict[str, tuple[tuple[int, int, int], int]] = {
    "res_x": ((1, 1, 1), 1),
    "res_x_y": ((1, 1, 1), 2),
    "compress_time": ((2, 1, 1), 1),
    "compress_space": ((1, 2, 2), 1),
    "compress_all": ((2, 2, 2), 1),
}
# Encoder blocks whose multiplier ltx-core ignores (the width stays the same).
_FIXED_WIDTH_ENCODER_BLOCKS = ("res_x", "compress_time", "compress_space", "compress_all")
# The decoder's widest stage is base_channels x 2**3 (three x2 upsamplers in the published layout).
DECODER_WIDTH_FACTOR = 8
# Sanity bounds (the published VAEs: 4-9 blocks, up to 4 layers each, patch 4, 128 latent channels).
MAX_BLOCKS = 32
MAX_BLOCK_LAYERS = 64
MAX_MULTIPLIER = 16
MAX_PATCH_SIZE = 64
MAX_CHANNELS = 8192


@dataclass(frozen=True)
class ScaleFactors:
    """Video pixels per latent cell along (time, height, width)."""

    time: int
    height: int
    width: int


@dataclass(frozen=True)
class BlockSpec:
    """One encoder or decoder stage, with the defaults of its block type already applied.

    ``num_layers`` counts the residual blocks of ``res_x``; ``multiplier`` is the channel factor of the
    stage (1 where the block keeps the width); ``residual`` and ``inject_noise`` are decoder-only options.
    """

    name: str
    num_layers: int = 1
    multiplier: int = 1
    residual: bool = False
    inject_noise: bool = False

    @property
    def stride(self) -> tuple[int, int, int]:
        """Compression (encoder) or expansion (decoder) factor of this stage along (t, h, w)."""
        return _ENCODER_BLOCKS.get(self.name, _DECODER_BLOCKS.get(self.name, ((1, 1, 1), 1)))[0]


def _parse_block(entry: Any, where: str, decoder: bool) -> BlockSpec:
    table = _DECODER_BLOCKS if decoder else _ENCODER_BLOCKS
    if not isinstance(entry, list | tuple) or len(entry) != 2 or not isinstance(entry[0], str):
        raise reject(where, entry, "[block_name, params]")
    name, params = entry
    if name not in table:
        raise reject(f"{where}[0]", name, f"one of {tuple(table)}")
    if isinstance(params, int) and not isinstance(params, bool):
        params = {"num_layers": params}
    if not isinstance(params, dict):
        raise reject(f"{where}[1]", params, "an int (num_layers) or a dict")
    params = ConfigSection(params, where)
    num_layers = params.integer("num_layers", high=MAX_BLOCK_LAYERS) if name == "res_x" else 1
    fixed_width = name == "res_x" or (not decoder and name in _FIXED_WIDTH_ENCODER_BLOCKS)
    multiplier = 1 if fixed_width else params.integer("multiplier", table[name][1], high=MAX_MULTIPLIER)
    residual = params.flag("residual", False) if decoder else False
    if residual and name != "compress_all":
        raise reject(params.key("residual"), residual, "False (only compress_all has a residual path)")
    inject_noise = params.flag("inject_noise", False) if decoder and name in ("res_x", "res_x_y") else False
    if inject_noise and name == "res_x_y":
        # ltx-core sizes the noise gains by the input width, so a width-changing block with noise cannot run.
        raise reject(params.key("inject_noise"), inject_noise, "False (res_x_y cannot inject noise)")
    return BlockSpec(name, num_layers, multiplier, residual, inject_noise)


def _parse_blocks(section: ConfigSection, key: str, decoder: bool) -> tuple[BlockSpec, ...]:
    entries = section.sequence(key, (), max_length=MAX_BLOCKS)
    return tuple(_parse_block(entry, f"{section.key(key)}[{i}]", decoder) for i, entry in enumerate(entries))


def _total_stride(blocks: tuple[BlockSpec, ...], patch_size: int) -> ScaleFactors:
    time = math.prod(b.stride[0] for b in blocks)
    space = patch_size * math.prod(b.stride[1] for b in blocks)
    return ScaleFactors(time=time, height=space, width=space)


@dataclass(frozen=True)
class VideoVAEConfig:
    """Typed ``config["vae"]`` of a single-file LTX-2 / LTX-2.3 checkpoint (both VAE halves).

    Video (B, in_channels, F, H, W) <-> latent (B, latent_channels, 1 + (F - 1) / t, H / s, W / s) with
    (t, s) = ``scale_factors`` (8, 32 for the published models).
    """

    dims: int = 3
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    encoder_blocks: tuple[BlockSpec, ...] = ()
    decoder_blocks: tuple[BlockSpec, ...] = ()
    patch_size: int = 4
    norm_layer: str = "pixel_norm"
    latent_log_var: str = "uniform"
    encoder_padding_mode: str = "zeros"
    decoder_padding_mode: str = "reflect"
    causal_decoder: bool = False
    timestep_conditioning: bool = True
    decoder_base_channels: int = 128

    @classmethod
    def from_metadata(cls, config: dict[str, Any]) -> VideoVAEConfig:
        """Read ``config["vae"]`` (the checkpoint metadata's parsed ``config`` JSON), validating every value."""
        section = ConfigSection(config).section("vae")
        section.pinned("dims", 3, absent=3)
        result = cls(
            dims=3,
            in_channels=section.integer("in_channels", 3, high=MAX_CHANNELS),
            out_channels=section.integer("out_channels", 3, high=MAX_CHANNELS),
            latent_channels=section.integer("latent_channels", 128, high=MAX_CHANNELS),
            encoder_blocks=_parse_blocks(section, "encoder_blocks", decoder=False),
            decoder_blocks=_parse_blocks(section, "decoder_blocks", decoder=True),
            patch_size=section.integer("patch_size", 4, high=MAX_PATCH_SIZE),
            norm_layer=section.choice("norm_layer", "pixel_norm", NORM_LAYERS),
            latent_log_var=section.choice("latent_log_var", "uniform", LOG_VAR_MODES),
            encoder_padding_mode=section.choice("spatial_padding_mode", "zeros", PADDING_MODES),
            decoder_padding_mode=section.choice("spatial_padding_mode", "reflect", PADDING_MODES),
            causal_decoder=section.flag("causal_decoder", False),
            timestep_conditioning=section.flag("timestep_conditioning", True),
            decoder_base_channels=section.integer("decoder_base_channels", 128, high=MAX_CHANNELS),
        )
        encoder_scale, decoder_scale = result.encoder_scale_factors, result.decoder_scale_factors
        if result.encoder_blocks and result.decoder_blocks and encoder_scale != decoder_scale:
            raise reject("vae.decoder_blocks", decoder_scale, encoder_scale)
        return result

    @property
    def encoder_scale_factors(self) -> ScaleFactors:
        """Compression of the encoder (patchify x strided stages)."""
        return _total_stride(self.encoder_blocks, self.patch_size)

    @property
    def decoder_scale_factors(self) -> ScaleFactors:
        """Expansion of the decoder (upsampling stages x unpatchify)."""
        return _total_stride(self.decoder_blocks, self.patch_size)

    @property
    def scale_factors(self) -> ScaleFactors:
        """Pixels per latent cell (the decoder's when it has blocks, else the encoder's)."""
        return self.decoder_scale_factors if self.decoder_blocks else self.encoder_scale_factors
