"""Tiny LTX-2.5 models built with diffusers 0.42.1's own classes and written in the Lightricks 2.5 file layout.

Three files, as Lightricks/LTX-2.5 ships them (one per component):

- ``diffusion_models/...-transformer``: the transformer under ``model.diffusion_model.`` with the text connectors
  (``model.diffusion_model.{video,audio}_embeddings_connector.*``), metadata ``config`` (``transformer`` section),
  ``model_version`` 2.5.0 and ``gemma_source_checkpoint``;
- ``text_encoders/gemma4-...-with-proj``: the text projection ``text_embedding_projection.{video,audio}_
  aggregate_embed.*`` (next to the Gemma 4 weights, which are another helper's; a stand-in embedding table here)
  and ``gemma_config`` metadata;
- ``model_patches/...-duration-head``: ``duration_head.*`` in ``nn.MultiheadAttention``'s layout, metadata
  ``config`` with the two connector widths.

Sizes: the tiny configs of ``tiny_configs`` (2 layers, video 4 heads x 16, audio 4 heads x 8, Gemma 64 wide with
2 layers), so the published key set with the sizes shrunk. diffusers' key names differ from the file's in places
(``proj_in`` / ``patchify_proj``, ``time_embed`` / ``adaln_single``, ``norm_q`` / ``q_norm``, the connectors'
``transformer_blocks`` / ``transformer_1d_blocks``, the duration pooler's ``to_q/k/v`` / ``in_proj_*``): the file
keeps the Lightricks names (the layout ComfyUI reads too), the maps below translate. Weights are rounded to bf16
(stored as bf16, like the official files), so a float32 load of the file holds exactly the diffusers weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from support import tiny_configs as tc

LTX25 = "ltx25"  # the published 2.5 transformer config: 2.3's with ff_bias false and the keyframe marker
LTX25_KV = "ltx25_kv"  # diffusers' own 2.5 test config ("LTX-2.4"): also audio_ff_bias / use_prompt_adaln_single off
VARIANTS = (LTX25, LTX25_KV)
MODEL_VERSION = "2.5.0"
GEMMA_VERSION = "gemma4-12b-ltx-v1"
CONTEXT_TOKENS = 128  # diffusers' connector needs a multiple of its 128 learnable registers
PREFIX = "model.diffusion_model."
DURATION = {"pooler_hidden_dim": 16, "num_queries": 2, "num_pooler_heads": 4, "mlp_hidden": 8}

# diffusers top-level module -> the file's name (everything else keeps its name)
_TOP_LEVEL = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "prompt_adaln": "prompt_adaln_single",
    "audio_prompt_adaln": "audio_prompt_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
}
_IN_BLOCK = {
    "video_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_video",
    "audio_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_audio",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
}


def transformer_section(variant: str) -> dict[str, Any]:
    """The ``transformer`` metadata section of a tiny 2.5 transformer file.

    ``LTX25``: the published delta to LTX-2.3, read from the shipped headers (third-party header dumps; no
    ``audio_ff_bias`` / ``use_prompt_adaln_single`` keys, so both keep their reference default true; the
    ``prompt_adaln_single`` tensors are in the file), with 2.5's spelling ``PER_TOKEN_RMS``.
    ``LTX25_KV``: the reference option no published file uses, ``use_prompt_adaln_single: false`` (the text keys
    and values then do not depend on the timestep), with ``audio_ff_bias: false`` as in diffusers' own test.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}, expected one of {VARIANTS}")
    section = tc.transformer_config(tc.LTX23)
    section.update(ff_bias=False, use_keyframes_abs_pos_embedding=True, text_encoder_norm_type="PER_TOKEN_RMS")
    if variant == LTX25_KV:
        section.update(audio_ff_bias=False, use_prompt_adaln_single=False)
    return section


