"""Seeded factory for tiny random-weight LTX-2 / LTX-2.3 checkpoints in the official single-file format.

The modules are built by the reference itself (ltx-core's configurators, from the tiny configs in
``tiny_configs``), initialised non-trivially, and written under the official key prefixes in bf16 with the
``config`` / ``model_version`` metadata the reference reads. Per-tensor generators are derived from
``(seed, key)``, so a seed gives byte-identical files (the safetensors bytes are laid out here, in a fixed
order, because safetensors' own writer orders the metadata at random).

CLI (``make demo``): ``python -m support.tiny_checkpoints OUTDIR [--seed N]`` (cwd ``tests`` or
``PYTHONPATH=tests``) writes OUTDIR/checkpoints, OUTDIR/latent_upscale_models and OUTDIR/loras.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from support import tiny_configs as tc

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR, UPSCALERS_DIR, LORAS_DIR = "checkpoints", "latent_upscale_models", "loras"
FILE_NAMES = {
    tc.LTX2: f"{CHECKPOINTS_DIR}/ltx-2-19b-tiny.safetensors",
    tc.LTX23: f"{CHECKPOINTS_DIR}/ltx-2.3-22b-tiny.safetensors",
    "upsampler_x2": f"{UPSCALERS_DIR}/ltx-2-spatial-upscaler-x2-tiny.safetensors",
    "upsampler_x1_5": f"{UPSCALERS_DIR}/ltx-2.3-spatial-upscaler-x1.5-tiny.safetensors",
    "lora": f"{LORAS_DIR}/ltx-2-tiny-lora.safetensors",
    "ic_lora": f"{LORAS_DIR}/ltx-2-tiny-ic-lora.safetensors",
}
# Vocoder gains: residual branches (second conv of each ResBlock1 / AMPBlock1 step) are scaled down as in
# trained nets, else 18 stacked residual updates per level blow the signal up; the output convs are kept small
# so the waveform stays well inside the final tanh / clamp (the BWE generator sees log-mel inputs ~ -11..0).
VOCODER_RESIDUAL_GAIN = 0.3
FINAL_CONV_GAINS = {"hifigan": 0.5, "bigvgan": 0.1, "bwe": 0.02}


@dataclass(frozen=True)
class TinySet:
    """Paths of one tiny model set (ComfyUI model-folder layout under ``root``) and the configs used."""

    root: Path
    seed: int
    ltx2: Path
    ltx23: Path
    upsampler_x2: Path
    upsampler_x1_5: Path
    lora: Path
    ic_lora: Path
    configs: dict[str, dict[str, Any]] = field(hash=False, compare=False)
    upsampler_configs: dict[str, dict[str, Any]] = field(hash=False, compare=False)

    def checkpoint(self, generation: str) -> Path:
        return {tc.LTX2: self.ltx2, tc.LTX23: self.ltx23}[generation]


# --------------------------------------------------------------------------------------------------------
# Components: reference configurator + how its state-dict keys are named in the single file.
# --------------------------------------------------------------------------------------------------------


def prefix_map(default: str, stats: str | None = None, **sub: str) -> Callable[[str], str]:
    """module key -> file key: ``stats`` prefixes the VAE statistics, ``sub`` maps module prefixes, else ``default``."""
    def to_file_key(key: str) -> str:
        if stats is not None and key.startswith("per_channel_statistics."):
            return stats + key
        for module_prefix, file_prefix in sub.items():
            if key.startswith(module_prefix + "."):
                return file_prefix + key[len(module_prefix) + 1 :]
        return default + key

    return to_file_key


def checkpoint_components() -> dict[str, tuple[type, Callable[[str], str]]]:
    """name -> (ltx-core configurator, module key -> checkpoint key). Mirrors ``ModelLedger``'s builders."""
    from ltx_core.model.audio_vae import (
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.transformer import LTXModelConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator
    from ltx_core.text_encoders.gemma import EmbeddingsProcessorConfigurator

    dit = "model.diffusion_model."
    return {
        "transformer": (LTXModelConfigurator, prefix_map(dit)),
        "embeddings_processor": (
            EmbeddingsProcessorConfigurator,
            prefix_map(
                "",
                feature_extractor="text_embedding_projection.",
                video_connector=dit + "video_embeddings_connector.",
                audio_connector=dit + "audio_embeddings_connector.",
            ),
        ),
        "video_encoder": (VideoEncoderConfigurator, prefix_map("vae.encoder.", "vae.")),
        "video_decoder": (VideoDecoderConfigurator, prefix_map("vae.decoder.", "vae.")),
        "audio_encoder": (AudioEncoderConfigurator, prefix_map("audio_vae.encoder.", "audio_vae.")),
        "audio_decoder": (AudioDecoderConfigurator, prefix_map("audio_vae.decoder.", "audio_vae.")),
        "vocoder": (VocoderConfigurator, prefix_map("vocoder.")),
    }


def build_reference_module(configurator: type, config: dict[str, Any]) -> torch.nn.Module:
    """Construct ``configurator.from_config(config)`` on CPU with its computed buffers (filters, kernels).

    Parts the configurator creates on the meta device (LTX-2's caption projections) get empty CPU storage.
    The global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]), tc.tiny_gemma_feature_config():
        torch.manual_seed(0)
        module = configurator.from_config(config)
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and param.is_meta:
                sub._parameters[name] = torch.nn.Parameter(torch.empty(param.shape, dtype=param.dtype))
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta:
                raise RuntimeError(f"{type(sub).__name__}.{name} is a meta buffer; cannot materialise it")
    return module.eval()


# --------------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------------


def generator(seed: int, key: str) -> torch.Generator:
    """A generator derived from ``(seed, key)``: the same key always draws the same values."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def normal(shape: torch.Size, std: float, gen: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean


_CONVS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d)
_NORMS = (torch.nn.RMSNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)


