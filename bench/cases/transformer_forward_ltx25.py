"""One LTX-2.5 transformer forward (batch 1, video + audio) on seeded random weights: ours vs diffusers 0.42.1's
``LTX2VideoTransformer3DModel`` on the same weights, sizes of `transformer_forward` with a 1024-token prompt.

Variants (``VARIANTS``): ``""`` the published 2.5 config (prompt AdaLN kept: its text keys / values follow the
sigma, nothing to keep between steps); ``kv_on`` / ``kv_off`` the reference's key/value-cacheable config
(``use_prompt_adaln_single: false``) with our prompt K/V reuse on / off. As in `transformer_forward`, one untimed
warm-up forward runs first on both sides (the previous step: other latents and sigmas, the same prompt), then the
timed call is the next step's forward. Both workers import diffusers (the same import overhead on both sides).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..common import random_state_dict
from . import sizes

VARIANTS = ("", "kv_on", "kv_off")
CONTEXT_TOKENS = 1024  # a Gemma prompt padded to 1024 tokens, as ltx-core / ComfyUI feed LTX-2.5 (registers)


def section(variant: str) -> dict[str, Any]:
    from support import tiny_ltx25 as t25

    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}, expected one of {VARIANTS}")
    config = t25.transformer_section(t25.LTX25_KV if variant else t25.LTX25)
    base = sizes.transformer_section()
    config.update({k: base[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                                        "cross_attention_dim", "audio_num_attention_heads",
                                        "audio_attention_head_dim", "audio_cross_attention_dim")})
    return config


def _steps(config: dict[str, Any]) -> list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Two steps' inputs (warm-up, timed): new latents and sigmas, the same prompt contexts."""
    from support import tiny_ltx25 as t25

    steps = []
    for seed in (0, 1):
        video, audio = t25.stream_inputs(config, batch=1, seed=seed, grid=sizes.VIDEO_GRID,
                                         audio_tokens=sizes.AUDIO_TOKENS, context_tokens=CONTEXT_TOKENS)
        if steps:
            video["context"], audio["context"] = steps[0][0]["context"], steps[0][1]["context"]
        steps.append((video, audio))
    return steps


def _models(config: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, torch.Tensor]]:
    """(our model on the meta device, diffusers' model, the seeded state dict in our (= the file's) keys)."""
    from support import tiny_ltx25 as t25

    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    ours = AVTransformer(TransformerConfig.from_metadata({"transformer": config}), device="meta")
    state = random_state_dict(ours)
    reference = t25.diffusers_transformer(config)
    theirs = {key: state[t25.transformer_file_key(key).removeprefix(t25.PREFIX)]
              for key in reference.state_dict()}
    reference.load_state_dict(theirs, strict=True)
    return ours, reference.eval(), state


def _ours(model: torch.nn.Module, state: dict[str, torch.Tensor], steps: list, reuse: bool) -> Callable[[], object]:
    from aiprod.aiprod_core.transformer import ModalityInput

    model.load_state_dict(state, strict=True, assign=True)
    model.eval().reuse_prompt_kv = reuse
    (warm_video, warm_audio), (video, audio) = steps
    model(ModalityInput(**warm_video), ModalityInput(**warm_audio))  # warm-up: the previous step
    return lambda: model(ModalityInput(**video), ModalityInput(**audio))


def _reference(model: torch.nn.Module, steps: list) -> Callable[[], object]:
    from support import tiny_ltx25 as t25

    (warm_video, warm_audio), (video, audio) = steps
    t25.diffusers_call(model, warm_video, warm_audio)  # warm-up: the previous step
    return lambda: t25.diffusers_call(model, video, audio)


def prepare(side: str, variant: str) -> Callable[[], object]:
    config = section(variant)
    ours, reference, state = _models(config)
    steps = _steps(config)
    if side == "ours":
        del reference
        return _ours(ours, state, steps, reuse=variant != "kv_off")
    del ours, state
    return _reference(reference, steps)
