"""Files of other architectures that users pick by mistake, told apart from LTX-2 files by their header alone.

A tiny preview VAE (taeltx), a diffusers-folder file, an image model or a text encoder of another family lands in
our loaders because it sits in the same ComfyUI folder. Without this table such a file read as "broken" (no
`config` metadata) or as an LTX-2 part with missing keys; with it every loader, the inspector and the LoRA
nodes name what the file is and what to use instead.

- `FOREIGN_FAMILIES`: named data. A family is recognised when each of its key patterns matches some tensor key
  (``re.search``); patterns accept the ``.`` and kohya ``_`` spellings so that LoRAs of the family are found too.
  Every pattern is chosen so that no LTX-2 / LTX-2.3 / LTX-2.5 file, LoRA or Gemma file matches it
  (`tests/loaders/test_foreign_files.py` runs the table over every layout the tests build).
- `diffusers_folder`: a ``diffusion_pytorch_model*.safetensors`` with diffusers' ``config.json`` beside it.
- LTX-Video 0.9 (the previous, video-only generation) shares LTX-2's key names; its `config` names its class.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointFormatError
from .safetensors_header import SafetensorsHeader, parse_json

__all__ = ["FOREIGN_FAMILIES", "ForeignFamily", "diffusers_folder", "foreign_family", "foreign_lora_family",
           "identify_foreign"]

VIDEO_VAE_INSTEAD = ("AIPROD decodes with the full LTX-2 video VAE: choose a single-file checkpoint "
                     "(ltx-2.3-22b-dev.safetensors, models/checkpoints) or a video VAE file (LTX23_video_vae_bf16, "
                     "ltx-2.5-video-vae-bf16; models/vae) in AIPROD Video VAE Loader.")
LTX_INSTEAD = ("AIPROD runs the LTX-2 family (LTX-2 19B, LTX-2.3 22B, LTX-2.5 22B): use their Lightricks or "
               "ComfyUI files (e.g. ltx-2.3-22b-dev.safetensors in models/checkpoints).")
TEXT_ENCODER_INSTEAD = ("The LTX-2 text encoder is Gemma (Gemma-3 12B for LTX-2 / LTX-2.3, Gemma-4 12B for LTX-2.5): "
                        "choose gemma_3_12B_it*.safetensors or gemma4-12b-with-proj-ltx-2.5 in AIPROD Text Encoder "
                        "Loader (models/text_encoders).")
CONFIG_JSON_MAX_BYTES = 1 << 20  # a diffusers config.json is a few KiB


@dataclass(frozen=True)
class ForeignFamily:
    """A model family that is not LTX-2: how its tensor keys look and what a user should pick instead."""

    name: str  # as messages say it: "a <name> file" / "a <name> LoRA"
    patterns: tuple[str, ...]  # each must match some key (re.search)
    instead: str
    lora_too: bool = True  # whether a LoRA's keys of this family carry the same names


FOREIGN_FAMILIES: tuple[ForeignFamily, ...] = (
    ForeignFamily("TAEHV tiny preview VAE (taeltx_2 / taeltx2_3)", (r"^(taehv_)?(encoder|decoder)\.\d+\.",),
                  VIDEO_VAE_INSTEAD + " ComfyUI uses taeltx files for latent previews only.", lora_too=False),
    ForeignFamily("diffusers-layout LTX-2 transformer",
                  (r"^(model\.diffusion_model\.|transformer\.)?proj_in\.weight$",
                   r"^(model\.diffusion_model\.|transformer\.)?time_embed\.emb\."),
                  "AIPROD loads the Lightricks / ComfyUI layout: the single-file checkpoint "
                  "(models/checkpoints) or a *_transformer_only file (models/diffusion_models).", lora_too=False),
    ForeignFamily("diffusers-layout VAE", (r"^(vae\.)?(latents_mean$|(encoder|decoder)\.\w+\.\d+\.resnets\.\d+\.)",),
                  VIDEO_VAE_INSTEAD, lora_too=False),
    ForeignFamily("Flux / HunyuanVideo", (r"(^|[._])double_blocks[._]\d+",), LTX_INSTEAD),
    ForeignFamily("Flux", (r"(^|[._])single(_transformer)?_blocks[._]\d+",), LTX_INSTEAD),
    ForeignFamily("SD3", (r"(^|[._])joint_blocks[._]\d+",), LTX_INSTEAD),
    ForeignFamily("SD 1.x / SDXL UNet", (r"(^|[._])input_blocks[._]\d+",), LTX_INSTEAD),
    ForeignFamily("SD UNet (diffusers)", (r"(^|[._])(down|up)_blocks[._]\d+[._]attentions[._]",), LTX_INSTEAD),
    ForeignFamily("Wan", (r"(^|\.|lora_unet_)blocks[._]\d+[._](self|cross)_attn[._]",), LTX_INSTEAD),
    ForeignFamily("CLIP text encoder", (r"(^|[._])text_model[._]encoder[._]",), TEXT_ENCODER_INSTEAD),
    ForeignFamily("T5 text encoder", (r"(^|\.)encoder\.block\.\d+\.layer\.\d+\.",), TEXT_ENCODER_INSTEAD,
                  lora_too=False),
)
LTXV_09 = ForeignFamily("LTX-Video 0.9 (the previous, video-only LTX generation)", (), LTX_INSTEAD, lora_too=False)
LTXV_09_CLASS = "Transformer3DModel"  # LTX-Video 0.9's transformer class in its `config` (LTX-2: AVTransformer3DModel)


@functools.cache
def _compiled(family: ForeignFamily) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in family.patterns)


def foreign_family(keys: Iterable[str], *, lora: bool = False) -> ForeignFamily | None:
    """The first family of `FOREIGN_FAMILIES` whose every pattern matches one of ``keys`` (None: none does);
    ``lora=True`` considers only the families whose LoRAs share their names."""
    keys = list(keys)
    for family in FOREIGN_FAMILIES:
        if lora and not family.lora_too:
            continue
        if all(any(pattern.search(key) for key in keys) for pattern in _compiled(family)):
            return family
    return None


def foreign_lora_family(keys: Iterable[str]) -> ForeignFamily | None:
    """`foreign_family` for a LoRA's keys."""
    return foreign_family(keys, lora=True)


