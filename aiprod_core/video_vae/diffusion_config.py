"""Configuration of the LTX-2.5 video VAE files, read from the ``config["vae"]`` metadata.

Two layouts carry an LTX-2.5 video VAE. The convolutional one (``ltx-2.5-video-vae-conv``) is the flat
``CausalVideoAutoencoder`` section of LTX-2.3 (`VideoVAEConfig`). The diffusion one (``ltx-2.5-video-vae``) is
``_class_name: "CausalDiffusionVAE"`` with nested ``encoder`` (the conv encoder under other key names: ``blocks``,
``out_channels`` = latent width) and ``decoder`` sections, and ``model_output_type`` beside them.

Defaults are the Lightricks reference's (ltx-core 1.2.0 ``DiffusionVideoDecoder`` / ``_build_diffusion_video_decoder``)
where its file omits a key: 2 inference steps, timestep multiplier 1, ``"v"`` output. diffusers 0.42.1 defaults to
1 step, 1000, ``"x0"`` (the values the published file states); a file that states them is read as it states them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config_reader import ConfigSection, check_int, reject
from .config import VideoVAEConfig

__all__ = [
    "CONV_VAE_CLASS",
    "DIFFUSION_VAE_CLASS",
    "DiffusionDecoderConfig",
    "is_diffusion_vae",
    "video_encoder_config",
]

CONV_VAE_CLASS = "CausalVideoAutoencoder"
DIFFUSION_VAE_CLASS = "CausalDiffusionVAE"
OUTPUT_TYPES = ("v", "x0")
STAGES = 5  # four deterministic upsampling stages, then the diffusion stage
# The LTX-2 latent grid the reference hard-codes for this decoder: pixels per latent cell (time, space).
LATENT_TIME_SCALE = 8
LATENT_SPACE_SCALE = 32

# ltx-core 1.2.0 defaults (diffusion_video_decoder.py) for keys a file leaves out.
_DEFAULT_STAGE_CHANNELS = (1024, 512, 256, 256, 128)
_DEFAULT_STAGE_DEPTHS = (4, 6, 4, 2, 8)
_DEFAULT_STAGE_KERNELS = ((3, 7, 7), (3, 7, 7), (3, 5, 5), (3, 5, 5), (3, 3, 3))
_DEFAULT_UPSAMPLES = (((1, 2, 2), 2), ((2, 1, 1), 2), ((2, 2, 2), 1), ((2, 2, 2), 2))
_DEFAULT_STAGE5_KERNEL = (3, 7, 7)
_DEFAULT_STEPS = 2
_DEFAULT_TIMESTEP_MULTIPLIER = 1.0
_DEFAULT_OUTPUT_TYPE = "v"
MLP_RATIO = 4.0


# Sanity bounds (the published decoder: stages 1024..128 wide, 2-8 blocks deep, head 64, 2 steps).
MAX_CHANNELS = 16384
MAX_DEPTH = 64
MAX_HEAD_DIM = 1024
MAX_STEPS = 1000
MAX_KERNEL = 63


def _bad(key: str, actual: Any, expected: Any) -> ValueError:
    return reject(key, actual, expected)


def _triple(value: Any, key: str, odd: bool) -> tuple[int, int, int]:
    ok = isinstance(value, list | tuple) and len(value) == 3
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_KERNEL and (v % 2 or not odd)
                    for v in value)
    if not ok:
        raise _bad(key, value, "3 positive odd ints (t, h, w)" if odd else "3 positive ints (t, h, w)")
    return (value[0], value[1], value[2])


def _sequence(section: ConfigSection, key: str, default: tuple[Any, ...]) -> tuple[Any, ...]:
    value = section.get(key, default)
    if not isinstance(value, list | tuple) or len(value) != len(default):
        raise _bad(section.key(key), value, f"a list of {len(default)} entries")
    return tuple(value)


def _upsamples(section: ConfigSection) -> tuple[tuple[tuple[int, int, int], int], ...]:
    entries = _sequence(section, "upsamples", _DEFAULT_UPSAMPLES)
    result = []
    for i, entry in enumerate(entries):
        key = f"{section.key('upsamples')}[{i}]"
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            raise _bad(key, entry, "[[t, h, w] stride, channel reduction]")
        stride = _triple(entry[0], key + "[0]", odd=False)
        if any(s not in (1, 2) for s in stride):
            raise _bad(key + "[0]", entry[0], "strides of 1 or 2")
        result.append((stride, check_int(key + "[1]", entry[1], high=MAX_CHANNELS)))
    return tuple(result)


def _section(config: dict[str, Any]) -> ConfigSection:
    if not isinstance(config.get("vae"), dict):
        raise _bad("vae", config.get("vae"), "a dict (the video VAE section of the file's config metadata)")
    return ConfigSection(config).section("vae")


def is_diffusion_vae(config: dict[str, Any]) -> bool:
    """Whether the file's parsed ``config`` describes the diffusion video VAE (``vae._class_name``)."""
    return _section(config).get("_class_name", CONV_VAE_CLASS) == DIFFUSION_VAE_CLASS


