"""LoRA files: key formats, the patches they hold, and matching them against a transformer or a Gemma.

A LoRA key is ``<module name><suffix>``. The suffixes (`LORA_SUFFIXES`) say what the tensor is: low-rank
``lora_A``/``lora_B`` (``.default``), ``lora_down``/``lora_up``, ``lora.down``/``lora.up``, ``_lora.down``/
``_lora.up``, ``lora_linear_layer.down``/``.up``; ``.alpha``; ``.dora_scale``; ``.diff`` / ``.diff_b`` (also
``.w_norm`` / ``.b_norm``); ``.set_weight``; LoKr ``lokr_*``; LoHa ``hada_*`` (see `loaders.lora_formats`).
Kinds ComfyUI has but AIPROD does not apply (OFT, BOFT, GLoRA, ...) are named and refused (`LoraFormatError`).

The module name says what the LoRA is for (``<path>`` is a module path, e.g. ``transformer_blocks.0.attn1.to_q``
or ``model.layers.0.self_attn.q_proj``):

- the transformer: ComfyUI ``diffusion_model.<path>``, diffusers / PEFT ``transformer.<path>``, single-file
  ``model.diffusion_model.<path>``, kohya ``lora_unet_<path with dots as underscores>``, or bare ``<path>``;
- the Gemma text encoder: ComfyUI ``text_encoders.gemma3_12b.transformer.model.<path>`` (its LoraSave and
  KJNodes' extractor), PEFT ``base_model.model.model.<path>`` (and the ``language_model`` variants of
  Gemma3ForConditionalGeneration), Hugging Face ``language_model.model.<path>`` / ``model.language_model.<path>``,
  kohya ``lora_te_`` / ``lora_te1_``, or bare ``model.layers.<...>``.

Scale: alpha / rank for every naming style, as ComfyUI applies it (no alpha: 1.0). The reference (ltx-core)
ignores alpha, and the official LTX LoRAs store none, so their numbers are unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .errors import CheckpointFormatError, LoraMismatchError
from .foreign_files import foreign_lora_family
from .key_maps import DIFFUSION_MODEL_PREFIX, LORA_KOHYA_MAP, LORA_SOURCE_MAPS, KeyMap
from .lora_formats import UNSUPPORTED_SUFFIXES, DiffPatch, LoHaPatch, LoKrPatch, LowRankPatch, Patch, SetPatch
from .mapped_file import TORCH_DTYPES, MappedFile
from .safetensors_header import TensorInfo, read_header

__all__ = ["LoraFile", "LoraFormatError", "LoraMatch", "LoraTargets", "check_lora_fits", "match_loras",
           "match_patches", "read_lora", "transformer_targets"]

logger = logging.getLogger(__name__)

TRANSFORMER, TEXT_ENCODER = "transformer", "text_encoder"
TEXT_PROJECTION_PREFIX = "text_embedding_projection."
SHOWN_KEYS = 3
NODES = {TRANSFORMER: "AIPROD LoRA Loader (on the model)",
         TEXT_ENCODER: "AIPROD Text Encoder LoRA Loader (on the text_encoder)"}
WHAT = {TRANSFORMER: "transformer", TEXT_ENCODER: "text-encoder (Gemma)"}

# key suffix -> slot of the module's entry; matched longest first.
LORA_SUFFIXES = {
    **{f".lora_{n}{d}.weight": s for n, s in (("A", "down"), ("B", "up")) for d in ("", ".default")},
    ".lora_down.weight": "down", ".lora_up.weight": "up", ".lora.down.weight": "down", ".lora.up.weight": "up",
    "_lora.down.weight": "down", "_lora.up.weight": "up", ".lora_A": "down", ".lora_B": "up",
    ".lora_linear_layer.down.weight": "down", ".lora_linear_layer.up.weight": "up",
    ".alpha": "alpha", ".dora_scale": "dora_scale", ".diff": "diff", ".diff_b": "diff_b", ".w_norm": "diff",
    ".b_norm": "diff_b", ".set_weight": "set_weight",
    **{f".lokr_{n}": f"lokr_{n}" for n in ("w1", "w2", "w1_a", "w1_b", "w2_a", "w2_b", "t2")},
    **{f".hada_{n}": f"hada_{n}" for n in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")},
}
_SUFFIXES_LONGEST_FIRST = sorted(LORA_SUFFIXES, key=len, reverse=True)
_UNSUPPORTED_LONGEST_FIRST = sorted(UNSUPPORTED_SUFFIXES, key=len, reverse=True)

# ---- text-encoder (Gemma) module names: LoRA prefix -> our Gemma module path (``model.layers.N...``) ----------
GEMMA_LORA_COMFY_MAP = KeyMap("GEMMA_LORA_COMFY_MAP", (("text_encoders.gemma3_12b.transformer.", ""),))
GEMMA_LORA_PEFT_MAP = KeyMap("GEMMA_LORA_PEFT_MAP", (
    ("base_model.model.model.language_model.", "model."), ("base_model.model.language_model.model.", "model."),
    ("base_model.model.language_model.", "model."), ("base_model.model.model.", "model.")))
GEMMA_LORA_HF_MAP = KeyMap("GEMMA_LORA_HF_MAP", (
    ("model.language_model.", "model."), ("language_model.model.", "model."), ("language_model.", "model."),
    ("model.layers.", "model.layers."), ("model.embed_tokens", "model.embed_tokens"), ("model.norm", "model.norm")))
GEMMA_LORA_KOHYA_MAP = KeyMap("GEMMA_LORA_KOHYA_MAP", (("lora_te1_", ""), ("lora_te_", "")))
OTHER_TEXT_ENCODER_LORA_MAP = KeyMap("OTHER_TEXT_ENCODER_LORA_MAP", (("text_encoders.", "text_encoders."),))
TEXT_ENCODER_LORA_MAPS = (GEMMA_LORA_COMFY_MAP, OTHER_TEXT_ENCODER_LORA_MAP, GEMMA_LORA_PEFT_MAP, GEMMA_LORA_HF_MAP,
                          GEMMA_LORA_KOHYA_MAP)
KOHYA_MAPS = (LORA_KOHYA_MAP.name, GEMMA_LORA_KOHYA_MAP.name)
NAMING_LABELS = {
    "LORA_SINGLE_FILE_MAP": "single-file (model.diffusion_model.*)",
    "AIPRODV_LORA_COMFY_RENAMING_MAP": "ComfyUI (diffusion_model.*)",
    "LORA_DIFFUSERS_MAP": "diffusers / PEFT (transformer.*)",
    "LORA_KOHYA_MAP": "kohya (lora_unet_*)",
    "bare": "bare module names",
    "GEMMA_LORA_COMFY_MAP": "ComfyUI text encoder (text_encoders.gemma3_12b.transformer.*)",
    "OTHER_TEXT_ENCODER_LORA_MAP": "ComfyUI text encoder (text_encoders.*)",
    "GEMMA_LORA_PEFT_MAP": "PEFT text encoder (base_model.model.*)",
    "GEMMA_LORA_HF_MAP": "Hugging Face Gemma (model.layers.* / language_model.*)",
    "GEMMA_LORA_KOHYA_MAP": "kohya text encoder (lora_te_*)",
}
class LoraFormatError(LoraMismatchError):
    """A LoRA holding an adapter kind this pack does not apply (OFT, BOFT, GLoRA, ...), named in the message."""


def locate(stem: str) -> tuple[str, str, str]:
    """(family, naming, path) of a LoRA module name: which model it is for, its naming style (a key-map name,
    "bare") and the module path it names (kohya: underscored, resolved against the targets)."""
    for keymap in TEXT_ENCODER_LORA_MAPS:
        path = keymap.to_module_key(stem)
        if path is not None:
            return TEXT_ENCODER, keymap.name, path
    for keymap in LORA_SOURCE_MAPS:
        path = keymap.to_module_key(stem)
        if path is not None:
            return TRANSFORMER, keymap.name, path
    return TRANSFORMER, "bare", stem


@dataclass(frozen=True)
class LoraFile:
    """A parsed LoRA file: its patches, the keys that form none (with why), the adapter keys of kinds this pack
    does not apply (key -> format), its naming formats and metadata."""

    path: str
    patches: tuple[Patch, ...]
    orphans: dict[str, str]
    formats: tuple[str, ...]
    metadata: dict[str, str]
    unsupported: dict[str, str] = field(default_factory=dict)

    @property
    def pairs(self) -> tuple[Patch, ...]:
        """Every patch (kept under its old name: most LoRAs hold nothing but low-rank pairs)."""
        return self.patches

    @property
    def kinds(self) -> tuple[str, ...]:
        """The adapter kinds present, e.g. ("LoRA",), ("DoRA", "LoRA"), ("LoKr", "diff")."""
        kinds = {p.kind for p in self.patches}
        if any(getattr(p, "dora_scale", None) is not None for p in self.patches):
            kinds.add("DoRA")
        return tuple(sorted(kinds))

    def families(self) -> set[str]:
        return {locate(p.stem)[0] for p in self.patches}

    def describe(self) -> str:
        """'LoRA in the ComfyUI (diffusion_model.*) naming' for messages."""
        namings = sorted({locate(p.stem)[1] for p in self.patches})
        names = ", ".join(NAMING_LABELS.get(n, n) for n in namings) or "no known"
        return f"{'/'.join(self.kinds) or 'no'} patches in the {names} naming"

    @property
    def reference_downscale_factor(self) -> int | float | None:
        """IC-LoRA: how much smaller than the output the reference video is (metadata, e.g. "2")."""
        raw = self.metadata.get("reference_downscale_factor")
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError as exc:
            raise CheckpointFormatError(self.path, f"has reference_downscale_factor={raw!r}, expected a number.") \
                from exc
        if value <= 0:
            raise CheckpointFormatError(self.path, f"has reference_downscale_factor={raw!r}, expected > 0.")
        return int(value) if value.is_integer() else value


def _split_key(key: str) -> tuple[str, str] | None:
    for suffix in _SUFFIXES_LONGEST_FIRST:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], LORA_SUFFIXES[suffix]
    return None


def _group(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, dict[str, tuple[str, torch.Tensor]]],
                                                          dict[str, str], dict[str, str]]:
    """module name -> {slot: (key, tensor)}, orphans {key: why}, unsupported {key: format}."""
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    orphans: dict[str, str] = {}
    unsupported: dict[str, str] = {}
    for key, value in tensors.items():
        unknown = next((UNSUPPORTED_SUFFIXES[s] for s in _UNSUPPORTED_LONGEST_FIRST if key.endswith(s)), None)
        if unknown is not None:
            unsupported[key] = unknown
            continue
        split = _split_key(key)
        if split is None:
            orphans[key] = "not a LoRA tensor (expected lora_A/lora_B, lora_down/lora_up, alpha, dora_scale, " \
                           "diff, diff_b, set_weight, lokr_*, hada_*)"
            continue
        stem, slot = split
        groups.setdefault(stem, {})[slot] = (key, value)
    return groups, orphans, unsupported


def _get(entry: dict[str, tuple[str, torch.Tensor]], slot: str) -> torch.Tensor | None:
    item = entry.get(slot)
    return None if item is None else item[1]


def _first_key(entry: dict[str, tuple[str, torch.Tensor]], *slots: str) -> str:
    return next(entry[s][0] for s in slots if s in entry)


# slots each adapter kind consumes (besides alpha)
_ADAPTER_SLOTS = {
    "LoRA": {"down", "up", "dora_scale"},
    "LoHa": {f"hada_{n}" for n in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")} | {"dora_scale"},
    "LoKr": {f"lokr_{n}" for n in ("w1", "w2", "w1_a", "w1_b", "w2_a", "w2_b", "t2")} | {"dora_scale"},
}


def _adapter(stem: str, entry: dict[str, tuple[str, torch.Tensor]], alpha: float | None) -> Patch | None:
    """The factorised patch of one module name (LoRA, else LoHa, else LoKr, ComfyUI's order), or None."""
    common = {"alpha": alpha, "dora_scale": _get(entry, "dora_scale")}
    if "down" in entry and "up" in entry:
        return LowRankPatch(stem, _first_key(entry, "down"), down=_get(entry, "down"), up=_get(entry, "up"), **common)
    hada = {n: _get(entry, f"hada_{n}") for n in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")}
    if all(hada[n] is not None for n in ("w1_a", "w1_b", "w2_a", "w2_b")):
        return LoHaPatch(stem, _first_key(entry, "hada_w1_a"), **hada, **common)
    lokr = {n: _get(entry, f"lokr_{n}") for n in ("w1", "w2", "w1_a", "w1_b", "w2_a", "w2_b", "t2")}
    if any(lokr[n] is not None for n in ("w1", "w2", "w1_a", "w2_a")):  # ComfyUI's LoKr test
        return LoKrPatch(stem, _first_key(entry, "lokr_w1", "lokr_w1_a", "lokr_w2", "lokr_w2_a"), **lokr, **common)
    return None


def _patches_of(stem: str, entry: dict[str, tuple[str, torch.Tensor]],
                alpha: float | None) -> tuple[list[Patch], dict[str, str]]:
    """The patches of one module name and its keys that make none. On the weight, ComfyUI's precedence:
    set_weight over diff over an adapter (LoRA, LoHa, LoKr)."""
    weight: Patch | None
    if "set_weight" in entry:
        weight, used = SetPatch(stem, entry["set_weight"][0], tensor=entry["set_weight"][1]), {"set_weight"}
    elif "diff" in entry:
        weight, used = DiffPatch(stem, entry["diff"][0], tensor=entry["diff"][1]), {"diff"}
    else:
        weight = _adapter(stem, entry, alpha)
        used = _ADAPTER_SLOTS[weight.kind] if weight is not None else set()
    patches: list[Patch] = []
    orphans: dict[str, str] = {}
    if weight is not None:
        problem = _check_patch(weight)
        if problem:
            orphans[weight.source_key] = problem
        else:
            patches.append(weight)
    if "diff_b" in entry:
        patches.append(DiffPatch(stem, entry["diff_b"][0], tensor=entry["diff_b"][1], param="bias"))
    for slot, (key, _) in entry.items():
        if slot in used or slot in ("alpha", "diff_b") or key in orphans:
            continue
        orphans[key] = (f"not applied: {weight.source_key} takes precedence on {stem}" if weight is not None
                        else "has no matching partner (e.g. lora_A without lora_B)")
    if weight is None and not patches and "alpha" in entry and entry["alpha"][0] not in orphans:
        orphans[entry["alpha"][0]] = "an alpha with no LoRA weights beside it"
    return patches, orphans


def _check_patch(patch: Patch) -> str:
    """'' if the patch's factors fit each other (checked on the meta device), else why not."""
    if isinstance(patch, LowRankPatch) and (patch.down.dim() != 2 or patch.up.dim() != 2):
        return f"down {list(patch.down.shape)} and up {list(patch.up.shape)} are not 2-D (only Linear layers " \
               "take LoRAs here)"
    if isinstance(patch, LoHaPatch) and (patch.t1 is None) != (patch.t2 is None):
        return "LoHa with only one of hada_t1 / hada_t2"
    try:
        shape = patch.shape()
    except (RuntimeError, ValueError) as exc:
        return f"its factors do not fit each other ({exc})"
    dora = getattr(patch, "dora_scale", None)
    if dora is not None and not (dora.dim() == 2 and tuple(dora.shape) in ((shape[0], 1), (1, shape[1]))):
        return f"dora_scale {list(dora.shape)} is neither (out, 1) nor (1, in) for a {list(shape)} weight"
    return ""


def _alpha(entry: dict[str, tuple[str, torch.Tensor]], orphans: dict[str, str]) -> float | None:
    if "alpha" not in entry:
        return None
    key, value = entry["alpha"]
    if value.is_meta:
        return None  # shapes-only read: alpha does not change what the LoRA fits
    if value.numel() != 1:
        orphans[key] = f"alpha has {value.numel()} values, expected one"
        return None
    return float(value.float().item())


def read_lora(path: str | os.PathLike[str], *, shapes_only: bool = False) -> LoraFile:
    """Parse a LoRA safetensors file (validated header first; LoRAs are small, so all tensors are read).

    ``shapes_only``: read nothing but the header; the patches hold meta tensors of the stored shapes and no alpha
    (enough to check what the LoRA fits, see `check_lora_fits`; not to compute deltas).
    """
    header = read_header(path)
    if shapes_only:
        tensors = {key: torch.empty(info.shape, dtype=TORCH_DTYPES.get(info.dtype, torch.float32), device="meta")
                   for key, info in header.tensors.items()}
    else:
        with MappedFile(header) as mapped:
            tensors = {key: mapped.tensor(key).clone() for key in header.tensors}
    groups, orphans, unsupported = _group(tensors)
    patches: list[Patch] = []
    for stem, entry in groups.items():
        alpha = _alpha(entry, orphans)
        found, lost = _patches_of(stem, entry, alpha)
        patches.extend(found)
        orphans.update(lost)
    formats = sorted({locate(p.stem)[1] for p in patches})
    return LoraFile(header.path, tuple(patches), orphans, tuple(formats), header.metadata, unsupported)


# ---- matching ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraTargets:
    """The tensors a LoRA may change in one model: tensor key -> shape, for one family ("transformer": the keys
    of a checkpoint file; "text_encoder": our Gemma module's keys), and ``label`` naming it in messages."""

    label: str
    family: str
    shapes: Mapping[str, tuple[int, ...]]
    noun: str = "the checkpoint"  # what the unmatched-key reasons call it

    def kohya_index(self) -> dict[str, str]:
        """kohya's underscored module names -> module path (without .weight/.bias)."""
        index = {}
        for key in self.shapes:
            base, _, param = key.rpartition(".")
            if param not in ("weight", "bias"):
                continue
            plain = base.removeprefix(DIFFUSION_MODEL_PREFIX)
            index[plain.replace(".", "_")] = base
            if self.family == TEXT_ENCODER:
                index[plain.removeprefix("model.").replace(".", "_")] = base
        return index


def transformer_targets(checkpoint: str | os.PathLike[str], tensors: Mapping[str, TensorInfo]) -> LoraTargets:
    """The weights of a checkpoint file (its header) as LoRA targets."""
    return LoraTargets(os.fspath(checkpoint), TRANSFORMER, {k: tuple(v.shape) for k, v in tensors.items()})


def _candidates(patch: Patch, targets: LoraTargets, kohya: dict[str, str]) -> list[str]:
    _, naming, path = locate(patch.stem)
    if naming in KOHYA_MAPS:
        bases = [kohya[path]] if path in kohya else []
    elif targets.family == TRANSFORMER and not path.startswith(TEXT_PROJECTION_PREFIX):
        bases = [DIFFUSION_MODEL_PREFIX + path, path]
    else:
        bases = [path]
    keys = [f"{base}.{patch.param}" for base in bases]
    if isinstance(patch, DiffPatch | SetPatch) and patch.param == "weight":
        keys += bases  # ComfyUI also patches tensors not named .weight (e.g. scale_shift_table) by their full name
    return keys


def _resolve(patch: Patch, targets: LoraTargets, kohya: dict[str, str]) -> tuple[str | None, str]:
    for key in _candidates(patch, targets, kohya):
        shape = targets.shapes.get(key)
        if shape is None:
            continue
        if not patch.fits(shape):
            return None, f"fits a {list(patch.shape())} {patch.param} but {key} is {list(shape)}"
        return key, ""
    path = locate(patch.stem)[2]
    return None, f"no {patch.param} {path.removeprefix(DIFFUSION_MODEL_PREFIX)} in {targets.noun}"


@dataclass
class LoraMatch:
    """Where each patch of some LoRAs lands in one model (tensor key), and what fits nowhere."""

    targets: dict[str, list[tuple[Patch, float]]] = field(default_factory=dict)  # tensor key -> patches
    unmatched: dict[str, dict[str, str]] = field(default_factory=dict)  # LoRA path -> {LoRA key: reason}
    matched_count: dict[str, int] = field(default_factory=dict)  # LoRA path -> patches that found a tensor
    other_family: dict[str, dict[str, str]] = field(default_factory=dict)  # LoRA path -> keys for the other model


def _foreign(keys: list[str]) -> str:
    family = foreign_lora_family(keys)
    return f" Its keys look like a {family.name} LoRA." if family else ""


def _refuse_unsupported(lora: LoraFile) -> None:
    if not lora.unsupported:
        return
    names = sorted(set(lora.unsupported.values()))
    shown = ", ".join(list(lora.unsupported)[:SHOWN_KEYS])
    raise LoraFormatError(
        lora.path, f"holds {' and '.join(names)} adapter weights ({len(lora.unsupported)} keys, first: {shown}), "
        "which AIPROD does not apply.",
        "AIPROD applies LoRA (lora_A/lora_B, lora_down/lora_up, with alpha), DoRA (dora_scale), LoHa (hada_*), LoKr "
        "(lokr_*) and .diff / .diff_b / .set_weight; convert the file to one of those (e.g. extract a LoRA from "
        "the merged model with ComfyUI's LoraSave).", unmatched=tuple(lora.unsupported))


def _refuse_no_match(lora: LoraFile, targets: LoraTargets, unmatched: dict[str, str], other: dict[str, str]) -> None:
    if other and len(other) == len(lora.patches):  # every patch is for the other model
        theirs = TEXT_ENCODER if targets.family == TRANSFORMER else TRANSFORMER
        raise LoraMismatchError(
            lora.path, f"is a {WHAT[theirs]} LoRA ({lora.describe()}, e.g. {next(iter(other))}), not a LoRA for "
            f"the {WHAT[targets.family]}.", f"Apply it with the {NODES[theirs]}.", unmatched=tuple(other))
    keys = list({**unmatched, **other})
    shown = ", ".join(keys[:SHOWN_KEYS])
    raise LoraMismatchError(
        lora.path, f"does not fit {targets.label}: none of its {len(keys)} LoRA keys match a "
        f"{'weight' if targets.family == TRANSFORMER else 'tensor'} of it (first: {shown}; {lora.describe()}).",
        "It is probably a LoRA for another model or model version; use a LoRA trained for "
        f"{'LTX-2 / LTX-2.3' if targets.family == TRANSFORMER else 'Gemma-3 12B (the LTX-2 text encoder)'}."
        + _foreign(keys), unmatched=tuple(keys))


def match_patches(loras: list[tuple[LoraFile, float]], targets: LoraTargets) -> LoraMatch:
    """Match every patch of ``loras`` (file, strength) to the tensors of ``targets`` (shapes only).

    Raises `LoraFormatError` for a LoRA holding adapter kinds this pack does not apply, and `LoraMismatchError`
    for one of which no patch fits (another architecture or model version, or a LoRA for the other model: the
    transformer's given to the text encoder or the reverse; the message names the node to use).
    """
    kohya = targets.kohya_index()
    result = LoraMatch()
    for lora, strength in loras:
        _refuse_unsupported(lora)
        unmatched, other = dict(lora.orphans), {}
        count = 0
        for patch in lora.patches:
            family = locate(patch.stem)[0]
            if family != targets.family:
                other[patch.source_key] = f"a {WHAT[family]} key: apply it with the {NODES[family]}"
                continue
            key, reason = _resolve(patch, targets, kohya)
            if key is None:
                unmatched[patch.source_key] = reason
                continue
            count += 1
            result.targets.setdefault(key, []).append((patch, strength))
        if count == 0:
            _refuse_no_match(lora, targets, unmatched, other)
        result.unmatched[lora.path] = unmatched
        result.other_family[lora.path] = other
        result.matched_count[lora.path] = count
    return result


def match_loras(loras: list[tuple[LoraFile, float]], checkpoint: str | os.PathLike[str],
                tensors: Mapping[str, TensorInfo]) -> LoraMatch:
    """`match_patches` against the weights of one checkpoint file (its header ``tensors``)."""
    return match_patches(loras, transformer_targets(checkpoint, tensors))


def check_lora_fits(lora: str | os.PathLike[str], checkpoint: str | os.PathLike[str]) -> LoraFile:
    """From the two headers only: raise `LoraMismatchError` / `LoraFormatError` when ``lora`` cannot apply to the
    transformer of ``checkpoint`` (see `match_patches`), before anything is loaded. Returns the shapes-only
    `LoraFile` (its metadata holds the IC-LoRA reference downscale factor)."""
    from .component_loader import read_model_header  # safetensors or GGUF
    from .quant.layers import logical_tensors  # quantized weights at their (out, in) shapes

    shallow = read_lora(lora, shapes_only=True)
    match_loras([(shallow, 1.0)], checkpoint, logical_tensors(read_model_header(checkpoint)))
    return shallow
