"""A tiny, complete LTX-2.3 model set in the official file formats, built from AIPROD's own modules.

``make demo`` and the end-to-end tests run the real node graph on it. Everything is built by ``aiprod_core``
(no reference import), initialised with seeded honest random weights (normal(0, 1/fan_in) for linear and conv
weights, small nonzero biases, 1 + N(0, 0.1) for norm weights, nonzero AdaLN tables, registers and Snake
parameters; computed buffers such as anti-aliasing filters and the STFT / mel bases kept as constructed),
stored in bf16 under the official prefixes, and laid out in ComfyUI's model folders under ``root``:

- ``checkpoints/aiprod-demo-ltx-2.3-tiny.safetensors``: transformer + connectors, video VAE, audio VAE,
  vocoder (BigVGAN + BWE), text projection; metadata ``config`` and ``model_version`` "2.3.0";
- ``text_encoders/aiprod-demo-gemma-3-tiny/``: a Hugging Face folder with a 2-layer, width-64 Gemma-3 text
  backbone (``language_model.model.*``, the gemma-3-12b-it layout) and a byte-level tokenizer with Gemma's
  special tokens and chat template (no vision tower: nothing in AIPROD's text path reads it);
- ``latent_upscale_models/aiprod-demo-upscaler-x2-tiny.safetensors``;
- ``loras/aiprod-demo-distilled-lora-tiny.safetensors`` and ``loras/aiprod-demo-ic-lora-tiny.safetensors``
  (ComfyUI LoRA format; the IC-LoRA carries ``reference_downscale_factor`` "2").

Per-tensor generators are derived from ``(seed, file key)``, so a seed gives byte-identical files. Files are
written atomically and only when their content changes; a manifest lets a second call skip the build.

CLI: ``python scripts/demo_models.py ROOT [--seed N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "tests") not in sys.path:  # the tiny builders are shared with the test fixtures (tests/support)
    sys.path.insert(0, str(REPO_ROOT / "tests"))
from support import tiny_checkpoints as tiny  # noqa: E402  (after the path that makes it importable)
from support import tiny_configs as tc  # noqa: E402

__all__ = ["DEMO_FILES", "OFFICIAL_FILES", "DemoModels", "demo_checkpoint_config", "register_pack", "write_demo_models"]

logger = logging.getLogger("aiprod.demo_models")

PACK_NAME = "aiprod"
FORMAT_VERSION = "2"  # bump to force a rebuild of every cached set
MANIFEST = ".aiprod-demo-manifest.json"

# ComfyUI folder / file names: the example workflows name these files.
DEMO_FILES = {
    "checkpoint": "checkpoints/aiprod-demo-ltx-2.3-tiny.safetensors",
    "text_encoder_dir": "text_encoders/aiprod-demo-gemma-3-tiny",
    "upsampler": "latent_upscale_models/aiprod-demo-upscaler-x2-tiny.safetensors",
    "distilled_lora": "loras/aiprod-demo-distilled-lora-tiny.safetensors",
    "ic_lora": "loras/aiprod-demo-ic-lora-tiny.safetensors",
}
# The official files the templates name (Lightricks/LTX-2.3 and Google's Gemma-3 folder, as "folder/name") -> the demo
# file standing in for each: `install_map` installs the demo set under these names too, so the templates run as shipped.
OFFICIAL_FILES = {
    "checkpoints/ltx-2.3-22b-dev.safetensors": "checkpoint",
    "checkpoints/ltx-2.3-22b-distilled.safetensors": "checkpoint",
    "text_encoders/gemma-3-12b-it-qat-q4_0-unquantized": "text_encoder_dir",
    "latent_upscale_models/ltx-2.3-spatial-upscaler-x2-1.1.safetensors": "upsampler",
    "loras/ltx-2.3-22b-distilled-lora-384.safetensors": "distilled_lora",
    "loras/ltx-2.3-22b-ic-lora-union-control-ref0.5.safetensors": "ic_lora",
}
GEMMA_WEIGHTS = "model.safetensors"
MODEL_VERSION = "2.3.0"
IC_LORA_REFERENCE_DOWNSCALE_FACTOR = "2"

# ---- tiny sizes: tests/support/tiny_configs.py's LTX-2.3 set, with enough transformer blocks for the STG blocks
# the templates name (LTX-2.3: 28, LTX-2: 29), so the templates run on the demo set as shipped ----
GEMMA_HIDDEN, GEMMA_LAYERS = tc.TINY_GEMMA_HIDDEN_SIZE, tc.TINY_GEMMA_NUM_LAYERS  # projection input 64 x (2 + 1)
NUM_LAYERS = 30
LORA_UP_STD = {"distilled": 0.05, "ic": 0.05}  # delta ~ 10 % of a weight: stage 2 visibly differs, stays sane
LORA_FEED_FORWARDS = ("ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2")
# Vocoder gains: residual branches scaled down as in trained nets, output convs small so the waveform stays
# well inside [-1, 1] (no clipping); the BWE residual is added to the upsampled 16 kHz signal.
VOCODER_RESIDUAL_GAIN = 0.3
FINAL_CONV_GAINS = {"vocoder": 0.1, "bwe_generator": 0.02}

_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                   "<start_of_image>", "<end_of_image>", "<image_soft_token>")  # ids 0..9 (Gemma: pad 0 eos 1 bos 2)
GEMMA_VOCAB_SIZE = 272  # 10 specials + 256 byte symbols, rounded up to a multiple of 16
# Gemma-3's chat format (system prompt folded into the first user turn, "assistant" spoken as "model").
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first = messages[0]['content'] -%}"
    "{%- set sys = first if first is string else first[0]['text'] -%}"
    "{%- set prefix = sys + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') }}"
    "{%- if m['content'] is string -%}{{ m['content'] | trim }}{%- else -%}{%- for item in m['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class DemoModels:
    """Paths of one demo model set (ComfyUI model-folder layout under ``root``)."""

    root: Path
    checkpoint: Path
    text_encoder_dir: Path
    upsampler: Path
    distilled_lora: Path
    ic_lora: Path

    @property
    def text_encoder_weights(self) -> Path:
        return self.text_encoder_dir / GEMMA_WEIGHTS

    def combos(self) -> dict[str, str]:
        """The combo value of each file in a loader that reads one model folder (the name ComfyUI lists).
        ``text_encoder`` is the Gemma folder as the text encoder loader lists it; ``text_encoder_weights`` is its
        weight file as ComfyUI lists files."""
        values = {name: rel.partition("/")[2] for name, rel in DEMO_FILES.items()}
        values["text_encoder"] = values["text_encoder_dir"]
        values["text_encoder_weights"] = f"{values['text_encoder_dir']}/{GEMMA_WEIGHTS}"
        return values

    def combo(self, name: str) -> str:
        return self.combos()[name]

    def install_map(self) -> dict[str, Path]:
        """``{"folder/name": path}`` for `support.comfy_host.install_model_files` (the Gemma folder as a whole):
        the demo files under their own names and under the official names the templates use."""
        files = {rel: self.root / rel for rel in DEMO_FILES.values()}
        return files | {official: self.root / DEMO_FILES[name] for official, name in OFFICIAL_FILES.items()}


def register_pack(name: str = PACK_NAME) -> None:
    """Make the repository importable as package ``name`` without running its ComfyUI ``__init__``."""
    if name in sys.modules:
        return
    package = types.ModuleType(name)
    package.__path__ = [str(REPO_ROOT)]
    package.__file__ = str(REPO_ROOT / "__init__.py")
    sys.modules[name] = package


# --------------------------------------------------------------------------------------------------------
# Configs (the checkpoint's ``config`` metadata sections and the upsampler's flat config)
# --------------------------------------------------------------------------------------------------------


def demo_checkpoint_config() -> dict[str, Any]:
    """The ``config`` metadata of the demo checkpoint (sections transformer, vae, audio_vae, vocoder)."""
    config = tc.checkpoint_config(tc.LTX23)
    config["transformer"]["num_layers"] = NUM_LAYERS
    return config


def demo_upsampler_config() -> dict[str, Any]:
    return tc.upsampler_config(2.0)


def gemma_config_json() -> dict[str, Any]:
    """``config.json`` of the tiny Gemma-3 (Gemma3ForConditionalGeneration layout, as gemma-3-12b-it)."""
    text = {
        "model_type": "gemma3_text", "vocab_size": GEMMA_VOCAB_SIZE, "hidden_size": GEMMA_HIDDEN,
        "intermediate_size": 128, "num_hidden_layers": GEMMA_LAYERS, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 512,
        "sliding_window_pattern": 2, "rope_theta": 1_000_000, "rope_local_base_freq": 10_000,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "max_position_embeddings": 131072,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16",
    }
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
              "vision_use_head": False}
    return {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text,
        "vision_config": vision, "mm_tokens_per_image": 4, "boi_token_index": 7, "eoi_token_index": 8,
        "image_token_index": 9, "torch_dtype": "bfloat16",
    }


# --------------------------------------------------------------------------------------------------------
# Seeded initialisation (`tiny.init_parameters`, shared with the test sets) and the checkpoint's modules
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _scale_vocoder(vocoder: nn.Module) -> None:
    from aiprod.aiprod_core.audio_vae.vocoder import AMPBlock1, ResBlock1

    for name, sub in vocoder.named_modules():
        if isinstance(sub, AMPBlock1 | ResBlock1):
            for conv in sub.convs2:
                conv.weight.mul_(VOCODER_RESIDUAL_GAIN)
        if name in FINAL_CONV_GAINS:
            sub.conv_post.weight.mul_(FINAL_CONV_GAINS[name])


@contextlib.contextmanager
def _private_rng() -> Iterator[None]:
    """Construction draws default inits from the global RNG (all overwritten); leave the caller's RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _checkpoint_modules(config: dict[str, Any]) -> list[tuple[str, nn.Module, Callable[[str], str]]]:
    """(name, our module built on CPU in float32, module key -> checkpoint key) for each component."""
    from aiprod.aiprod_core.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig, VocoderConfig, build_vocoder
    from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor
    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig
    from aiprod.aiprod_core.video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig

    dit = "model.diffusion_model."
    f32 = {"dtype": torch.float32, "device": "cpu"}
    video_vae, audio_vae = VideoVAEConfig.from_metadata(config), AudioVAEConfig.from_metadata(config)
    with _private_rng():
        return [
            ("transformer", AVTransformer(TransformerConfig.from_metadata(config, with_audio=True), **f32),
             tiny.prefix_map(dit)),
            ("text_embeddings",
             TextEmbeddingsProcessor(TextEmbeddingsConfig.from_metadata(config), GEMMA_HIDDEN, GEMMA_LAYERS, **f32),
             tiny.prefix_map("", feature_extractor="text_embedding_projection.",
                       video_connector=dit + "video_embeddings_connector.",
                       audio_connector=dit + "audio_embeddings_connector.")),
            ("video_encoder", VideoEncoder(video_vae, **f32), tiny.prefix_map("vae.encoder.", "vae.")),
            ("video_decoder", VideoDecoder(video_vae, **f32), tiny.prefix_map("vae.decoder.", "vae.")),
            ("audio_encoder", AudioEncoder(audio_vae, **f32),
             tiny.prefix_map("audio_vae.encoder.", "audio_vae.")),
            ("audio_decoder", AudioDecoder(audio_vae, **f32),
             tiny.prefix_map("audio_vae.decoder.", "audio_vae.")),
            ("vocoder", build_vocoder(VocoderConfig.from_metadata(config), **f32), tiny.prefix_map("vocoder.")),
        ]