def video_encoder_config(config: dict[str, Any]) -> VideoVAEConfig:
    """The conv encoder's `VideoVAEConfig` of either layout (flat LTX-2 / 2.3 / 2.5-conv, or nested diffusion VAE)."""
    section = _section(config)
    if section.get("_class_name", CONV_VAE_CLASS) != DIFFUSION_VAE_CLASS:
        return VideoVAEConfig.from_metadata(config)
    encoder = section.get("encoder")
    if not isinstance(encoder, dict):
        raise _bad("vae.encoder", encoder, "a dict (the encoder section of a CausalDiffusionVAE config)")
    flat = {
        "dims": encoder.get("dims", section.get("dims", 3)),
        "in_channels": encoder.get("in_channels", 3),
        "latent_channels": encoder.get("out_channels", section.get("latent_channels", 128)),
        "encoder_blocks": encoder.get("blocks", encoder.get("encoder_blocks", [])),
        "patch_size": encoder.get("patch_size", 4),
        "norm_layer": encoder.get("norm_layer", "pixel_norm"),
        "latent_log_var": encoder.get("latent_log_var", "uniform"),
        "spatial_padding_mode": encoder.get("spatial_padding_mode", section.get("encoder_spatial_padding_mode",
                                                                                  "zeros")),
    }
    return VideoVAEConfig.from_metadata({"vae": flat})


