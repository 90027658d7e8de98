"""The LTX-2.5 diffusion video decoder: neighborhood-attention upsampling stages, then a few denoising steps.

Stages 1-4 turn the un-normalised latent into a channels-last context volume (neighborhood-attention blocks,
each stage ending in a linear pixel-shuffle upsample). Stage 5 denoises ``patch_size``-patchified pixels from
Gaussian noise, conditioned on that context through per-block context projections and a shared AdaLN-Zero
modulation of the timestep, along the schedule ``1, 1 - 1/n, ..., 1/n, 0`` (Euler steps; the model predicts v or
x0). This module holds one untiled pass of each stage; `diffusion_decode` orchestrates a decode (padding, ghost
frames, tiles, noise).

State-dict keys are the file's keys under ``vae.decoder.`` (fused ``attn.qkv``), except the timestep MLP
(``t_embedder.mlp.0/2`` in the file, ``t_embedder.timestep_embedder.linear_1/2`` here) and
``per_channel_statistics.*`` (the file's ``vae.per_channel_statistics.*``). Files that carry the legacy static
gates (``gate_msa`` / ``gate_mlp`` / optional ``gate_ctx`` per diffusion block) are built with those ``gates``,
each scaling its residual branch per channel; the reference folds the same gates into the preceding linear
weights at load (the same product, rounded once more in bf16).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ..modules import Linear
from ..sampling.steps import EulerStep, to_x0
from .diffusion_config import DiffusionDecoderConfig
from .layers import PerChannelStatistics, TimestepEmbedder, patchify, unpatchify
from .neighborhood_attention import neighborhood_attention

__all__ = ["GATE_NAMES", "DiffusionVideoDecoder", "decoder_sigmas"]

NORM_EPS = 1e-6
ROPE_BASE = 10000.0
# AdaLN-Zero chunks: scale/shift/gate (attention), scale/shift/gate (MLP), context gate; the gates are unused.
ADA_CHUNKS = 7
SCALE_MSA, SHIFT_MSA, SCALE_MLP, SHIFT_MLP = 0, 1, 3, 4
# Tokens per SwiGLU slice: bounds the three hidden-width temporaries (the result is the same).
MLP_TOKEN_CHUNK = 16384
GATE_NAMES = ("gate_msa", "gate_mlp", "gate_ctx")


def decoder_sigmas(steps: int) -> torch.Tensor:
    """The decoder's schedule (steps + 1,) float32: ``linspace(1, 1 / steps, steps)`` then 0."""
    if steps < 1:
        raise ValueError(f"steps={steps!r}, expected >= 1")
    return torch.cat([torch.linspace(1.0, 1.0 / steps, steps), torch.zeros(1)]).to(torch.float32)