def checkpoint_tensors(seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the demo single-file checkpoint, keyed as in the file (bf16)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module, to_file_key in _checkpoint_modules(demo_checkpoint_config()):
        tiny.init_parameters(module, seed, to_file_key)
        if name == "vocoder":
            _scale_vocoder(module)
        tiny.collect(tensors, module, to_file_key)
    return tensors


def upsampler_tensors(seed: int) -> dict[str, torch.Tensor]:
    from aiprod.aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig

    with _private_rng():
        module = LatentUpsampler(LatentUpsamplerConfig.from_metadata(demo_upsampler_config()), dtype=torch.float32)
    tensors: dict[str, torch.Tensor] = {}
    tiny.init_parameters(module, seed, lambda key: "upsampler_x2:" + key)
    tiny.collect(tensors, module, lambda key: key)
    return tensors


@torch.no_grad()
def gemma_tensors(seed: int) -> dict[str, torch.Tensor]:
    """The tiny Gemma-3 text backbone under ``language_model.model.*`` (bf16); Gemma norms are 1 + w."""
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config

    with _private_rng():
        encoder = GemmaTextEncoder(gemma_text_config(gemma_config_json()), dtype=torch.float32, device="cpu")
    tensors = {}
    for key, param in encoder.named_parameters():
        file_key = "language_model." + key
        gen = tiny.generator(seed, "gemma:" + file_key)
        if "norm" in key:
            value = tiny.normal(param.shape, 0.1, gen)
        elif "embed_tokens" in key:  # Gemma's initializer_range; tied LM head: flat logits, varied sampled text
            value = tiny.normal(param.shape, 0.02, gen)
        elif param.ndim == 2:
            value = tiny.normal(param.shape, param.shape[1] ** -0.5, gen)
        else:
            value = tiny.normal(param.shape, 0.02, gen)
        tensors[file_key] = value.to(torch.bfloat16).contiguous()
    return tensors


def lora_tensors(seed: int, kind: str) -> dict[str, torch.Tensor]:
    """ComfyUI-format LoRA: ``diffusion_model.<module>.lora_A.weight`` (rank, in) and ``lora_B`` (out, rank)."""
    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    model = AVTransformer(TransformerConfig.from_metadata(demo_checkpoint_config(), with_audio=True), device="meta")
    paths = [f"transformer_blocks.{block}.{attention}.{projection}" for block in range(NUM_LAYERS)
             for attention in tc.LORA_ATTENTIONS for projection in tc.LORA_PROJECTIONS]
    paths += [f"transformer_blocks.{block}.{ff}" for block in range(NUM_LAYERS) for ff in LORA_FEED_FORWARDS]
    targets = {path: tuple(model.get_submodule(path).weight.shape) for path in paths}
    return tiny.lora_tensors(targets, seed, kind, LORA_UP_STD[kind])


# --------------------------------------------------------------------------------------------------------
# Tokenizer (built locally with `tokenizers`: byte-level, so every prompt round-trips)
# --------------------------------------------------------------------------------------------------------


def tokenizer_files() -> dict[str, bytes]:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json (+ chat template) of the tiny Gemma."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate((*_GEMMA_SPECIALS, *symbols))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bos = _GEMMA_SPECIALS.index("<bos>")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", additional_special_tokens=list(_GEMMA_SPECIALS[5:]), padding_side="left",
        model_max_length=131072, chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    # transformers 5 ignores `additional_special_tokens` in the constructor: register the turn markers as special
    # tokens explicitly (already in the vocabulary, so no new ids), the same on 4.5x and 5.x
    tokenizer.add_tokens(list(_GEMMA_SPECIALS[5:]), special_tokens=True)
    with tempfile.TemporaryDirectory(prefix="aiprod-demo-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
    config = json.loads(files["tokenizer_config.json"])
    config.update(add_bos_token=True, add_eos_token=False, padding_side="left")
    files["tokenizer_config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return files


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------

def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _artifacts(seed: int) -> dict[str, Callable[[], dict[str, bytes]]]:
    """Relative path (file or folder) -> builder of its files' bytes (relative to that path's parent)."""
    ckpt, te, ups, dlora, ic = (DEMO_FILES[k] for k in
                                ("checkpoint", "text_encoder_dir", "upsampler", "distilled_lora", "ic_lora"))
    checkpoint_meta = {"config": json.dumps(demo_checkpoint_config(), sort_keys=True), "model_version": MODEL_VERSION}

    def gemma_folder() -> dict[str, bytes]:
        files = {f"{te}/{name}": data for name, data in tokenizer_files().items()}
        files[f"{te}/config.json"] = _json_bytes(gemma_config_json())
        files[f"{te}/{GEMMA_WEIGHTS}"] = tiny.safetensors_bytes(gemma_tensors(seed), {"format": "pt"})
        return files

    return {
        ckpt: lambda: {ckpt: tiny.safetensors_bytes(checkpoint_tensors(seed), checkpoint_meta)},
        te: gemma_folder,
        ups: lambda: {ups: tiny.safetensors_bytes(upsampler_tensors(seed),
                                             {"config": json.dumps(demo_upsampler_config(), sort_keys=True)})},
        dlora: lambda: {dlora: tiny.safetensors_bytes(lora_tensors(seed, "distilled"))},
        ic: lambda: {ic: tiny.safetensors_bytes(lora_tensors(seed, "ic"),
                                           {"reference_downscale_factor": IC_LORA_REFERENCE_DOWNSCALE_FACTOR})},
    }


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_fingerprint(seed: int) -> str:
    """Changes whenever anything that shapes the bytes changes: seed, this file, aiprod_core, library versions."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}:{seed}".encode())
    sources = [Path(__file__), Path(tiny.__file__), Path(tc.__file__),
               *sorted((REPO_ROOT / "aiprod_core").rglob("*.py"))]
    for source in sources:
        digest.update(source.relative_to(REPO_ROOT).as_posix().encode() if source.is_relative_to(REPO_ROOT) else b"")
        digest.update(source.read_bytes())
    for dist in ("torch", "transformers", "tokenizers"):
        digest.update(importlib.metadata.version(dist).encode())
    return digest.hexdigest()[:16]


def _manifest_is_current(root: Path, fingerprint: str) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    files = manifest.get("files", {})
    if manifest.get("fingerprint") != fingerprint or not files:
        return False
    return all(_sha256(root / rel) == sha for rel, sha in files.items())


def _demo_models(root: Path) -> DemoModels:
    return DemoModels(root=root, **{name: root / rel for name, rel in DEMO_FILES.items()})


def write_demo_models(root: Path, seed: int = 0) -> DemoModels:
    """Write (or keep) the demo model set under ``root``; deterministic for ``seed``.

    A file is rewritten only when its bytes differ from what is on disk; when the manifest says the set was built
    by the same code, seed and libraries and every file still has its recorded hash, nothing is built at all.
    """
    register_pack()
    root = Path(root).resolve()
    fingerprint = build_fingerprint(seed)
    if _manifest_is_current(root, fingerprint):
        logger.info("demo models in %s are current (fingerprint %s)", root, fingerprint)
        return _demo_models(root)
    hashes: dict[str, str] = {}
    stale = _manifest_files(root)
    for build in _artifacts(seed).values():
        for rel, payload in build().items():
            sha = hashlib.sha256(payload).hexdigest()
            hashes[rel] = sha
            if _sha256(root / rel) == sha:
                continue
            tiny.write_atomic(root / rel, payload)
            logger.info("wrote %s (%.1f MB)", root / rel, len(payload) / 1e6)
    for rel in stale - hashes.keys():  # written by an older build (another library version), not by this one
        (root / rel).unlink(missing_ok=True)
    tiny.write_atomic(root / MANIFEST, _json_bytes({"fingerprint": fingerprint, "seed": seed, "files": hashes}))
    return _demo_models(root)


def _manifest_files(root: Path) -> set[str]:
    try:
        return set(json.loads((root / MANIFEST).read_text()).get("files", {}))
    except (OSError, json.JSONDecodeError, AttributeError):
        return set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/demo_models.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="model root: checkpoints/, text_encoders/, loras/, ...")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    models = write_demo_models(args.root, args.seed)
    for name, value in models.combos().items():
        logger.info("%-17s %s", name, value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
