"""Video VAE decoder: normalised latent -> RGB video in about [-1, 1], optionally timestep-conditioned."""

from __future__ import annotations

import torch
from torch import nn

from .config import DECODER_WIDTH_FACTOR, BlockSpec, VideoVAEConfig
from .layers import CausalConv3d, PerChannelStatistics, TimestepEmbedder, make_norm, unpatchify
from .resnet import ResBlock3d, ResBlockStack
from .sampling import DepthToSpaceUp

__all__ = ["DECODE_NOISE_SCALE", "DECODE_TIMESTEP", "VideoDecoder"]

# Timestep-conditioned decoding: the latent is blended with this much Gaussian noise, and the decoder is told
# this timestep unless the caller gives one (ltx-core's decode_noise_scale / decode_timestep).
DECODE_NOISE_SCALE = 0.025
DECODE_TIMESTEP = 0.05
# (shift, scale) of the final AdaLN.
_LAST_ADA_TERMS = 2
# Initial value of the learned timestep multiplier (the checkpoint overrides it).
TIMESTEP_SCALE = 1000.0


def _decoder_block(spec: BlockSpec, channels: int, config: VideoVAEConfig, factory: dict) -> tuple[nn.Module, int]:
    """Build one decoder stage; returns it and its output width."""
    pad = config.decoder_padding_mode
    if spec.name == "res_x":
        block: nn.Module = ResBlockStack(
            channels,
            spec.num_layers,
            norm_layer=config.norm_layer,
            inject_noise=spec.inject_noise,
            timestep_conditioning=config.timestep_conditioning,
            padding_mode=pad,
            **factory,
        )
        return block, channels
    out = channels // spec.multiplier
    if spec.name == "res_x_y":
        block = ResBlock3d(
            channels, out, norm_layer=config.norm_layer, inject_noise=spec.inject_noise, padding_mode=pad, **factory
        )
    else:  # compress_time / compress_space / compress_all
        block = DepthToSpaceUp(
            channels, spec.stride, residual=spec.residual, reduction=spec.multiplier, padding_mode=pad, **factory
        )
    return block, out


class VideoDecoder(nn.Module):
    """Decode a normalised latent (B, C, F', H', W') into video (B, out_channels, F, H, W).

    F = 1 + t(F' - 1), H = s H', W = s W' with (t, s) = ``config.decoder_scale_factors`` (8, 32). When the
    config is timestep-conditioned (LTX-2) the latent is first mixed with ``DECODE_NOISE_SCALE`` Gaussian noise
    drawn from ``generator`` (as are the per-block noise planes of ``inject_noise`` stages), and the blocks are
    modulated by ``timestep`` (B,) (default ``DECODE_TIMESTEP``). State-dict keys match ltx-core's
    ``VideoDecoder`` (checkpoint prefix ``vae.decoder.`` plus the shared ``vae.per_channel_statistics.``).
    """

    def __init__(
        self,
        config: VideoVAEConfig,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.config = config
        self.scale_factors = config.decoder_scale_factors
        self.causal = config.causal_decoder
        self.timestep_conditioning = config.timestep_conditioning
        pad = config.decoder_padding_mode
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels, **factory)
        channels = config.decoder_base_channels * DECODER_WIDTH_FACTOR
        self.conv_in = CausalConv3d(config.latent_channels, channels, 3, padding_mode=pad, **factory)
        self.up_blocks = nn.ModuleList()
        for spec in reversed(config.decoder_blocks):
            block, channels = _decoder_block(spec, channels, config, factory)
            self.up_blocks.append(block)
        self.conv_norm_out = make_norm(config.norm_layer, channels, **factory)
        out = config.out_channels * config.patch_size**2
        self.conv_out = CausalConv3d(channels, out, 3, padding_mode=pad, **factory)
        if self.timestep_conditioning:
            self.timestep_scale_multiplier = nn.Parameter(torch.full((), TIMESTEP_SCALE, **factory))
            self.last_time_embedder = TimestepEmbedder(channels * _LAST_ADA_TERMS, **factory)
            self.last_scale_shift_table = nn.Parameter(torch.empty(_LAST_ADA_TERMS, channels, **factory))

    def _check_latent(self, latent: torch.Tensor) -> None:
        if latent.ndim != 5 or latent.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latent.shape={tuple(latent.shape)!r}, expected (B, {self.config.latent_channels}, F, H, W)"
            )

    def _timesteps(self, timestep: torch.Tensor | float | None, like: torch.Tensor) -> torch.Tensor:
        batch = like.shape[0]
        if timestep is None:
            timestep = DECODE_TIMESTEP
        # float32 whatever the compute dtype: t x ~1000 feeds sinusoids, and bf16 would round it by ~0.25.
        timestep = torch.as_tensor(timestep, device=like.device, dtype=torch.float32)
        if timestep.numel() not in (1, batch):
            raise ValueError(f"timestep.shape={tuple(timestep.shape)!r}, expected () or ({batch},)")
        return timestep.reshape(-1).expand(batch)  # (B,)

    def _final_modulation(self, x: torch.Tensor, scaled_timestep: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        embedding = self.last_time_embedder(scaled_timestep.flatten(), x.dtype)  # (B, 2C)
        embedding = embedding.reshape(batch, _LAST_ADA_TERMS, -1, 1, 1, 1)
        table = self.last_scale_shift_table.to(x)[None, :, :, None, None, None]  # (1, 2, C, 1, 1, 1)
        shift, scale = (table + embedding).unbind(dim=1)  # 2 x (B, C, 1, 1, 1)
        return x * (1 + scale) + shift

    def forward(
        self,
        latent: torch.Tensor,
        timestep: torch.Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self._check_latent(latent)  # (B, C, F', H', W')
        x = latent
        scaled_timestep = None
        if self.timestep_conditioning:
            # float32 draws: the same generator gives the same noise in every compute dtype.
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32, device=x.device).to(x.dtype)
            x = noise * DECODE_NOISE_SCALE + (1.0 - DECODE_NOISE_SCALE) * x
            multiplier = self.timestep_scale_multiplier.float()
            scaled_timestep = self._timesteps(timestep, x) * multiplier  # (B,) float32
        x = self.conv_in(self.per_channel_statistics.un_normalize(x), causal=self.causal)
        for block in self.up_blocks:
            if isinstance(block, ResBlockStack):
                x = block(x, causal=self.causal, timestep=scaled_timestep, generator=generator)
            elif isinstance(block, ResBlock3d):
                x = block(x, causal=self.causal, generator=generator)
            else:
                x = block(x, causal=self.causal)
        x = self.conv_norm_out(x)
        if scaled_timestep is not None:
            x = self._final_modulation(x, scaled_timestep)
        x = self.conv_out(nn.functional.silu(x), causal=self.causal)  # (B, 3 * p * p, F, H / p, W / p)
        return unpatchify(x, self.config.patch_size)  # (B, 3, F, H, W)
