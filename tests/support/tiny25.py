"""Tiny LTX-2.5 VAE-side components built with diffusers 0.42.1's own classes and written in the Lightricks 2.5
file layout (the oracle side of tests/core/test_*25*.py).

Each builder makes a diffusers module with honest random weights and returns it with the state dict under the
Lightricks file keys (``vae.decoder.*`` with fused ``attn.qkv``, ``t_embedder.mlp.{0,2}``, ``vae.per_channel_
statistics.*``; the audio VAE / vocoder / upsampler layouts of LTX-2.3) and the ``config`` metadata the Lightricks
files carry. The key conversions are the inverse of diffusers' ``scripts/convert_ltx2_to_diffusers.py`` (read
there); loads are strict on both sides, so a wrong or missing key fails the test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

MODEL_VERSION = "2.5.0"
LATENT_CHANNELS = 128
HEAD_DIM = 16  # the smallest head the reference accepts: its rotary split needs a time share (8 gives 0)
# Stage widths 32 -> 16 -> 16 -> 16 -> 16; upsample time strides multiply to 8 and space strides x patch to 32,
# the latent grid the reference hard-codes (a patch of 8 keeps the stage-5 grid small on CPU).
STAGE_CHANNELS = [32, 16, 16, 16, 16]
STAGE_DEPTHS = [1, 1, 1, 1, 2]
UPSAMPLES = [[[1, 2, 2], 2], [[2, 1, 1], 1], [[2, 1, 1], 1], [[2, 2, 2], 1]]
PATCH_SIZE = 8
T_EMB_DIM = 32


def diffusion_vae_section(*, output_type: str = "x0", steps: int = 1, multiplier: float = 1000.0,
                          kernels: tuple[list[int], ...] | None = None,
                          stage5_kernel: list[int] | None = None) -> dict[str, Any]:
    """The ``vae`` section of a tiny ``CausalDiffusionVAE`` file (nested encoder + decoder, as the files carry).

    ``kernels`` sets the stage 1-4 kernels (default 3 x 3 x 3 each); the fifth entry the files carry is unused.
    """
    kernels = kernels if kernels is not None else ([3, 3, 3],) * 4
    return {
        "_class_name": "CausalDiffusionVAE",
        "dims": 3,
        "model_output_type": output_type,
        "encoder": {
            "dims": 3, "in_channels": 3, "out_channels": LATENT_CHANNELS, "patch_size": 4,
            "blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 1}],
                       ["compress_time_res", {"multiplier": 1}], ["compress_all_res", {"multiplier": 1}],
                       ["compress_all_res", {"multiplier": 1}]],
            "latent_log_var": "constant", "norm_layer": "pixel_norm", "spatial_padding_mode": "zeros",
        },
        "decoder": {
            "in_channels": LATENT_CHANNELS, "out_channels": 3, "patch_size": PATCH_SIZE, "head_dim": HEAD_DIM,
            "stage_channels": STAGE_CHANNELS, "stage_depths": STAGE_DEPTHS,
            "stage_kernels": [*kernels, [3, 3, 3]], "upsamples": UPSAMPLES,
            "stage5_kernel": stage5_kernel if stage5_kernel is not None else [3, 3, 3],
            "t_emb_dim": T_EMB_DIM, "timestep_scale_multiplier": multiplier, "default_num_inference_steps": steps,
        },
    }


# Residual-branch output projections are scaled down as in trained nets (diffusers / our names), so that float32
# rounding is not amplified through the stacked residual updates of a random net.
RESIDUAL_OUTPUTS = (".to_out.0.weight", ".attn.proj.weight", ".w_down.weight", ".context_proj.weight")
RESIDUAL_GAIN = 0.3


@torch.no_grad()
def honest_init(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """normal(0, 1/fan_in) matrices (residual outputs x 0.3), 1 + N(0, 0.1) norm gains, N(0, 0.1) biases and
    tables (nothing left at 0)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in module.named_parameters():
        if param.ndim >= 2 and "scale_shift_table" not in name:
            gain = RESIDUAL_GAIN if name.endswith(RESIDUAL_OUTPUTS) else 1.0
            param.copy_(gain * torch.randn(param.shape, generator=generator) / math.sqrt(param[0].numel()))
        elif name.endswith(".weight") and "norm" in name.rsplit(".", 2)[-2]:
            param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
        else:
            param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return module


