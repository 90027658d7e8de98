"""Write the tiny LTX-2.5 demo model set: one file per component, under the official Lightricks/LTX-2.5 names.

Built from AIPROD's own modules with the demo set's seeded initialisation (`support.tiny_checkpoints`), at the
tiny LTX-2.3 demo sizes (30 blocks, so the reference's STG block 28 exists) with LTX-2.5's options:
``ff_bias`` false, the keyframe position embedding, ``model_version`` 2.5.0 and ``gemma_source_checkpoint``. The
Gemma 4 text encoder is the tiny ``Gemma4UnifiedForConditionalGeneration`` of `support.tiny_gemma4` (transformers'
classes: AIPROD runs the transformers Gemma-4 backbone) bundled with its tokenizer and the LTX text projection.

Files (relative to the output folder, as ComfyUI's model folders):
``diffusion_models/ltx-2.5-22b-{dev,distilled}-transformer-bf16`` (transformer + text connectors),
``text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16``, ``vae/ltx-2.5-video-vae-bf16`` (diffusion decoder),
``vae/ltx-2.5-video-vae-conv-bf16``, ``vae/ltx-2.5-audio-vae-bf16`` (audio VAE + vocoder),
``latent_upscale_models/ltx-2.5-latent-{spatial,temporal}-upscaler-x2-bf16-1.0``,
``loras/ltx-2.5-22b-distilled-lora-450-bf16`` and ``model_patches/ltx-2.5-duration-head-bf16``.

``python scripts/demo_models_ltx25.py OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "tests") not in sys.path:  # the tiny builders are shared with the test fixtures
    sys.path.insert(0, str(REPO_ROOT / "tests"))
from support import tiny25 as vae25  # noqa: E402  (after the path setup)
from support import tiny_checkpoints as tiny  # noqa: E402
from support import tiny_configs as tc  # noqa: E402
from support import tiny_gemma4 as tg  # noqa: E402
from support.demo_module import load_demo_models_module  # noqa: E402

__all__ = ["FILES", "Ltx25Demo", "ltx25_config", "write_ltx25_demo_models"]

log = logging.getLogger("aiprod.demo25")
MODEL_VERSION = "2.5.0"
NUM_LAYERS = 30
DIT = "model.diffusion_model."
FILES = {
    "dev": "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors",
    "distilled": "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
    "text_encoder": "text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors",
    "video_vae": "vae/ltx-2.5-video-vae-bf16.safetensors",
    "video_vae_conv": "vae/ltx-2.5-video-vae-conv-bf16.safetensors",
    "audio_vae": "vae/ltx-2.5-audio-vae-bf16.safetensors",
    "spatial_upscaler": "latent_upscale_models/ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors",
    "temporal_upscaler": "latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0.safetensors",
    "distilled_lora": "loras/ltx-2.5-22b-distilled-lora-450-bf16.safetensors",
    "duration_head": "model_patches/ltx-2.5-duration-head-bf16.safetensors",
}


@dataclass(frozen=True)
class Ltx25Demo:
    """The written set: ``paths[name]`` for each key of `FILES`."""

    root: Path
    paths: dict[str, Path]

    def install_map(self) -> dict[str, Path]:
        """``{"folder/name": path}`` for `support.comfy_host.install_model_files`."""
        return {FILES[name]: path for name, path in self.paths.items()}


def ltx25_config() -> dict[str, Any]:
    """The demo set's ``config``: the LTX-2.3 demo sections with LTX-2.5's transformer options."""
    config = tc.checkpoint_config(tc.LTX23)
    config["transformer"].update(num_layers=NUM_LAYERS, ff_bias=False, use_keyframes_abs_pos_embedding=True,
                                 text_encoder_norm_type="PER_TOKEN_RMS", caption_channels=tg.HIDDEN)
    return config


def _metadata(sections: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"config": json.dumps(sections), "model_version": MODEL_VERSION, **extra}


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata)
    return path


def _module_tensors(module: torch.nn.Module, seed: int, to_file_key) -> dict[str, torch.Tensor]:
    tiny.init_parameters(module, seed, to_file_key)
    out: dict[str, torch.Tensor] = {}
    tiny.collect(out, module, to_file_key)
    return out


@torch.no_grad()
def _transformer_and_projection(config: dict[str, Any], seed: int) -> tuple[dict, dict]:
    from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor
    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    f32 = {"dtype": torch.float32, "device": "cpu"}
    with torch.random.fork_rng(devices=[]):
        dit = AVTransformer(TransformerConfig.from_metadata(config, with_audio=True), **f32)
        text = TextEmbeddingsProcessor(TextEmbeddingsConfig.from_metadata(config), tg.HIDDEN, tg.LAYERS, **f32)
    tensors = _module_tensors(dit, seed, tiny.prefix_map(DIT))
    text_map = tiny.prefix_map("", feature_extractor="text_embedding_projection.",
                               video_connector=DIT + "video_embeddings_connector.",
                               audio_connector=DIT + "audio_embeddings_connector.")
    text_tensors = _module_tensors(text, seed, text_map)
    tensors.update({k: v for k, v in text_tensors.items() if k.startswith(DIT)})
    return tensors, {k: v for k, v in text_tensors.items() if not k.startswith(DIT)}


def _diffusion_decoder_key(key: str) -> str:
    """Our `DiffusionVideoDecoder` key -> the Lightricks file key (the inverse of DIFFUSION_VIDEO_DECODER_MAP)."""
    for ours, theirs in (("t_embedder.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
                         ("t_embedder.timestep_embedder.linear_2.", "t_embedder.mlp.2.")):
        if key.startswith(ours):
            return "vae.decoder." + theirs + key[len(ours):]
    return "vae." + key if key.startswith("per_channel_statistics.") else "vae.decoder." + key


@torch.no_grad()
def _vae_files(config: dict[str, Any], seed: int) -> tuple[dict, dict, dict]:
    """(diffusion-decoder VAE tensors, its ``vae`` section, conv VAE tensors); the halves share the statistics
    (seeded by file key, so both write the same values)."""
    from aiprod.aiprod_core.video_vae import (
        DiffusionDecoderConfig,
        DiffusionVideoDecoder,
        VideoDecoder,
        VideoEncoder,
        VideoVAEConfig,
        video_encoder_config,
    )

    f32 = {"dtype": torch.float32, "device": "cpu"}
    section = {"vae": vae25.diffusion_vae_section(steps=2)}
    with torch.random.fork_rng(devices=[]):
        encoder = VideoEncoder(video_encoder_config(section), **f32)
        decoder = DiffusionVideoDecoder(DiffusionDecoderConfig.from_metadata(section), **f32)
        conv_encoder = VideoEncoder(VideoVAEConfig.from_metadata(config), **f32)
        conv_decoder = VideoDecoder(VideoVAEConfig.from_metadata(config), **f32)
    diffusion = _module_tensors(encoder, seed, tiny.prefix_map("vae.encoder.", "vae."))
    diffusion.update(_module_tensors(decoder, seed, _diffusion_decoder_key))
    conv = _module_tensors(conv_encoder, seed, tiny.prefix_map("vae.encoder.", "vae."))
    conv.update(_module_tensors(conv_decoder, seed, tiny.prefix_map("vae.decoder.", "vae.")))
    return diffusion, section, conv


@torch.no_grad()
def _audio_tensors(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    from aiprod.aiprod_core.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig, VocoderConfig, build_vocoder

    f32 = {"dtype": torch.float32, "device": "cpu"}
    audio = AudioVAEConfig.from_metadata(config)
    with torch.random.fork_rng(devices=[]):
        parts = ((AudioEncoder(audio, **f32), tiny.prefix_map("audio_vae.encoder.", "audio_vae.")),
                 (AudioDecoder(audio, **f32), tiny.prefix_map("audio_vae.decoder.", "audio_vae.")),
                 (build_vocoder(VocoderConfig.from_metadata(config), **f32), tiny.prefix_map("vocoder.")))
    tensors: dict[str, torch.Tensor] = {}
    for module, to_file_key in parts:
        tensors.update(_module_tensors(module, seed, to_file_key))
    return tensors


@torch.no_grad()
def _upsampler_tensors(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    from aiprod.aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig

    with torch.random.fork_rng(devices=[]):
        module = LatentUpsampler(LatentUpsamplerConfig.from_metadata(config), dtype=torch.float32)
    return _module_tensors(module, seed, lambda key: key)


@torch.no_grad()
def _duration_head_tensors(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import math

    from aiprod.aiprod_core.duration_head import DurationHead, DurationHeadConfig

    with torch.random.fork_rng(devices=[]):
        head = DurationHead(DurationHeadConfig.from_metadata(config), dtype=torch.float32)
    tensors = _module_tensors(head, seed, lambda key: "duration_head." + key)
    bias = tensors["duration_head.mlp_out.bias"].float() + math.log(4.0)  # predictions around 4 s
    tensors["duration_head.mlp_out.bias"] = bias.to(torch.bfloat16)
    return tensors


def _lora_tensors(seed: int) -> dict[str, torch.Tensor]:
    return load_demo_models_module().lora_tensors(seed, "distilled")  # the demo LoRA's blocks and ranks


def write_ltx25_demo_models(root: Path, seed: int = 0) -> Ltx25Demo:
    """Write every file of the set under ``root`` (overwriting) and return their paths."""
    config = ltx25_config()
    paths = {name: root / relative for name, relative in FILES.items()}
    source = json.dumps({"ltx_version": MODEL_VERSION, "gemma_version": tg.GEMMA_VERSION})
    dit, projection = _transformer_and_projection(config, seed)
    for variant in ("dev", "distilled"):
        _save(paths[variant], dit, _metadata({"transformer": config["transformer"]}, variant=variant,
                                             gemma_source_checkpoint=source))
    bundle = tg.ltx_bundle_tensors(tg.build_model(seed))
    bundle.update(projection)  # the projection that fits the demo transformer's connectors
    _save(paths["text_encoder"], bundle, {"format": "pt", "gemma_config": json.dumps(tg.config())})
    diffusion, section, conv = _vae_files(config, seed)
    _save(paths["video_vae"], diffusion, _metadata(section))
    _save(paths["video_vae_conv"], conv, _metadata({"vae": config["vae"]}))
    _save(paths["audio_vae"], _audio_tensors(config, seed),
          _metadata({k: config[k] for k in ("audio_vae", "vocoder")}))
    spatial, temporal = tc.upsampler_config(2.0), {**tc.upsampler_config(2.0), "spatial_upsample": False,
                                                   "temporal_upsample": True}
    _save(paths["spatial_upscaler"], _upsampler_tensors(spatial, seed), _metadata(spatial))
    _save(paths["temporal_upscaler"], _upsampler_tensors(temporal, seed + 1), _metadata(temporal))
    _save(paths["distilled_lora"], _lora_tensors(seed), {"model_version": MODEL_VERSION})
    head_config = {"transformer": {k: config["transformer"][k] for k in ("cross_attention_dim",
                                                                         "audio_cross_attention_dim")},
                   "duration_head": {"pooler_hidden_dim": 16, "num_queries": 2, "num_pooler_heads": 4,
                                     "mlp_hidden": 8}}
    _save(paths["duration_head"], _duration_head_tensors(head_config, seed), _metadata(head_config))
    log.info("wrote the LTX-2.5 demo set under %s", root)
    return Ltx25Demo(root, paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/demo_models_ltx25.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (ComfyUI model-folder layout inside)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load_demo_models_module().register_pack()
    write_ltx25_demo_models(args.out, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
