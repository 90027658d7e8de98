"""Audio VAE encoder: log-mel spectrogram (B, 2, T, 64) -> normalised latent (B, 8, ceil(T / 4), 16)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AudioVAEConfig
from .layers import AttentionBlock, CausalConv2d, Downsample, PerChannelStatistics, ResnetBlock, make_norm

__all__ = ["AudioEncoder"]


class MidBlock(nn.Module):
    """ResnetBlock -> (attention or identity) -> ResnetBlock at constant width: (B, C, H, W) -> same shape."""

    def __init__(self, channels: int, config: AudioVAEConfig,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        fd = {"dtype": dtype, "device": device}
        axis, norm = config.causality_axis, config.norm_type
        self.block_1 = ResnetBlock(channels, channels, norm, axis, **fd)
        self.attn_1 = AttentionBlock(channels, norm, **fd) if config.mid_block_add_attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, norm, axis, **fd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class ResolutionLevel(nn.Module):
    """One resolution of the encoder or decoder: ``block`` ResnetBlocks, each followed by ``attn[i]`` if any."""

    def __init__(self, blocks: list[ResnetBlock], attentions: list[AttentionBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attentions)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[index](x)
        return x


def build_level(in_channels: int, out_channels: int, num_blocks: int, with_attention: bool, config: AudioVAEConfig,
                dtype: torch.dtype | None, device: torch.device | str | None) -> ResolutionLevel:
    """``num_blocks`` ResnetBlocks (the first one changes the width) and, if asked, one attention per block."""
    fd = {"dtype": dtype, "device": device}
    blocks, attentions = [], []
    for index in range(num_blocks):
        blocks.append(ResnetBlock(in_channels if index == 0 else out_channels, out_channels,
                                  config.norm_type, config.causality_axis, **fd))
        if with_attention:
            attentions.append(AttentionBlock(out_channels, config.norm_type, **fd))
    return ResolutionLevel(blocks, attentions)


class AudioEncoder(nn.Module):
    """Causal 2-D conv encoder of a stereo log-mel spectrogram.

    Input (B, in_channels, T, mel_bins) log-mel (see ``MelFrontEnd``); output the mean half of the latent,
    normalised by the per-channel statistics: (B, z_channels, ceil(T / 4), mel_bins / 4) with the default
    height (time) causality.
    """

    def __init__(self, config: AudioVAEConfig,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        fd = {"dtype": dtype, "device": device}
        ch, axis = config.ch, config.causality_axis
        self.per_channel_statistics = PerChannelStatistics(ch, **fd)
        self.conv_in = CausalConv2d(config.in_channels, ch, 3, axis, **fd)
        self.down = nn.ModuleList()
        widths = (1, *config.ch_mult)
        resolution = config.resolution
        for level, mult in enumerate(config.ch_mult):
            stage = build_level(ch * widths[level], ch * mult, config.num_res_blocks,
                                resolution in config.attn_resolutions, config, dtype, device)
            if level != len(config.ch_mult) - 1:
                stage.downsample = Downsample(ch * mult, axis, **fd)
                resolution //= 2
            self.down.append(stage)
        width = ch * config.ch_mult[-1]
        self.mid = MidBlock(width, config, **fd)
        self.norm_out = make_norm(width, config.norm_type, **fd)
        latent_out = 2 * config.z_channels if config.double_z else config.z_channels
        self.conv_out = CausalConv2d(width, latent_out, 3, axis, **fd)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, F) log-mel -> (B, z_channels, T', F') normalised latent means."""
        h = self.conv_in(spectrogram)
        for stage in self.down:
            h = stage.run_blocks(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        means = h[:, : self.config.z_channels] if self.config.double_z else h  # drop the log-variance half
        return self.per_channel_statistics.normalize(means)