def _rope_split(head_dim: int) -> tuple[int, int, int]:
    """head_dim split over (t, h, w): a quarter to time (even), the rest halved, each half even."""
    time = (head_dim // 4) // 2 * 2
    space = (head_dim - time) // 2
    if space % 2:
        time -= 2
        space = (head_dim - time) // 2
    return (time, space, space)


def _inverse_frequencies(dim: int, device: torch.device) -> torch.Tensor:
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    return (1.0 / ROPE_BASE**exponents).to(device=device, dtype=torch.float32)


def _rotate(x: torch.Tensor, split: tuple[int, int, int]) -> torch.Tensor:
    """Absolute 3-axis rotary embedding of x (B, T, H, W, heads, D) at positions 0..n-1, pairs (2i, 2i+1)."""
    parts, first = [], 0
    for axis, width in enumerate(split):
        chunk = x[..., first : first + width]
        first += width
        length = x.shape[1 + axis]
        positions = torch.arange(length, dtype=torch.float32, device=x.device)
        angles = positions[:, None] * _inverse_frequencies(width, x.device)[None, :]  # (L, width / 2)
        shape = [1, 1, 1, 1, 1, width // 2]
        shape[1 + axis] = length
        cos, sin = angles.cos().reshape(shape), angles.sin().reshape(shape)
        pairs = chunk.reshape(*chunk.shape[:-1], width // 2, 2).float()
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
        parts.append(rotated.reshape(chunk.shape).to(x.dtype))
    return torch.cat(parts, dim=-1)


class NeighborhoodAttention3d(nn.Module):
    """Multi-head 3-D neighborhood self-attention with q/k RMS norms and absolute rotary positions.

    Channels-last (B, T, H, W, C) -> same; ``kernel_size`` (t, h, w) windows (see `neighborhood_attention`).
    """

    def __init__(self, dim: int, kernel_size: tuple[int, int, int], head_dim: int, *, dtype=None, device=None):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.heads, self.head_dim, self.kernel_size = dim // head_dim, head_dim, kernel_size
        self.scale = head_dim**-0.5
        self.rope_split = _rope_split(head_dim)
        self.qkv = Linear(dim, 3 * dim, **factory)
        self.proj = Linear(dim, dim, **factory)
        self.q_norm = nn.RMSNorm(head_dim, eps=NORM_EPS, **factory)
        self.k_norm = nn.RMSNorm(head_dim, eps=NORM_EPS, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:4], self.heads, self.head_dim)  # (B, T, H, W, heads, D)
        weight, bias = self.qkv.weight, self.qkv.bias
        dim = x.shape[-1]
        # Three products on views of the fused weight: never a (B, T, H, W, 3C) buffer.
        q, k, v = (nn.functional.linear(x, weight[i * dim : (i + 1) * dim], bias[i * dim : (i + 1) * dim]).view(shape)
                   for i in range(3))
        q = _rotate(self.q_norm(q) * self.scale, self.rope_split)
        k = _rotate(self.k_norm(k), self.rope_split)
        out = neighborhood_attention(q, k, v, self.kernel_size)
        return self.proj(out.reshape(x.shape))


class SwiGLU(nn.Module):
    """``w_down(silu(w_gate(x)) * w_up(x))`` over the last axis, in slices of ``MLP_TOKEN_CHUNK`` tokens."""

    def __init__(self, dim: int, hidden: int, *, dtype=None, device=None):
        super().__init__()
        factory = {"dtype": dtype, "device": device, "bias": False}
        self.w_up = Linear(dim, hidden, **factory)
        self.w_gate = Linear(dim, hidden, **factory)
        self.w_down = Linear(hidden, dim, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] <= MLP_TOKEN_CHUNK:
            return self.w_down(nn.functional.silu(self.w_gate(x)) * self.w_up(x))
        out = torch.empty_like(flat)
        for start in range(0, flat.shape[0], MLP_TOKEN_CHUNK):
            piece = flat[start : start + MLP_TOKEN_CHUNK]
            hidden = nn.functional.silu(self.w_gate(piece)) * self.w_up(piece)
            out[start : start + MLP_TOKEN_CHUNK] = self.w_down(hidden)
        return out.view(x.shape)


class NABlock(nn.Module):
    """Pre-norm block of the deterministic stages: x + NA(norm(x)), then x + SwiGLU(norm(x)); (B, T, H, W, C)."""

    def __init__(self, dim: int, kernel_size: tuple[int, int, int], head_dim: int, hidden: int, *, dtype=None,
                 device=None):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.norm1 = nn.RMSNorm(dim, eps=NORM_EPS, **factory)
        self.attn = NeighborhoodAttention3d(dim, kernel_size, head_dim, **factory)
        self.norm2 = nn.RMSNorm(dim, eps=NORM_EPS, **factory)
        self.mlp = SwiGLU(dim, hidden, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DiffusionNABlock(nn.Module):
    """Stage-5 block: x + context_proj(context), then AdaLN-modulated NA and SwiGLU residuals.

    x (B, T, H, W, C5), context (B, T, H, W, C_ctx), modulation 7 x (B, 1, 1, 1, C5) from the shared AdaLN-Zero;
    ``scale_shift_table`` (7, C5) is this block's offset to it. ``gates`` (names from ``GATE_NAMES``) are the
    file's static per-channel gates (C5,) of the context, attention and MLP branches.
    """

    def __init__(self, dim: int, kernel_size: tuple[int, int, int], context_channels: int, head_dim: int,
                 hidden: int, *, gates: tuple[str, ...] = (), dtype=None, device=None):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.context_proj = Linear(context_channels, dim, **factory)
        self.scale_shift_table = nn.Parameter(torch.empty(ADA_CHUNKS, dim, **factory))
        self.norm1 = nn.RMSNorm(dim, eps=NORM_EPS, **factory)
        self.attn = NeighborhoodAttention3d(dim, kernel_size, head_dim, **factory)
        self.norm2 = nn.RMSNorm(dim, eps=NORM_EPS, **factory)
        self.mlp = SwiGLU(dim, hidden, **factory)
        unknown = set(gates) - set(GATE_NAMES)
        if unknown:
            raise ValueError(f"gates={gates!r}, expected names from {GATE_NAMES!r}")
        self.gates = tuple(gates)
        for name in self.gates:
            self.register_parameter(name, nn.Parameter(torch.empty(dim, **factory)))

    def _gate(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, name).to(x.dtype) if name in self.gates else x

    def forward(self, x: torch.Tensor, context: torch.Tensor, modulation: tuple[torch.Tensor, ...]) -> torch.Tensor:
        table = self.scale_shift_table.to(x.dtype)
        terms = [modulation[i] + table[i].view(1, 1, 1, 1, -1) for i in (SCALE_MSA, SHIFT_MSA, SCALE_MLP, SHIFT_MLP)]
        scale_msa, shift_msa, scale_mlp, shift_mlp = terms
        x = x + self._gate("gate_ctx", self.context_proj(context))
        x = x + self._gate("gate_msa", self.attn(self.norm1(x) * (1 + scale_msa) + shift_msa))
        return x + self._gate("gate_mlp", self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp))


class PixelShuffleUp(nn.Module):
    """Linear to ``t*h*w * C / reduction`` channels, unfolded channels-last: (B, T, H, W, C) ->
    (B, T*t, H*h, W*w, C / reduction); with a time stride of 2 the first frame is dropped (``drop_leading_frame``,
    only for a piece that holds the clip's first frame), so F' = 2F - 1 there."""

    def __init__(self, channels: int, stride: tuple[int, int, int], reduction: int, *, dtype=None, device=None):
        super().__init__()
        self.stride = stride
        self.out_channels = math.prod(stride) * channels // reduction // math.prod(stride)
        self.proj = Linear(channels, math.prod(stride) * channels // reduction, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, drop_leading_frame: bool = True) -> torch.Tensor:
        b, t, h, w, _ = x.shape
        st, sh, sw = self.stride
        x = self.proj(x).reshape(b, t, h, w, self.out_channels, st, sh, sw)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, t * st, h * sh, w * sw, self.out_channels)
        return x[:, 1:] if st == 2 and drop_leading_frame else x


class AdaLNZero(nn.Module):
    """Timestep embedding (B, E) -> 7 modulation chunks, each (B, 1, 1, 1, C)."""

    def __init__(self, dim: int, embedding_dim: int, *, dtype=None, device=None):
        super().__init__()
        self.proj = Linear(embedding_dim, ADA_CHUNKS * dim, dtype=dtype, device=device)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        chunks = self.proj(nn.functional.silu(embedding)).chunk(ADA_CHUNKS, dim=-1)
        return tuple(c[:, None, None, None, :] for c in chunks)


class DiffusionVideoDecoder(nn.Module):
    """Decode a normalised latent (B, 128, F', H', W') into video (B, 3, 1 + 8(F' - 1), 32 H', 32 W') in about
    [-1, 1] by a few denoising steps (see the module docstring); `diffusion_decode` runs it, tiled or not.

    The stage methods work channels-last: `stages_1_to_3` (latent -> stage-4 input), `stage_4` (-> context
    (B, T, H, W, C_ctx) at stage-5 resolution), `denoise` (context + pixel noise (B, 3, T, 4 H, 4 W) -> pixels).
    """

    def __init__(self, config: DiffusionDecoderConfig, *, gates: tuple[str, ...] = (), dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        config.validate()
        factory = {"dtype": dtype, "device": device}
        self.config = config
        hidden = config.mlp_hidden
        channels = config.stage_channels
        self.per_channel_statistics = PerChannelStatistics(config.in_channels, **factory)
        self.conv_in = Linear(config.in_channels, channels[0], **factory)
        self.det_stages = nn.ModuleList(
            nn.ModuleList(NABlock(channels[i], config.stage_kernels[i], config.head_dim, hidden[i], **factory)
                          for _ in range(config.stage_depths[i]))
            for i in range(len(config.upsamples))
        )
        self.upsamples = nn.ModuleList(PixelShuffleUp(channels[i], stride, reduction, **factory)
                                       for i, (stride, reduction) in enumerate(config.upsamples))
        self.t_embedder = TimestepEmbedder(config.t_emb_dim, **factory)
        width = config.stage5_channels
        pixel_channels = config.out_channels * config.patch_size**2
        self.conv_in_x_t = Linear(pixel_channels, width, **factory)
        self.shared_adaln = AdaLNZero(width, config.t_emb_dim, **factory)
        self.diff_blocks = nn.ModuleList(
            DiffusionNABlock(width, config.stage5_kernel, channels[-1], config.head_dim, hidden[-1], gates=gates,
                             **factory)
            for _ in range(config.stage_depths[-1])
        )
        self.norm_out = nn.RMSNorm(width, eps=NORM_EPS, **factory)
        self.conv_out = Linear(width, pixel_channels, **factory)

    def _stage(self, x: torch.Tensor, index: int, drop_leading_frame: bool) -> torch.Tensor:
        for block in self.det_stages[index]:
            x = block(x)
        return self.upsamples[index](x, drop_leading_frame=drop_leading_frame)

    def stages_1_to_3(self, latent: torch.Tensor, drop_leading_frame: bool = True) -> torch.Tensor:
        """Normalised latent (B, C, F, H, W) -> stage-4 input (B, T4, H4, W4, C4) channels-last."""
        x = self.conv_in(self.per_channel_statistics.un_normalize(latent).permute(0, 2, 3, 4, 1))
        for index in range(len(self.det_stages) - 1):
            x = self._stage(x, index, drop_leading_frame)
        return x

    def stage_4(self, features: torch.Tensor, drop_leading_frame: bool = True) -> torch.Tensor:
        """Stage-4 input (B, T4, H4, W4, C4) -> context (B, T5, H5, W5, C_ctx) at stage-5 resolution."""
        return self._stage(features, len(self.det_stages) - 1, drop_leading_frame)

    def predict(self, context: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """One stage-5 pass: pixels (B, 3, T, H, W) at noise level sigma (B,) -> the v or x0 prediction (same)."""
        scaled = sigma.to(torch.float32) * self.config.timestep_scale_multiplier
        modulation = self.shared_adaln(self.t_embedder(scaled, sample.dtype))
        x = self.conv_in_x_t(patchify(sample, self.config.patch_size).permute(0, 2, 3, 4, 1))
        context = context.to(x.dtype)
        for block in self.diff_blocks:
            x = block(x, context, modulation)
        x = self.conv_out(self.norm_out(x)).permute(0, 4, 1, 2, 3)
        return unpatchify(x, self.config.patch_size)

    def denoise(self, context: torch.Tensor, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Pixels (B, 3, T5, 4 H5, 4 W5) from ``noise`` of that shape along `decoder_sigmas` (Euler steps).

        A v prediction becomes x0 = x - sigma v; the last step returns the x0 prediction itself. The update runs
        in float32 and the sample keeps ``noise``'s dtype.
        """
        sigmas = decoder_sigmas(self.config.default_num_inference_steps if steps is None else steps)
        sample, batch = noise, noise.shape[0]
        for sigma, sigma_next in itertools.pairwise(sigmas):
            prediction = self.predict(context, sample, sigma.expand(batch).to(noise.device))
            if self.config.model_output_type == "v":
                x0 = to_x0(sample.float(), prediction.float(), float(sigma))
            else:
                x0 = prediction.float()
            if float(sigma_next) == 0:
                return x0.to(noise.dtype)
            sample = EulerStep()(sample.float(), x0, sigma, sigma_next)[0].to(noise.dtype)
        return sample