def _config_class(header: SafetensorsHeader) -> str | None:
    """The transformer's ``_class_name`` in the file's `config` metadata; "" when the config has none; None when
    the file has no `config` object at all."""
    raw = header.metadata.get("config")
    if raw is None:
        return None
    try:
        config = parse_json(header.path, raw, "a `config` metadata entry")
    except CheckpointFormatError:
        return None
    if not isinstance(config, dict):
        return None
    section = config.get("transformer")
    return str(section.get("_class_name", "")) if isinstance(section, dict) else ""


def diffusers_folder(path: str) -> str | None:
    """``"<class> (diffusers <version>)"`` when ``path`` is a weights file of a diffusers folder (a
    ``diffusion_pytorch_model*.safetensors`` / ``model*.safetensors`` with a diffusers ``config.json`` beside
    it), else None. Reads at most `CONFIG_JSON_MAX_BYTES` of the JSON, never executes anything."""
    weights = Path(path)
    config = weights.with_name("config.json")
    if not weights.name.startswith(("diffusion_pytorch_model", "model")) or not config.is_file():
        return None
    try:
        with config.open("rb") as handle:
            raw = handle.read(CONFIG_JSON_MAX_BYTES + 1)
        data = parse_json(str(config), raw.decode("utf-8", "replace"), "a diffusers config.json")
    except (OSError, CheckpointFormatError):
        return None
    if len(raw) > CONFIG_JSON_MAX_BYTES or not isinstance(data, dict) or "_diffusers_version" not in data:
        return None
    return f"{data.get('_class_name', 'a model')} (diffusers {data['_diffusers_version']})"


def identify_foreign(header: SafetensorsHeader) -> ForeignFamily | None:
    """What ``header``'s file is when it is not an LTX-2 file: LTX-Video 0.9, a diffusers-folder file or a family
    of the table (None for everything else, LTX-2 files of every generation included). A file with a `config`
    object is an LTX file (another family's files carry none), so only its transformer class is looked at."""
    config_class = _config_class(header)
    if config_class is not None:
        return LTXV_09 if config_class == LTXV_09_CLASS else None
    folder = diffusers_folder(header.path)
    if folder is not None:
        return ForeignFamily(f"diffusers-folder file: {folder}", (), "AIPROD loads the Lightricks / ComfyUI "
                             "single files, not diffusers folders. " + LTX_INSTEAD, lora_too=False)
    return foreign_family(header.tensors)