def diffusers_diffusion_decoder(section: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """diffusers' ``LTX2VideoDiffusionDecoderModel`` for a tiny ``vae`` section (float32, eval, random weights)."""
    from diffusers import LTX2VideoDiffusionDecoderModel

    decoder = section["decoder"]
    model = LTX2VideoDiffusionDecoderModel(
        out_channels=decoder["out_channels"], latent_channels=decoder["in_channels"],
        patch_size=decoder["patch_size"], decoder_head_dim=decoder["head_dim"],
        decoder_stage_channels=tuple(decoder["stage_channels"]), decoder_stage_depths=tuple(decoder["stage_depths"]),
        # diffusers takes the four deterministic stages' kernels; the Lightricks files list a fifth (unused).
        decoder_stage_kernels=tuple(tuple(k) for k in decoder["stage_kernels"][:4]),
        decoder_upsample_strides=tuple(tuple(s) for s, _ in decoder["upsamples"]),
        decoder_upsample_channel_reductions=tuple(r for _, r in decoder["upsamples"]),
        decoder_stage5_kernel=tuple(decoder["stage5_kernel"]), decoder_t_emb_dim=decoder["t_emb_dim"],
        decoder_timestep_scale_multiplier=decoder["timestep_scale_multiplier"],
        decoder_model_output_type=section["model_output_type"],
        decoder_num_inference_steps=decoder["default_num_inference_steps"],
    )
    honest_init(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    model.latents_mean.copy_(0.2 * torch.randn(LATENT_CHANNELS, generator=generator))
    model.latents_std.copy_(torch.rand(LATENT_CHANNELS, generator=generator) + 0.5)
    return model.eval()


_DIFFUSION_RENAMES = (  # diffusers -> Lightricks (the inverse of LTX_2_5_DIFFUSION_DECODER_RENAME_DICT)
    ("t_embedder.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
    ("t_embedder.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
    (".attn.to_out.0.", ".attn.proj."),
    (".attn.norm_q.", ".attn.q_norm."),
    (".attn.norm_k.", ".attn.k_norm."),
)


def diffusion_decoder_file_tensors(model: torch.nn.Module, prefix: str = "vae.") -> dict[str, torch.Tensor]:
    """diffusers' diffusion-decoder state dict under the Lightricks keys (q/k/v fused into ``attn.qkv``)."""
    tensors: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in model.state_dict().items():
        if name in ("latents_mean", "latents_std"):
            stat = "mean-of-means" if name == "latents_mean" else "std-of-means"
            tensors[f"{prefix}per_channel_statistics.{stat}"] = value.clone()
            continue
        key = name.removeprefix("decoder.")
        for old, new in _DIFFUSION_RENAMES:
            key = key.replace(old, new)
        for part in ("q", "k", "v"):
            marker = f".attn.to_{part}."
            if marker in key:
                base, leaf = key.split(marker)
                fused.setdefault(f"{base}.attn.qkv.{leaf}", {})[part] = value
                break
        else:
            tensors[f"{prefix}decoder.{key}"] = value.clone()
    for key, parts in fused.items():
        tensors[f"{prefix}decoder.{key}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return tensors


def use_kitchen_neighborhood_attention(model: torch.nn.Module) -> None:
    """Run diffusers' NATTEN processor with comfy-kitchen's eager ``na3d`` (NATTEN semantics) as its kernel.

    diffusers' default flex-attention processor builds a dense block mask: minutes on a 2-core CPU even at tiny
    sizes. Its NATTEN processor is the reference's own call pattern; comfy-kitchen 0.2.40 (an oracle package)
    supplies the kernel without the Hub download.
    """
    import comfy_kitchen
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoVaeNeighborhoodNattenProcessor

    processor = object.__new__(LTX2VideoVaeNeighborhoodNattenProcessor)
    processor.backend = None
    processor._na3d = lambda q, k, v, kernel_size, scale, backend: comfy_kitchen.na3d(
        q, k, v, list(kernel_size), None, scale)
    model.set_attn_processor(processor)


def write_file(path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any],
               dtype: torch.dtype = torch.float32, model_version: str = MODEL_VERSION) -> Path:
    """A safetensors file with the ``config`` / ``model_version`` metadata (float tensors cast to ``dtype``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(cast, str(path), metadata={"config": json.dumps(config), "model_version": model_version})
    return path


def denormalize(model: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """The un-normalised latent diffusers' decoder expects (its pipeline applies the statistics)."""
    return latent * model.latents_std.view(1, -1, 1, 1, 1) + model.latents_mean.view(1, -1, 1, 1, 1)
