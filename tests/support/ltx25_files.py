"""A tiny LTX-2.5 model set under the official 2.5 file names, for the node tests (in-process ComfyUI).

Lightricks/LTX-2.5 ships one file per component; the set holds them at the tiny sizes of ``tiny_configs``:

- ``diffusion_models/ltx-2.5-22b-{dev,distilled}-transformer-bf16``: the tiny 2.5 transformer of ``tiny_ltx25``
  (diffusers' classes in the Lightricks layout, text connectors inside, ``model_version`` 2.5.0);
- ``vae/ltx-2.5-video-vae-bf16``: conv encoder + the diffusion decoder (``tiny25``: diffusers' decoder, ltx-core's
  encoder blocks); ``vae/ltx-2.5-video-vae-conv-bf16``: the demo checkpoint's conv VAE restamped 2.5.0;
- ``latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0``: diffusers' temporal upsampler;
- ``model_patches/ltx-2.5-duration-head-bf16``; ``loras/``: the demo distilled LoRA stamped 2.5.0 and 2.3.0,
  its IC-LoRA stamped 2.5.0.

The audio VAE and the spatial upscaler come from the LTX-2.3 demo set (LTX-2.5 keeps both architectures).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from support import tiny25
from support import tiny_ltx25 as t25

FILES = {
    "dev": "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors",
    "distilled": "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
    "diffusion_vae": "vae/ltx-2.5-video-vae-bf16.safetensors",
    "conv_vae": "vae/ltx-2.5-video-vae-conv-bf16.safetensors",
    "temporal": "latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0.safetensors",
    "duration_head": "model_patches/ltx-2.5-duration-head-bf16.safetensors",
    "lora25": "loras/ltx-2.5-22b-distilled-lora-450-bf16.safetensors",
    "lora23": "loras/ltx-2.3-22b-distilled-lora-384-stamped.safetensors",
    "ic_lora25": "loras/ltx-2.5-22b-ic-lora-union-control-tiny.safetensors",
}
TEMPORAL_CONFIG = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 32,
                   "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": False, "temporal_upsample": True,
                   "spatial_scale": 2.0, "rational_resampler": False}


@dataclass(frozen=True)
class Ltx25Files:
    """Paths of the tiny 2.5 set (keys of `FILES`) and the tiny transformer's modules (``tiny``)."""

    root: Path
    paths: dict[str, Path]
    tiny: t25.Tiny25

    def combo(self, name: str) -> str:
        """The ComfyUI combo value of a file (its name inside the model folder)."""
        return self.paths[name].name


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})


def _diffusion_vae(path: Path) -> Path:
    from ltx_core.model.video_vae import VideoEncoderConfigurator

    section = tiny25.diffusion_vae_section(steps=2)
    flat = {"vae": {"encoder_blocks": section["encoder"]["blocks"], "latent_log_var": "constant",
                    "spatial_padding_mode": "zeros", "norm_layer": "pixel_norm", "patch_size": 4}}
    encoder = tiny25.honest_init(VideoEncoderConfigurator.from_config(flat), seed=8).eval()
    stats = encoder.per_channel_statistics
    with torch.no_grad():
        stats.get_buffer("std-of-means").copy_(torch.rand(128, generator=torch.Generator().manual_seed(1)) + 0.5)
        stats.get_buffer("mean-of-means").copy_(0.1 * torch.randn(128, generator=torch.Generator().manual_seed(2)))
    tensors = tiny25.diffusion_decoder_file_tensors(tiny25.diffusers_diffusion_decoder(section))
    for key, value in encoder.state_dict().items():
        stat = key.startswith("per_channel_statistics.")
        tensors[f"vae.{key}" if stat else f"vae.encoder.{key}"] = value
    return tiny25.write_file(path, tensors, {"vae": section}, dtype=torch.bfloat16)


def _temporal_upsampler(path: Path) -> Path:
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    model = LTX2LatentUpsamplerModel(in_channels=128, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                     spatial_upsample=False, temporal_upsample=True, rational_spatial_scale=2.0,
                                     use_rational_resampler=False)
    tiny25.honest_init(model, seed=4)
    return tiny25.write_file(path, model.state_dict(), TEMPORAL_CONFIG, dtype=torch.bfloat16)


def _restamp(source: Path, target: Path, version: str, keep: str | None = None) -> Path:
    tensors, metadata = _read(source)
    if keep is not None:
        tensors = {k: v for k, v in tensors.items() if k.startswith(keep)}
        config = json.loads(metadata.get("config", "{}"))
        metadata = {"config": json.dumps({"vae": config["vae"]})}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), {**metadata, "model_version": version})
    return target


def build_ltx25_files(root: Path, demo_models) -> Ltx25Files:
    """Write the set under ``root`` (one folder per ComfyUI model folder)."""
    tiny = t25.build(root / "_tiny", t25.LTX25)
    paths = {name: root / relative for name, relative in FILES.items()}
    for name in ("dev", "distilled"):
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        tensors, metadata = _read(tiny.transformer_path)
        save_file(tensors, str(paths[name]), {**metadata, "variant": name})
    paths["duration_head"].parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny.duration_head_path, paths["duration_head"])
    _diffusion_vae(paths["diffusion_vae"])
    _restamp(demo_models.checkpoint, paths["conv_vae"], "2.5.0", keep="vae.")
    _temporal_upsampler(paths["temporal"])
    _restamp(demo_models.distilled_lora, paths["lora25"], "2.5.0")
    _restamp(demo_models.distilled_lora, paths["lora23"], "2.3.0")
    _restamp(demo_models.ic_lora, paths["ic_lora25"], "2.5.0")
    return Ltx25Files(root, paths, tiny)


def register_folders(folder_paths, files: Ltx25Files) -> None:
    """Put the set's folders first in ComfyUI's model folder lists (the demo set's stay behind them)."""
    for relative in {Path(p).parts[0] for p in FILES.values()}:
        entry = folder_paths.folder_names_and_paths.get(relative, ([], set(folder_paths.supported_pt_extensions)))
        folder_paths.folder_names_and_paths[relative] = ([str(files.root / relative), *entry[0]],
                                                         set(folder_paths.supported_pt_extensions))
    folder_paths.filename_list_cache.clear()