def diffusers_transformer(section: dict[str, Any]) -> torch.nn.Module:
    """diffusers' ``LTX2VideoTransformer3DModel`` for ``section`` (float32, random init; see `build`)."""
    from diffusers import LTX2VideoTransformer3DModel

    heads, audio_heads = section["num_attention_heads"], section["audio_num_attention_heads"]
    return LTX2VideoTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=section["attention_head_dim"],
        cross_attention_dim=section["cross_attention_dim"],
        audio_num_attention_heads=audio_heads,
        audio_attention_head_dim=section["audio_attention_head_dim"],
        audio_cross_attention_dim=section["audio_cross_attention_dim"],
        num_layers=section["num_layers"],
        caption_channels=section["caption_channels"],
        gated_attn=section["apply_gated_attention"],
        audio_gated_attn=section["apply_gated_attention"],
        cross_attn_mod=section["cross_attention_adaln"],
        audio_cross_attn_mod=section["cross_attention_adaln"],
        rope_type=section["rope_type"],
        rope_double_precision=section["frequencies_precision"] == "float64",
        cross_attn_timestep_scale_multiplier=section["av_ca_timestep_scale_multiplier"],
        use_prompt_embeddings=not section["caption_proj_before_connector"],
        perturbed_attn=True,
        ff_bias=section.get("ff_bias", True),
        audio_ff_bias=section.get("audio_ff_bias", True),
        use_prompt_adaln_single=section.get("use_prompt_adaln_single", True),
        use_keyframes_abs_pos_embedding=section.get("use_keyframes_abs_pos_embedding", False),
    )


def diffusers_connectors(section: dict[str, Any]) -> torch.nn.Module:
    """diffusers' ``LTX2TextConnectors`` (per-modality projections, the 2.3 / 2.5 text path) for ``section``."""
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    return LTX2TextConnectors(
        caption_channels=tc.TINY_GEMMA_HIDDEN_SIZE,
        text_proj_in_factor=tc.TINY_GEMMA_NUM_LAYERS + 1,
        video_connector_num_attention_heads=section["connector_num_attention_heads"],
        video_connector_attention_head_dim=section["connector_attention_head_dim"],
        video_connector_num_layers=section["connector_num_layers"],
        video_connector_num_learnable_registers=section["connector_num_learnable_registers"],
        video_gated_attn=section["connector_apply_gated_attention"],
        audio_connector_num_attention_heads=section["audio_connector_num_attention_heads"],
        audio_connector_attention_head_dim=section["audio_connector_attention_head_dim"],
        audio_connector_num_layers=section["connector_num_layers"],
        audio_connector_num_learnable_registers=section["connector_num_learnable_registers"],
        audio_gated_attn=section["connector_apply_gated_attention"],
        connector_rope_base_seq_len=section["connector_positional_embedding_max_pos"][0],
        rope_double_precision=section["frequencies_precision"] == "float64",
        rope_type=section["rope_type"],
        per_modality_projections=True,
        video_hidden_dim=section["num_attention_heads"] * section["attention_head_dim"],
        audio_hidden_dim=section["audio_num_attention_heads"] * section["audio_attention_head_dim"],
        proj_bias=True,
    )


def diffusers_duration_head(section: dict[str, Any]) -> torch.nn.Module:
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    return LTX2DurationHead(
        video_cross_attention_dim=section["cross_attention_dim"],
        audio_cross_attention_dim=section["audio_cross_attention_dim"],
        pooler_hidden_dim=DURATION["pooler_hidden_dim"],
        num_queries=DURATION["num_queries"],
        num_pooler_heads=DURATION["num_pooler_heads"],
        mlp_hidden_dim=DURATION["mlp_hidden"],
    )


# --------------------------------------------------------------------------------------------------------
# diffusers keys -> the file's keys
# --------------------------------------------------------------------------------------------------------


def transformer_file_key(key: str) -> str:
    """diffusers ``LTX2VideoTransformer3DModel`` key -> the 2.5 transformer file's key."""
    head, _, rest = key.partition(".")
    if head == "transformer_blocks":
        parts = [_IN_BLOCK.get(part, part) for part in rest.split(".")]
        return PREFIX + "transformer_blocks." + ".".join(parts)
    return PREFIX + _TOP_LEVEL.get(head, head) + ("." + rest if rest else "")


def connector_file_key(key: str) -> str:
    """diffusers ``LTX2TextConnectors`` key -> its key in the transformer file (connectors) or the text encoder
    file (projection)."""
    for ours, theirs in (("video_text_proj_in.", "video_aggregate_embed."), ("audio_text_proj_in.",
                                                                               "audio_aggregate_embed.")):
        if key.startswith(ours):
            return "text_embedding_projection." + theirs + key[len(ours):]
    stream, _, rest = key.partition(".")  # video_connector / audio_connector
    parts = [_IN_BLOCK.get(part, part) for part in rest.replace("transformer_blocks.", "transformer_1d_blocks.", 1)
             .split(".")]
    return PREFIX + stream.replace("_connector", "_embeddings_connector") + "." + ".".join(parts)


