"""Residual blocks of the video VAE, optionally timestep-conditioned (AdaLN-style scale/shift) and with
StyleGAN-style spatial noise injection."""

from __future__ import annotations

import torch
from torch import nn

from .layers import GROUP_NORM_EPS, CausalConv3d, TimestepEmbedder, make_norm

__all__ = ["ResBlock3d", "ResBlockStack"]

# ResBlock3d: (shift1, scale1, shift2, scale2) per channel.
_ADA_TERMS = 4


class ResBlock3d(nn.Module):
    """norm -> (scale/shift) -> SiLU -> conv -> (noise) -> norm -> (scale/shift) -> SiLU -> conv -> (noise), plus
    the input (through a LayerNorm-like GroupNorm(1) and a 1x1x1 conv when the width changes).

    (B, C_in, F, H, W) -> (B, C_out, F, H, W). ``timestep_embedding`` is (B, 4 * C_in, 1, 1, 1) when the block
    is timestep-conditioned; noise is drawn from ``generator`` as one (H, W) plane per injection, scaled per
    channel and shared by all frames and batch items.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        norm_layer: str = "pixel_norm",
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
        padding_mode: str = "zeros",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        factory = {"dtype": dtype, "device": device}
        self.inject_noise = inject_noise
        self.timestep_conditioning = timestep_conditioning
        self.norm1 = make_norm(norm_layer, in_channels, **factory)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, padding_mode=padding_mode, **factory)
        self.norm2 = make_norm(norm_layer, out_channels, **factory)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, padding_mode=padding_mode, **factory)
        if inject_noise:
            # ltx-core sizes both scales by the input width; blocks with noise keep the width (res_x).
            self.per_channel_scale1 = nn.Parameter(torch.zeros(in_channels, 1, 1, **factory))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(in_channels, 1, 1, **factory))
        if in_channels != out_channels:
            self.norm3: nn.Module = nn.GroupNorm(1, in_channels, eps=GROUP_NORM_EPS, **factory)
            self.conv_shortcut: nn.Module = nn.Conv3d(in_channels, out_channels, 1, **factory)
        else:
            self.norm3 = nn.Identity()
            self.conv_shortcut = nn.Identity()
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.zeros(_ADA_TERMS, in_channels, **factory))

    @staticmethod
    def _add_noise(x: torch.Tensor, per_channel_scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # x: (B, C, F, H, W); one (H, W) noise plane scaled per channel, broadcast over batch and frames. Drawn in
        # float32 so that the same generator gives the same noise whatever the compute dtype.
        plane = torch.randn(x.shape[-2:], generator=generator, dtype=torch.float32, device=x.device).to(x.dtype)
        scaled = plane[None] * per_channel_scale.to(x)  # (C, H, W)
        return x + scaled[None, :, None]

    def _modulation(self, timestep_embedding: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if timestep_embedding is None:
            raise ValueError("timestep_embedding is required: this block is timestep-conditioned")
        batch = like.shape[0]
        table = self.scale_shift_table.to(like)[None, :, :, None, None, None]  # (1, 4, C, 1, 1, 1)
        ada = table + timestep_embedding.reshape(batch, _ADA_TERMS, -1, *timestep_embedding.shape[-3:])
        return ada.unbind(dim=1)  # 4 x (B, C, 1, 1, 1)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = True,
        timestep_embedding: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        h = self.norm1(x)
        if self.timestep_conditioning:
            shift1, scale1, shift2, scale2 = self._modulation(timestep_embedding, h)
            h = h * (1 + scale1) + shift1
        h = self.conv1(nn.functional.silu(h), causal=causal)
        if self.inject_noise:
            h = self._add_noise(h, self.per_channel_scale1, generator)
        h = self.norm2(h)
        if self.timestep_conditioning:
            h = h * (1 + scale2) + shift2
        h = self.conv2(nn.functional.silu(h), causal=causal)
        if self.inject_noise:
            h = self._add_noise(h, self.per_channel_scale2, generator)
        return self.conv_shortcut(self.norm3(x)) + h


class ResBlockStack(nn.Module):
    """``num_layers`` width-preserving `ResBlock3d` sharing one timestep embedding: (B, C, F, H, W) -> same.

    When timestep-conditioned, ``time_embedder`` maps the scaled timestep (B,) to (B, 4 * C).
    """

    def __init__(
        self,
        channels: int,
        num_layers: int,
        *,
        norm_layer: str = "pixel_norm",
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
        padding_mode: str = "zeros",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.timestep_conditioning = timestep_conditioning
        if timestep_conditioning:
            self.time_embedder = TimestepEmbedder(channels * _ADA_TERMS, dtype=dtype, device=device)
        self.res_blocks = nn.ModuleList(
            ResBlock3d(
                channels,
                channels,
                norm_layer=norm_layer,
                inject_noise=inject_noise,
                timestep_conditioning=timestep_conditioning,
                padding_mode=padding_mode,
                dtype=dtype,
                device=device,
            )
            for _ in range(num_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = True,
        timestep: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        embedding = None
        if self.timestep_conditioning:
            if timestep is None:
                raise ValueError("timestep is required: this block stack is timestep-conditioned")
            embedding = self.time_embedder(timestep.flatten(), x.dtype)  # (B, 4C)
            embedding = embedding.view(x.shape[0], -1, 1, 1, 1)  # (B, 4C, 1, 1, 1)
        for block in self.res_blocks:
            x = block(x, causal=causal, timestep_embedding=embedding, generator=generator)
        return x
