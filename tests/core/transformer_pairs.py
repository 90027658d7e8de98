"""The reference transformer of a generation's tiny config with seeded honest weights, and ours loaded from it."""

from __future__ import annotations

import torch
from support import tiny_configs as tc
from support.tiny_checkpoints import build_reference_module, init_module

from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

PREFIX = "model.diffusion_model."


def reference_and_ours(generation: str, seed: int) -> tuple[torch.nn.Module, AVTransformer]:
    """(ltx-core LTXModel in float32, our AVTransformer with the same state dict), both in eval mode."""
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    metadata = {"transformer": tc.transformer_config(generation)}
    reference = build_reference_module(LTXModelConfigurator, metadata)
    with torch.no_grad():
        init_module(reference, seed=seed, to_file_key=lambda k: PREFIX + k, config=metadata)
    reference = reference.float().eval()
    ours = AVTransformer(TransformerConfig.from_metadata(metadata), device="meta")
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return reference, ours.eval()