def duration_head_tensors(head: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The duration head's file tensors: ``duration_head.*``, the pooler in ``nn.MultiheadAttention`` layout."""
    state = head.state_dict()
    out = {}
    for key, value in state.items():
        if key.startswith("attention_pooler.") and key != "attention_pooler.query_tokens":
            continue
        out["duration_head." + key] = value
    pooler = "attention_pooler."
    for kind in ("weight", "bias"):
        parts = [state[f"{pooler}to_{p}.{kind}"] for p in "qkv"]
        out[f"duration_head.{pooler}cross_attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        out[f"duration_head.{pooler}cross_attn.out_proj.{kind}"] = state[f"{pooler}to_out.{kind}"]
    return out


# --------------------------------------------------------------------------------------------------------
# Honest random weights
# --------------------------------------------------------------------------------------------------------


def _generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _value(key: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """normal(0, 1/fan_in) matrices, 1 + N(0, .1) norm weights, N(0, .3) tables, markers and embeddings,
    registers in [-1, 1], small biases (diffusers zero-initialises the keyframe marker; a zero marker tests
    nothing)."""
    name = key.rsplit(".", 1)[-1]
    if name == "learnable_registers":
        return torch.rand(shape, generator=gen) * 2 - 1
    if name in ("weight", "in_proj_weight") and len(shape) >= 2:
        return torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    if name == "weight" and "norm" in key:
        return 1 + torch.randn(shape, generator=gen) * 0.1
    if "table" in key or "embedding" in key or "emb" in name or "query_tokens" in name:
        return torch.randn(shape, generator=gen) * 0.3
    return torch.randn(shape, generator=gen) * 0.02


@torch.no_grad()
def init_bf16(module: torch.nn.Module, seed: int, file_key: Any) -> torch.nn.Module:
    """Seeded values for every parameter (keyed by its file key), rounded to bf16 and kept in float32."""
    for key, param in module.named_parameters():
        value = _value(file_key(key), param.shape, _generator(seed, file_key(key)))
        param.copy_(value.to(torch.bfloat16).float())
    return module.float().eval()


# --------------------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------------------


@dataclass
class Tiny25:
    """A tiny 2.5 set: the three files and the diffusers modules (float32, the files' exact weights)."""

    variant: str
    section: dict[str, Any]
    transformer_path: Path
    text_encoder_path: Path
    duration_head_path: Path
    transformer: torch.nn.Module
    connectors: torch.nn.Module
    duration_head: torch.nn.Module


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(path), metadata)
    return path


def build(root: Path, variant: str = LTX25, seed: int = 0) -> Tiny25:
    """Build the diffusers modules of ``variant`` with seeded weights and write the three files under ``root``."""
    section = transformer_section(variant)
    transformer = init_bf16(diffusers_transformer(section), seed, transformer_file_key)
    connectors = init_bf16(diffusers_connectors(section), seed, connector_file_key)
    head = init_bf16(diffusers_duration_head(section), seed, lambda k: "duration_head." + k)
    with torch.no_grad():  # a log-duration near log(5 s), so the predictions are clip lengths, not ~1 s
        head.mlp_out.bias.add_(math.log(5.0)).copy_(head.mlp_out.bias.to(torch.bfloat16).float())
    dit = {transformer_file_key(k): v for k, v in transformer.state_dict().items()}
    text = {connector_file_key(k): v for k, v in connectors.state_dict().items()}
    dit.update({k: v for k, v in text.items() if k.startswith(PREFIX)})
    projection = {k: v for k, v in text.items() if not k.startswith(PREFIX)}
    # a stand-in for the Gemma 4 weights that share the text encoder file
    projection["model.embed_tokens.weight"] = torch.zeros(8, tc.TINY_GEMMA_HIDDEN_SIZE)
    source = json.dumps({"ltx_version": MODEL_VERSION, "gemma_version": GEMMA_VERSION})
    gemma_config = {"model_type": "gemma4_unified", "gemma_version": GEMMA_VERSION,
                    "text_config": {"hidden_size": tc.TINY_GEMMA_HIDDEN_SIZE,
                                    "num_hidden_layers": tc.TINY_GEMMA_NUM_LAYERS}}
    duration_config = {"transformer": {k: section[k] for k in ("cross_attention_dim", "audio_cross_attention_dim")},
                       "duration_head": dict(DURATION)}
    return Tiny25(
        variant=variant,
        section=copy.deepcopy(section),
        transformer_path=_save(root / f"diffusion_models/ltx-2.5-tiny-{variant}-transformer.safetensors", dit, {
            "config": json.dumps({"transformer": section}), "model_version": MODEL_VERSION,
            "gemma_source_checkpoint": source}),
        text_encoder_path=_save(root / "text_encoders/gemma4-tiny-with-proj-ltx-2.5.safetensors", projection, {
            "gemma_config": json.dumps(gemma_config)}),
        duration_head_path=_save(root / "model_patches/ltx-2.5-tiny-duration-head.safetensors",
                                 duration_head_tensors(head), {"config": json.dumps(duration_config),
                                                               "model_version": MODEL_VERSION}),
        transformer=transformer,
        connectors=connectors,
        duration_head=head,
    )


# --------------------------------------------------------------------------------------------------------
# Transformer inputs (our `ModalityInput` fields) and the same call on diffusers' model
# --------------------------------------------------------------------------------------------------------


def video_positions(batch: int, grid: tuple[int, int, int], fps: float = 24.0) -> torch.Tensor:
    """(B, 3, T, 2) pixel-space [start, end) bounds as the video patchifier gives them: causal time in s."""
    frames, height, width = grid
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    starts = torch.stack([f.flatten() * 8.0, h.flatten() * 32.0, w.flatten() * 32.0])  # (3, T)
    bounds = torch.stack([starts, starts + torch.tensor([8.0, 32.0, 32.0])[:, None]], dim=-1)  # (3, T, 2)
    bounds[0] = (bounds[0] + 1 - 8).clamp(min=0) / fps
    return bounds.expand(batch, -1, -1, -1).clone()


def audio_positions(batch: int, tokens: int) -> torch.Tensor:
    starts = torch.arange(tokens, dtype=torch.float32) * 0.04
    return torch.stack([starts, starts + 0.04], dim=-1)[None].expand(batch, -1, -1, -1).clone()  # (B, 1, T, 2)


def stream_inputs(
    section: dict[str, Any],
    batch: int,
    seed: int,
    grid: tuple[int, int, int] = (2, 2, 3),
    audio_tokens: int = 5,
    context_tokens: int = 16,
    conditioned: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(video, audio) `ModalityInput` fields: different sigmas per sample and stream, the first latent frame as
    conditioning tokens (timestep 0) when ``conditioned``, and that frame marked in the video's keyframes_mask."""
    gen = torch.Generator().manual_seed(seed)
    per_frame, tokens = grid[1] * grid[2], grid[0] * grid[1] * grid[2]
    video_dim = section["num_attention_heads"] * section["attention_head_dim"]
    audio_dim = section["audio_num_attention_heads"] * section["audio_attention_head_dim"]

    def stream(count: int, width: int, positions: torch.Tensor, first: int) -> dict[str, torch.Tensor]:
        sigma = torch.rand(batch, generator=gen) * 0.8 + 0.1
        timesteps = sigma[:, None].expand(batch, count).clone()
        timesteps[:, :first] = 0.0
        return {"latent": torch.randn(batch, count, 128, generator=gen), "sigma": sigma, "timesteps": timesteps,
                "positions": positions, "context": torch.randn(batch, context_tokens, width, generator=gen)}

    video = stream(tokens, video_dim, video_positions(batch, grid), per_frame if conditioned else 0)
    video["keyframes_mask"] = torch.zeros(batch, tokens)
    video["keyframes_mask"][:, :per_frame] = 1.0
    audio = stream(audio_tokens, audio_dim, audio_positions(batch, audio_tokens), 0)
    return video, audio


def diffusers_call(model: torch.nn.Module, video: dict[str, Any], audio: dict[str, Any],
                   **extra: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' forward on the same inputs: its timesteps and sigmas come pre-scaled by the 1000 multiplier (as
    its pipelines pass them), the cross-modal AdaLN takes the other stream's sigma (``use_cross_timestep``)."""
    scale = 1000.0
    mask = video.get("keyframes_mask")
    return model(
        hidden_states=video["latent"], audio_hidden_states=audio["latent"],
        encoder_hidden_states=video["context"], audio_encoder_hidden_states=audio["context"],
        timestep=video["timesteps"] * scale, audio_timestep=audio["timesteps"] * scale,
        sigma=video["sigma"] * scale, audio_sigma=audio["sigma"] * scale,
        video_coords=video["positions"], audio_coords=audio["positions"], use_cross_timestep=True,
        video_keyframes_mask=None if mask is None else mask[..., None], return_dict=False, **extra,
    )
