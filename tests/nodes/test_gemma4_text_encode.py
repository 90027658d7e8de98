"""The Gemma-4 (LTX-2.5) encoder in the text node's lifecycle: loaded for encoding, released right after (as Gemma 3
is), through ComfyUI's model management on the CPU."""

from __future__ import annotations

import torch
from support import tiny_configs as tc
from support import tiny_gemma4 as tg


@torch.no_grad()
def test_gemma4_is_resident_only_while_encoding(comfy_cpu, tmp_path):
    from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor
    from aiprod.loaders.text_encoder_generation import load_text_encoder
    from aiprod.nodes import runtime
    from aiprod.nodes.text_nodes import encode_text
    from aiprod.nodes.types import LazyModule, TextEncoder

    path = tg.write_ltx_bundle(tmp_path / "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors", tg.build_model(seed=4))
    section = tc.checkpoint_config(tc.LTX23)["transformer"]
    processor = TextEmbeddingsProcessor(TextEmbeddingsConfig.from_metadata({"transformer": section}), tg.HIDDEN,
                                        tg.LAYERS, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    for param in processor.parameters():  # the connectors' registers are torch.empty: never leave memory garbage
        param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    gemma = LazyModule(lambda: load_text_encoder(path, dtype=torch.float32), "gemma4")
    encoder = TextEncoder(gemma, LazyModule(lambda: processor, "projection"), "gemma4")
    host = runtime.ComfyModelHost(device=torch.device("cpu"), offload_device=torch.device("cpu"))
    seen: list[bool] = []
    loaded = gemma.get()
    forward = loaded.encoder.forward

    def spy(ids, mask):  # records whether ComfyUI holds the encoder while it runs
        seen.append(any(lm.model.model is loaded.encoder for lm in runtime.mm.current_loaded_models))
        return forward(ids, mask)

    loaded.encoder.forward = spy
    contexts = encode_text(encoder, "a red cat runs", "the dog", host)
    assert seen == [True, True]  # prompt and negative prompt
    assert not any(lm.model.model is loaded.encoder for lm in runtime.mm.current_loaded_models)
    assert contexts.positive.video.shape == (1, 1024, tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM)
    assert torch.isfinite(contexts.negative.audio).all()
    runtime.release(processor)