def _fan_in(module: torch.nn.Module, weight: torch.Tensor) -> float:
    if isinstance(module, torch.nn.ConvTranspose1d):  # (in, out, k): each output sees in * k / stride taps
        return weight.shape[0] * weight.shape[2] / module.stride[0]
    return float(weight[0].numel())


# Other parameters drawn normal(0, std): LTX-2.5's keyframe offset and duration-head tags / queries / q-k-v bias.
_NORMAL_STDS = {"keyframes_abs_pos_embedding": 0.02, "query_tokens": 0.1, "in_proj_bias": 0.02}


def _raw_parameter_value(name: str, param: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Parameters that are not the weight/bias of a Linear/Conv/Norm layer."""
    if name == "learnable_registers":  # the reference draws them uniform in [-1, 1)
        return torch.rand(param.shape, generator=gen) * 2.0 - 1.0
    if name == "timestep_scale_multiplier":  # a learned scalar (1000 at construction); keep it off 1000
        return torch.rand(param.shape, generator=gen) * 80.0 + 1010.0  # bf16 steps by 8 here
    if name == "in_proj_weight":  # the duration head's nn.MultiheadAttention-layout q/k/v
        return normal(param.shape, 1.0 / math.sqrt(param.shape[1]), gen)
    if "scale_shift_table" in name or name in ("alpha", "beta") or name.endswith("_modality_emb"):
        # AdaLN tables (gates included) and log-scale Snake/SnakeBeta parameters (exp(N(0, .1)) ~ 1).
        return normal(param.shape, 0.1, gen)
    if name in _NORMAL_STDS:
        return normal(param.shape, _NORMAL_STDS[name], gen)
    raise ValueError(f"no initialisation rule for parameter {name!r} {tuple(param.shape)}")


def _parameter_value(module: torch.nn.Module, name: str, param: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if isinstance(module, _CONVS):
        if name == "weight":
            return normal(param.shape, 1.0 / math.sqrt(_fan_in(module, param)), gen)
        return normal(param.shape, 0.02, gen)
    if isinstance(module, _NORMS):
        return normal(param.shape, 0.1, gen, mean=1.0) if name == "weight" else normal(param.shape, 0.02, gen)
    return _raw_parameter_value(name, param, gen)


def _stft_bases(n_fft: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DFT x periodic-Hann bases of the causal STFT (real rows then imaginary rows) and their inverse.

    The inverse is pinv(n_fft / hop * basis).T in closed form (the rows are orthogonal), so no LAPACK call can
    make it depend on the thread count.
    """
    n_freqs = n_fft // 2 + 1
    k = np.arange(n_freqs, dtype=np.float64)[:, None]
    n = np.arange(n_fft, dtype=np.float64)[None, :]
    angle = 2.0 * np.pi * k * n / n_fft
    basis = np.concatenate([np.cos(angle), -np.sin(angle)])
    row_norm = (basis**2).sum(axis=1)
    inverse = np.divide(basis, row_norm[:, None], out=np.zeros_like(basis), where=row_norm[:, None] > 1e-9)
    inverse /= n_fft / hop
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft, dtype=np.float64) / n_fft)
    forward_basis, inverse_basis = (torch.from_numpy(m * window).float()[:, None, :] for m in (basis, inverse))
    return forward_basis, inverse_basis


