"""Audio VAE decoder: normalised latent (B, 8, T', 16) -> log-mel spectrogram (B, 2, 4 T' - 3, 64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LATENT_DOWNSAMPLE_FACTOR, AudioVAEConfig
from .encoder import MidBlock, build_level
from .layers import CausalConv2d, PerChannelStatistics, Upsample, make_norm

__all__ = ["AudioDecoder"]


class AudioDecoder(nn.Module):
    """Mirror of ``AudioEncoder``: un-normalises the latent and upsamples it back to a stereo log-mel.

    Input (B, z_channels, T', F') normalised latent; output (B, out_ch, T, mel_bins) with
    T = 4 T' - 3 for a causal time axis (4 T' without causality), cropped or zero-padded to exactly that.
    """

    def __init__(self, config: AudioVAEConfig,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        fd = {"dtype": dtype, "device": device}
        ch, axis, levels = config.ch, config.causality_axis, len(config.ch_mult)
        self.per_channel_statistics = PerChannelStatistics(ch, **fd)
        width = ch * config.ch_mult[-1]
        self.conv_in = CausalConv2d(config.z_channels, width, 3, axis, **fd)
        self.mid = MidBlock(width, config, **fd)
        stages: dict[int, nn.Module] = {}  # built deepest first, stored shallowest first (``up[0]`` is full size)
        resolution = config.resolution // 2 ** (levels - 1)
        for level in reversed(range(levels)):
            out_width = ch * config.ch_mult[level]
            stage = build_level(width, out_width, config.num_res_blocks + 1,
                                resolution in config.attn_resolutions, config, dtype, device)
            width = out_width
            if level != 0:
                stage.upsample = Upsample(width, axis, **fd)
                resolution *= 2
            stages[level] = stage
        self.up = nn.ModuleList(stages[level] for level in range(levels))
        self.norm_out = make_norm(width, config.norm_type, **fd)
        self.conv_out = CausalConv2d(width, config.out_ch, 3, axis, **fd)

    def output_frames(self, latent_frames: int) -> int:
        """Mel frames decoded from ``latent_frames`` latent frames."""
        frames = latent_frames * LATENT_DOWNSAMPLE_FACTOR
        if self.config.causality_axis is not None:
            frames = max(frames - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)
        return frames

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, z_channels, T', F') normalised latent -> (B, out_ch, T, mel_bins) log-mel."""
        target_frames = self.output_frames(latent.shape[2])
        h = self.conv_in(self.per_channel_statistics.un_normalize(latent))
        h = self.mid(h)
        for stage in reversed(self.up):
            h = stage.run_blocks(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return self._fit(h, target_frames)

    def _fit(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        """Crop / zero-pad (B, C, T, F) to (B, out_ch, frames, mel_bins)."""
        mel_bins = self.config.mel_bins
        h = h[:, : self.config.out_ch, :frames, :mel_bins]
        pad_frames, pad_bins = frames - h.shape[2], mel_bins - h.shape[3]
        if pad_frames > 0 or pad_bins > 0:
            h = F.pad(h, (0, pad_bins, 0, pad_frames))
        return h