@dataclass(frozen=True)
class DiffusionDecoderConfig:
    """Typed ``config["vae"]["decoder"]`` of a ``CausalDiffusionVAE`` file (the LTX-2.5 diffusion decoder).

    Latent (B, in_channels, F', H', W') -> video (B, out_channels, 1 + 8 (F' - 1), 32 H', 32 W'). Stages 1-4 are
    neighborhood-attention blocks at ``stage_channels[i]`` each followed by a linear pixel-shuffle upsample
    ``upsamples[i] = (stride, channel reduction)``; stage 5 denoises ``patch_size``-patchified pixels at
    ``stage5_channels`` for ``default_num_inference_steps`` steps. ``stage_kernels[4]`` is carried by the files
    but unused (the diffusion stage uses ``stage5_kernel``).
    """

    in_channels: int = 128
    out_channels: int = 3
    patch_size: int = 4
    head_dim: int = 64
    stage_channels: tuple[int, ...] = _DEFAULT_STAGE_CHANNELS
    stage_depths: tuple[int, ...] = _DEFAULT_STAGE_DEPTHS
    stage_kernels: tuple[tuple[int, int, int], ...] = _DEFAULT_STAGE_KERNELS
    upsamples: tuple[tuple[tuple[int, int, int], int], ...] = _DEFAULT_UPSAMPLES
    stage5_kernel: tuple[int, int, int] = _DEFAULT_STAGE5_KERNEL
    stage5_channels: int = _DEFAULT_STAGE_CHANNELS[-1]
    t_emb_dim: int = 384
    default_num_inference_steps: int = _DEFAULT_STEPS
    timestep_scale_multiplier: float = _DEFAULT_TIMESTEP_MULTIPLIER
    model_output_type: str = _DEFAULT_OUTPUT_TYPE

    @classmethod
    def from_metadata(cls, config: dict[str, Any]) -> DiffusionDecoderConfig:
        """Read ``config["vae"]`` (the file's parsed ``config`` metadata), validating every value."""
        section = _section(config)
        section.pinned("_class_name", DIFFUSION_VAE_CLASS, absent=CONV_VAE_CLASS)
        decoder = section.section("decoder") if "decoder" in section else section
        channels = _sequence(decoder, "stage_channels", _DEFAULT_STAGE_CHANNELS)
        depths = _sequence(decoder, "stage_depths", _DEFAULT_STAGE_DEPTHS)
        for key, values, high in (("stage_channels", channels, MAX_CHANNELS), ("stage_depths", depths, MAX_DEPTH)):
            for i, value in enumerate(values):
                check_int(f"{decoder.key(key)}[{i}]", value, high=high)
        kernels = _sequence(decoder, "stage_kernels", _DEFAULT_STAGE_KERNELS)
        head_dim = decoder.get("head_dim", decoder.get("na_head_dim", 64))
        made = cls(
            in_channels=decoder.integer("in_channels", section.integer("latent_channels", 128, high=MAX_CHANNELS),
                                        high=MAX_CHANNELS),
            out_channels=decoder.integer("out_channels", 3, high=MAX_CHANNELS),
            patch_size=decoder.integer("patch_size", 4, high=64),
            head_dim=check_int(decoder.key("head_dim"), head_dim, high=MAX_HEAD_DIM),
            stage_channels=tuple(channels),
            stage_depths=tuple(depths),
            stage_kernels=tuple(_triple(k, f"{decoder.key('stage_kernels')}[{i}]", odd=True)
                                for i, k in enumerate(kernels)),
            upsamples=_upsamples(decoder),
            stage5_kernel=_triple(decoder.get("stage5_kernel", _DEFAULT_STAGE5_KERNEL), decoder.key("stage5_kernel"),
                                  odd=True),
            stage5_channels=decoder.integer("stage5_channels", channels[-1], high=MAX_CHANNELS),
            t_emb_dim=decoder.integer("t_emb_dim", 384, high=MAX_CHANNELS),
            default_num_inference_steps=decoder.integer("default_num_inference_steps", _DEFAULT_STEPS,
                                                        high=MAX_STEPS),
            timestep_scale_multiplier=decoder.number("timestep_scale_multiplier", _DEFAULT_TIMESTEP_MULTIPLIER,
                                                     above=0.0, high=1e6),
            model_output_type=section.get("model_output_type", _DEFAULT_OUTPUT_TYPE),
        )
        made.validate()
        return made

    def validate(self) -> None:
        """Reject combinations no decoder can be built or run for (``ValueError`` naming the key)."""
        if self.model_output_type not in OUTPUT_TYPES:
            raise _bad("vae.model_output_type", self.model_output_type, f"one of {OUTPUT_TYPES}")
        # The reference's rotary split: a quarter of the head to time (even), the rest halved over h / w (each
        # even); it refuses heads that leave time no share (head_dim 8).
        time_share = (self.head_dim // 4) // 2 * 2
        time_share -= 2 if ((self.head_dim - time_share) // 2) % 2 else 0
        if self.head_dim % 8 or time_share <= 0:
            raise _bad("vae.decoder.head_dim", self.head_dim, "a multiple of 8 of at least 16 (the 3-axis rotary "
                                                               "split needs a share for time)")
        for i, width in enumerate((*self.stage_channels, self.stage5_channels)):
            if width % self.head_dim:
                raise _bad(f"vae.decoder.stage_channels[{i}]", width, f"a multiple of head_dim {self.head_dim}")
        for i, (stride, reduction) in enumerate(self.upsamples):
            expected = math.prod(stride) * self.stage_channels[i] // reduction // math.prod(stride)
            if self.stage_channels[i + 1] != expected:
                raise _bad(f"vae.decoder.stage_channels[{i + 1}]", self.stage_channels[i + 1],
                           f"{expected} (stage_channels[{i}] / upsamples[{i}] reduction)")
        time = math.prod(s[0] for s, _ in self.upsamples)
        space = (math.prod(s[1] for s, _ in self.upsamples) * self.patch_size,
                 math.prod(s[2] for s, _ in self.upsamples) * self.patch_size)
        if (time, *space) != (LATENT_TIME_SCALE, LATENT_SPACE_SCALE, LATENT_SPACE_SCALE):
            raise _bad("vae.decoder.upsamples", [list(s) for s, _ in self.upsamples],
                       f"strides whose product is ({LATENT_TIME_SCALE}, {LATENT_SPACE_SCALE} / patch_size, ...)")

    # ---- derived geometry (ltx-core 1.2.0 diffusion_tiling facts) -------------------------------------------
    @property
    def trailing_pad_latent_frames(self) -> int:
        """Copies of the last latent frame run through stages 1-4 and cropped before stage 5 (NATTEN's border)."""
        return (self.stage_kernels[0][0] // 2) * 2

    @property
    def mlp_hidden(self) -> tuple[int, ...]:
        """SwiGLU width of each stage (``4 x width`` rounded up to 16)."""
        return tuple((int(c * MLP_RATIO) + 15) // 16 * 16 for c in (*self.stage_channels[:-1], self.stage5_channels))

    @property
    def min_latent_size(self) -> tuple[int, int, int]:
        """Latent (F', H', W') below which the latent is edge-padded so every stage's window fits."""
        mins = [1, 1, 1]
        cumulative = [1, 1, 1]
        for index, (stride, _) in enumerate(self.upsamples):
            for axis in range(3):
                mins[axis] = max(mins[axis], -(-self.stage_kernels[index][axis] // cumulative[axis]))
                cumulative[axis] *= stride[axis]
        for axis in range(3):
            mins[axis] = max(mins[axis], -(-self.stage5_kernel[axis] // cumulative[axis]))
        return (mins[0], mins[1], mins[2])

    @property
    def tile_stride(self) -> tuple[int, int, int]:
        """Stride of the last upsample: stage-4 input cells -> stage-5 cells."""
        return self.upsamples[-1][0]

    @property
    def pixel_scale(self) -> tuple[int, int, int]:
        """Pixels (frames, rows, columns) per stage-4 input cell: the tiling grid."""
        st, sh, sw = self.tile_stride
        return (st, sh * self.patch_size, sw * self.patch_size)

    @property
    def min_tile_size(self) -> tuple[int, int, int]:
        """Smallest stage-4 input tile (t, h, w) for which stages 4 and 5 both fit their windows."""
        k4, k5, stride = self.stage_kernels[3], self.stage5_kernel, self.tile_stride
        return tuple(max(k4[a], -(-k5[a] // stride[a])) for a in range(3))  # type: ignore[return-value]

    @property
    def min_tile_overlap(self) -> tuple[int, int]:
        """Smallest tile overlap (frames, pixels) covering the receptive halos of stages 4 and 5."""
        k4, k5, stride = self.stage_kernels[3], self.stage5_kernel, self.tile_stride
        halo = [max(self.stage_depths[3] * (k4[a] // 2), -(-(self.stage_depths[4] * (k5[a] // 2)) // stride[a]))
                for a in range(3)]
        frames = -(-halo[0] * self.pixel_scale[0] // 8) * 8
        pixels = -(-max(halo[1], halo[2]) * self.pixel_scale[1] // 32) * 32
        return frames, pixels

    @property
    def stage_3_halo(self) -> int:
        """Latent frames of context on each side that make stages 1-3 of a temporal window exact."""
        halo, cumulative = 0, 1
        for index in range(3):
            reach = self.stage_depths[index] * (self.stage_kernels[index][0] // 2)
            halo += -(-reach // cumulative)
            cumulative *= self.upsamples[index][0][0]
        return halo + 1
