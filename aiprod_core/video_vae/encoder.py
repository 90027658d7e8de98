"""Video VAE encoder: RGB video in [-1, 1] -> normalised latent means."""

from __future__ import annotations

import logging

import torch
from torch import nn

from .config import BlockSpec, VideoVAEConfig
from .layers import CausalConv3d, PerChannelStatistics, make_norm, patchify
from .resnet import ResBlock3d, ResBlockStack
from .sampling import SpaceToDepthDown

__all__ = ["VideoEncoder"]

logger = logging.getLogger(__name__)

# Extra conv_out channels per log-variance mode (the log-variance is computed but only the means are used).
_LOG_VAR_EXTRA = {"per_channel": None, "uniform": 1, "constant": 1}


def _encoder_block(spec: BlockSpec, channels: int, config: VideoVAEConfig, factory: dict) -> tuple[nn.Module, int]:
    """Build one encoder stage; returns it and its output width."""
    out = channels * spec.multiplier
    pad = config.encoder_padding_mode
    if spec.name == "res_x":
        block: nn.Module = ResBlockStack(
            channels, spec.num_layers, norm_layer=config.norm_layer, padding_mode=pad, **factory
        )
    elif spec.name == "res_x_y":
        block = ResBlock3d(channels, out, norm_layer=config.norm_layer, padding_mode=pad, **factory)
    elif spec.name.endswith("_res"):
        block = SpaceToDepthDown(channels, out, spec.stride, padding_mode=pad, **factory)
    else:  # compress_time / compress_space / compress_all / compress_all_x_y: a strided causal conv
        block = CausalConv3d(channels, out, 3, stride=spec.stride, padding_mode=pad, **factory)
    return block, out


class VideoEncoder(nn.Module):
    """Encode video (B, in_channels, F, H, W) in [-1, 1] into normalised latent means (B, C, F', H / s, W / s).

    C = ``latent_channels`` (128), F' = 1 + (F - 1) / t with (t, s) = ``config.encoder_scale_factors``
    (8, 32). F must be 1 + t*k: extra trailing frames are cropped with a warning, as ltx-core does. H and W
    must be multiples of s. State-dict keys match ltx-core's ``VideoEncoder`` (checkpoint prefix
    ``vae.encoder.`` plus the shared ``vae.per_channel_statistics.``).
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
        self.scale_factors = config.encoder_scale_factors
        latent = config.latent_channels
        self.per_channel_statistics = PerChannelStatistics(latent, **factory)
        pad = config.encoder_padding_mode
        self.conv_in = CausalConv3d(config.in_channels * config.patch_size**2, latent, 3, padding_mode=pad, **factory)
        self.down_blocks = nn.ModuleList()
        channels = latent
        for spec in config.encoder_blocks:
            block, channels = _encoder_block(spec, channels, config, factory)
            self.down_blocks.append(block)
        self.conv_norm_out = make_norm(config.norm_layer, channels, **factory)
        extra = _LOG_VAR_EXTRA[config.latent_log_var]
        out = 2 * latent if extra is None else latent + extra
        self.conv_out = CausalConv3d(channels, out, 3, padding_mode=pad, **factory)

    def check_video(self, video: torch.Tensor) -> torch.Tensor:
        """Validate (B, C, F, H, W) and crop trailing frames to 1 + t*k (with a warning)."""
        if video.ndim != 5 or video.shape[1] != self.config.in_channels:
            raise ValueError(f"video.shape={tuple(video.shape)!r}, expected (B, {self.config.in_channels}, F, H, W)")
        space, time = self.scale_factors.height, self.scale_factors.time
        if video.shape[3] % space or video.shape[4] % space:
            raise ValueError(f"video (H, W)={tuple(video.shape[3:])!r}, expected multiples of {space}")
        extra = (video.shape[2] - 1) % time
        if extra:
            logger.warning("encode: %d frames is not 1 + %d*k; cropping the last %d", video.shape[2], time, extra)
            video = video[:, :, : video.shape[2] - extra]
        return video

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        video = self.check_video(video)  # (B, 3, F, H, W)
        x = self.conv_in(patchify(video, self.config.patch_size))  # (B, C, F, H/4, W/4)
        for block in self.down_blocks:
            x = block(x)
        x = self.conv_out(nn.functional.silu(self.conv_norm_out(x)))  # (B, C + log-var, F', H', W')
        means = x[:, : self.config.latent_channels]
        return self.per_channel_statistics.normalize(means)