def _mel_basis(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    import torchaudio

    fbanks = torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=0.0,
        f_max=sample_rate / 2.0,
        n_mels=n_mels,
        sample_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return fbanks.T.contiguous().float()


def _set_computed_buffers(module: torch.nn.Module, config: dict[str, Any]) -> None:
    """Fill the STFT / mel buffers that ltx-core leaves at zero for the checkpoint to provide."""
    from ltx_core.model.audio_vae.vocoder import MelSTFT

    bwe = config.get("vocoder", {}).get("bwe")
    for sub in module.modules():
        if isinstance(sub, MelSTFT):
            forward, inverse = _stft_bases(bwe["n_fft"], bwe["hop_length"])
            sub.stft_fn.forward_basis.copy_(forward)
            sub.stft_fn.inverse_basis.copy_(inverse)
            sub.mel_basis.copy_(_mel_basis(bwe["num_mels"], bwe["n_fft"], bwe["input_sampling_rate"]))


def _scale_vocoders(module: torch.nn.Module) -> None:
    from ltx_core.model.audio_vae.resnet import ResBlock1
    from ltx_core.model.audio_vae.vocoder import AMPBlock1, Vocoder

    for sub in module.modules():
        if isinstance(sub, ResBlock1 | AMPBlock1):
            for conv in sub.convs2:
                conv.weight.mul_(VOCODER_RESIDUAL_GAIN)
        if isinstance(sub, Vocoder):  # a BWE generator is the Vocoder without final activation
            kind = ("bigvgan" if sub.is_amp else "hifigan") if sub.apply_final_activation else "bwe"
            sub.conv_post.weight.mul_(FINAL_CONV_GAINS[kind])


def _init_statistics(name: str, buf: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    if name == "std-of-means":
        return torch.rand(buf.shape, generator=gen) + 0.5
    if name == "mean-of-means":
        return normal(buf.shape, 0.2, gen)
    return None  # computed by the reference at construction (sinc / binomial filters) or above (STFT, mel)


@torch.no_grad()
def init_parameters(module: torch.nn.Module, seed: int, to_file_key: Callable[[str], str]) -> torch.nn.Module:
    """Every parameter non-trivially (normal(0, 1/fan_in) weights, small biases, 1 + N(0, 0.1) norms, nonzero AdaLN
    tables and Snake parameters) and the VAE statistics, each from a generator keyed by its checkpoint key. Shared
    by the reference-built test sets and the demo set built from AIPROD's own modules."""
    for mod_name, sub in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, param in sub.named_parameters(recurse=False):
            key = to_file_key(prefix + name)
            param.copy_(_parameter_value(sub, name, param, generator(seed, key)))
        for name, buf in sub.named_buffers(recurse=False):
            value = _init_statistics(name, buf, generator(seed, to_file_key(prefix + name)))
            if value is not None:
                buf.copy_(value)
    return module


@torch.no_grad()
def init_module(
    module: torch.nn.Module, seed: int, to_file_key: Callable[[str], str], config: dict[str, Any]
) -> torch.nn.Module:
    """A reference module: `init_parameters`, vocoder gains, and the STFT / mel buffers ltx-core leaves at zero."""
    init_parameters(module, seed, to_file_key)
    _scale_vocoders(module)
    _set_computed_buffers(module, config)
    return module


# --------------------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------------------


def collect(out: dict[str, torch.Tensor], module: torch.nn.Module, to_file_key: Callable[[str], str]) -> None:
    """Add ``module``'s state (bf16) under its file keys; a key written twice must hold the same values."""
    for key, tensor in module.state_dict().items():
        file_key = to_file_key(key)
        value = tensor.detach().to(torch.bfloat16).contiguous()
        if file_key in out and not torch.equal(out[file_key], value):
            raise RuntimeError(f"{file_key} is written twice with different values")
        out[file_key] = value


def checkpoint_state_dict(generation: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the tiny single-file checkpoint of ``generation``, keyed as in the file (bf16)."""
    config = tc.checkpoint_config(generation)
    tensors: dict[str, torch.Tensor] = {}
    for configurator, to_file_key in checkpoint_components().values():
        module = build_reference_module(configurator, config)
        collect(tensors, init_module(module, seed, to_file_key, config), to_file_key)
    return tensors


def checkpoint_metadata(generation: str) -> dict[str, str]:
    return {
        "config": json.dumps(tc.checkpoint_config(generation), sort_keys=True),
        "model_version": tc.MODEL_VERSIONS[generation],
    }


def upsampler_state_dict(scale: float, seed: int = 0) -> dict[str, torch.Tensor]:
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    config = tc.upsampler_config(scale)
    module = build_reference_module(LatentUpsamplerConfigurator, config)
    tag = f"upsampler_x{scale}:"
    tensors: dict[str, torch.Tensor] = {}
    collect(tensors, init_module(module, seed, lambda k: tag + k, config), lambda k: k)
    return tensors


def lora_targets() -> dict[str, tuple[int, int]]:
    """Transformer module path -> (out_features, in_features) of every LoRA target (same in both gens)."""
    from ltx_core.model.transformer import LTXModelConfigurator

    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(tc.checkpoint_config(tc.LTX2))
    targets = {}
    for block in range(tc.NUM_LAYERS):
        for attention in tc.LORA_ATTENTIONS:
            for projection in tc.LORA_PROJECTIONS:
                path = f"transformer_blocks.{block}.{attention}.{projection}"
                weight = model.get_submodule(path).weight
                targets[path] = (weight.shape[0], weight.shape[1])
    return targets


def lora_tensors(targets: dict[str, tuple[int, int]], seed: int, kind: str, up_std: float, rank: int = tc.LORA_RANK
                 ) -> dict[str, torch.Tensor]:
    """ComfyUI-format LoRA over ``targets`` (module path -> (out, in)): ``diffusion_model.<path>.lora_A.weight``
    (rank x in, normal(0, 1/in)) and ``lora_B`` (out x rank, normal(0, up_std)), bf16."""
    tensors = {}
    for path, (out_features, in_features) in targets.items():
        key = f"diffusion_model.{path}"
        down = normal((rank, in_features), in_features**-0.5, generator(seed, f"{kind}:{key}.A"))
        up = normal((out_features, rank), up_std, generator(seed, f"{kind}:{key}.B"))
        tensors[f"{key}.lora_A.weight"] = down.to(torch.bfloat16)
        tensors[f"{key}.lora_B.weight"] = up.to(torch.bfloat16)
    return tensors


def lora_state_dict(seed: int = 0, kind: str = "lora") -> dict[str, torch.Tensor]:
    """The test sets' LoRAs: every attention projection of the tiny transformer."""
    return lora_tensors(lora_targets(), seed, kind, 0.15)


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------

_DTYPES = {torch.bfloat16: ("BF16", "<i2", torch.int16), torch.float32: ("F32", "<f4", torch.float32)}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise deterministically: metadata and tensors in sorted order, 8-byte aligned header."""
    header: dict[str, Any] = {"__metadata__": dict(sorted((metadata or {}).items()))}
    chunks, offset = [], 0
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        tag, numpy_dtype, view_dtype = _DTYPES[tensor.dtype]
        data = tensor.view(view_dtype).numpy().astype(numpy_dtype, copy=False).tobytes()
        header[key] = {"dtype": tag, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _artifacts(seed: int) -> dict[str, Callable[[], bytes]]:
    def checkpoint(gen: str) -> Callable[[], bytes]:
        return lambda: safetensors_bytes(checkpoint_state_dict(gen, seed), checkpoint_metadata(gen))

    def upsampler(scale: float) -> Callable[[], bytes]:
        return lambda: safetensors_bytes(
            upsampler_state_dict(scale, seed), {"config": json.dumps(tc.upsampler_config(scale), sort_keys=True)}
        )

    return {
        tc.LTX2: checkpoint(tc.LTX2),
        tc.LTX23: checkpoint(tc.LTX23),
        "upsampler_x2": upsampler(2.0),
        "upsampler_x1_5": upsampler(1.5),
        "lora": lambda: safetensors_bytes(lora_state_dict(seed, "lora")),
        "ic_lora": lambda: safetensors_bytes(
            lora_state_dict(seed, "ic_lora"),
            {"reference_downscale_factor": tc.IC_LORA_REFERENCE_DOWNSCALE_FACTOR},
        ),
    }


def write_tiny_set(root: Path, seed: int = 0, overwrite: bool = False) -> TinySet:
    """Write the tiny set under ``root`` (ComfyUI folders); existing files are kept unless ``overwrite``."""
    root = Path(root)
    paths = {name: root / rel for name, rel in FILE_NAMES.items()}
    for name, make in _artifacts(seed).items():
        if overwrite or not paths[name].is_file():
            write_atomic(paths[name], make())
            logger.info("wrote %s (%.1f MB)", paths[name], paths[name].stat().st_size / 1e6)
    return TinySet(
        root=root,
        seed=seed,
        ltx2=paths[tc.LTX2],
        ltx23=paths[tc.LTX23],
        upsampler_x2=paths["upsampler_x2"],
        upsampler_x1_5=paths["upsampler_x1_5"],
        lora=paths["lora"],
        ic_lora=paths["ic_lora"],
        configs={gen: tc.checkpoint_config(gen) for gen in tc.GENERATIONS},
        upsampler_configs={"x2": tc.upsampler_config(2.0), "x1_5": tc.upsampler_config(1.5)},
    )


def fingerprint() -> str:
    """Changes whenever the factory, torch or the reference changes, so stale caches are never reused."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(tc.__file__)):
        digest.update(source.read_bytes())
    for dist in ("torch", "ltx-core"):
        digest.update(importlib.metadata.version(dist).encode())
    return digest.hexdigest()[:12]


def build_tiny_set(cache_dir: Path, seed: int = 0) -> TinySet:
    """The cached tiny set for ``seed``: built once under ``cache_dir/seed<seed>-<fingerprint>``.

    Sets of the same seed left by older factory / torch / reference versions are removed.
    """
    cache_dir = Path(cache_dir)
    current = cache_dir / f"seed{seed}-{fingerprint()}"
    for stale in cache_dir.glob(f"seed{seed}-*"):
        if stale != current and stale.is_dir():
            logger.info("removing stale tiny set %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    return write_tiny_set(current, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.tiny_checkpoints", description=__doc__)
    parser.add_argument("outdir", type=Path, help="model root: checkpoints/, latent_upscale_models/, loras/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="rewrite files that already exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tiny = write_tiny_set(args.outdir, args.seed, overwrite=args.overwrite)
    for name in FILE_NAMES:
        logger.info("%-15s %s", name, getattr(tiny, name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
