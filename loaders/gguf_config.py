"""The transformer config of a GGUF file: from its ``config`` metadata, else inferred from tensor shapes.

LTX-2 GGUFs made with city96's tools keep the transformer's tensor names (``model.diffusion_model.`` stripped)
and, since ComfyUI-GGUF PR #399, may carry the safetensors ``config`` JSON as a string key-value. Without it, the
sizes are read from the tensors (widths from ``patchify_proj`` / ``audio_patchify_proj``, the block count, the
generation from the LTX-2.3 tensors: gated attention ``to_gate_logits`` and the 9-row ``scale_shift_table``) and
matched to a known layout in `KNOWN_LAYOUTS`, whose fixed keys are those of the published LTX-2 / LTX-2.3 configs.
The head counts are read from ``to_gate_logits`` (LTX-2.3) or taken from the known LTX-2 19B layout; a file that
fits no known layout is refused with what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import CheckpointFormatError
from .safetensors_header import SafetensorsHeader, parse_json

__all__ = ["KNOWN_LAYOUTS", "KnownLayout", "gguf_config"]

# Keys every published LTX-2 / LTX-2.3 transformer config has with these values.
FIXED_TRANSFORMER_KEYS: dict[str, Any] = {
    "activation_fn": "gelu-approximate", "attention_bias": True, "attention_type": "default",
    "av_cross_ada_norm": True, "cross_attention_norm": True, "double_self_attention": False, "dropout": 0.0,
    "frequencies_precision": "float64", "in_channels": 128, "out_channels": 128, "audio_in_channels": 128,
    "audio_out_channels": 128, "norm_elementwise_affine": False, "norm_eps": 1e-06, "num_embeds_ada_norm": 1000,
    "num_vector_embeds": None, "only_cross_attention": False, "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20], "positional_embedding_theta": 10000.0,
    "positional_embedding_type": "rope", "qk_norm": "rms_norm", "rope_type": "split", "share_ff": False,
    "standardization_norm": "rms_norm", "timestep_scale_multiplier": 1000, "av_ca_timestep_scale_multiplier": 1000.0,
    "upcast_attention": False, "use_audio_video_cross_attention": True, "use_linear_projection": False,
    "use_middle_indices_grid": True,
}
GENERATION_KEYS = {
    "2.0": {},
    "2.3": {"apply_gated_attention": True, "cross_attention_adaln": True, "caption_proj_before_connector": True},
}
_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.")


@dataclass(frozen=True)
class KnownLayout:
    """A published transformer layout: generation, video / audio widths and (when no tensor tells) head counts."""

    name: str
    model_version: str
    video_width: int
    audio_width: int
    video_heads: int
    audio_heads: int


KNOWN_LAYOUTS = (
    KnownLayout("LTX-2 19B", "2.0", 4096, 2048, 32, 32),
    KnownLayout("LTX-2.3 22B", "2.3", 4096, 2048, 32, 32),
)


def _strip(key: str) -> str:
    return key.removeprefix("model.diffusion_model.")


def _shapes(header: SafetensorsHeader) -> dict[str, tuple[int, ...]]:
    quant = getattr(header, "quant_layers", {})
    shapes = {_strip(k): info.shape for k, info in header.tensors.items()}
    for layer in quant.values():  # quantized tensors: their logical shapes
        shapes[_strip(layer.weight_key)] = layer.shape
    return shapes


def _missing(header: SafetensorsHeader, what: str) -> CheckpointFormatError:
    known = "; ".join(f"{k.name}: video width {k.video_width}, audio width {k.audio_width}" for k in KNOWN_LAYOUTS)
    return CheckpointFormatError(
        header.path, f"has no `config` metadata, and {what}, so its transformer config cannot be inferred "
        f"(known layouts: {known}).",
        "Use a GGUF made from the official checkpoint with its config (ComfyUI-GGUF's converter keeps it), or the "
        "safetensors release.",
    )


def _inferred(header: SafetensorsHeader) -> dict[str, Any]:
    shapes = _shapes(header)
    for name in ("patchify_proj.weight", "audio_patchify_proj.weight"):
        if name not in shapes:
            raise _missing(header, f"it has no `{name}` (this is not an LTX-2 audio+video transformer)")
    video, audio = shapes["patchify_proj.weight"][0], shapes["audio_patchify_proj.weight"][0]
    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise _missing(header, "its transformer_blocks.N are not numbered 0..N-1")
    gated = "transformer_blocks.0.attn1.to_gate_logits.weight" in shapes
    version = "2.3" if gated else "2.0"
    layout = next((k for k in KNOWN_LAYOUTS if k.model_version == version and (k.video_width, k.audio_width) ==
                   (video, audio)), None)
    if layout is None:
        raise _missing(header, f"its widths (video {video}, audio {audio}, LTX-{version} tensors) match no "
                       "known layout")
    heads = (layout.video_heads, layout.audio_heads)
    if gated:
        heads = (shapes["transformer_blocks.0.attn1.to_gate_logits.weight"][0],
                 shapes["transformer_blocks.0.audio_attn1.to_gate_logits.weight"][0])
    section = {**FIXED_TRANSFORMER_KEYS, **GENERATION_KEYS[version], "num_layers": len(blocks),
               "num_attention_heads": heads[0], "attention_head_dim": video // heads[0], "cross_attention_dim": video,
               "audio_num_attention_heads": heads[1], "audio_attention_head_dim": audio // heads[1],
               "audio_cross_attention_dim": audio}
    if not gated:
        caption = shapes.get("caption_projection.linear_1.weight")
        if caption is None:
            raise _missing(header, "it has no caption_projection.linear_1.weight to size the caption channels")
        section["caption_channels"] = caption[1]
    return {"transformer": section, "_inferred_from": layout.name}


def gguf_config(header: SafetensorsHeader) -> dict[str, Any]:
    """The config of a GGUF transformer file (see the module docstring)."""
    raw = header.metadata.get("config")
    if raw is None:
        return _inferred(header)
    config = parse_json(header.path, raw, "a `config` key-value")  # bounded nesting, errors name the file
    if not isinstance(config, dict):
        raise CheckpointFormatError(header.path, "has a `config` key-value that is not a JSON object.")
    return config
