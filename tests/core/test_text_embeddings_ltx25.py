"""LTX-2.5 text path after Gemma 4: the projection (in the text encoder file) and the connectors (in the transformer
file) against diffusers 0.42.1's ``LTX2TextConnectors`` on a tiny config, the two-file load and its pairing check.

Lightricks facts used where diffusers differs: the projection keys are ``text_embedding_projection.
{video,audio}_aggregate_embed`` (diffusers: ``{video,audio}_text_proj_in``) and live in the text encoder file; the
connector blocks are ``transformer_1d_blocks`` with ``q_norm`` / ``k_norm`` (diffusers: ``transformer_blocks``,
``norm_q`` / ``norm_k``) under ``model.diffusion_model.{video,audio}_embeddings_connector.``; the connector
feed-forward bias is the config's ``connector_ff_bias`` (diffusers has no such option and always has the bias).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from support import tiny_configs as tc
from support import tiny_ltx25 as t25

from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import CheckpointFormatError, WrongComponentError
from aiprod.loaders.text_embeddings import load_split_text_embeddings
from aiprod.loaders.text_encoder_generation import check_text_encoder_generation

BF16_BOUND = 0.05  # our bf16 text path vs diffusers' float32, relative to max(1, max|ref|)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> t25.Tiny25:
    return t25.build(tmp_path_factory.mktemp("ltx25"), t25.LTX25)


def _hidden_states(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma hidden states (B, T, D, L) at a Gemma-like scale and a left-padded mask with different lengths."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, t25.CONTEXT_TOKENS, tc.TINY_GEMMA_HIDDEN_SIZE, tc.TINY_GEMMA_NUM_LAYERS + 1)
    hidden = torch.randn(shape, generator=gen) * 4
    mask = torch.zeros(batch, t25.CONTEXT_TOKENS, dtype=torch.int64)
    for row, length in enumerate((37, 128, 5)[:batch]):
        mask[row, -length:] = 1
    return hidden, mask


def _close(ours: torch.Tensor, ref: torch.Tensor, bound: float) -> None:
    error = (ours.float() - ref).abs().max().item()
    assert error <= bound * max(1.0, ref.abs().max().item()), error


@pytest.mark.oracle
@pytest.mark.parametrize(("dtype", "bound"), [(torch.float32, 1e-5), (torch.bfloat16, BF16_BOUND)])
def test_projection_and_connectors_match_diffusers(tiny: t25.Tiny25, dtype: torch.dtype, bound: float) -> None:
    loaded = load_split_text_embeddings(tiny.text_encoder_path, tiny.transformer_path, dtype=dtype)
    assert loaded.layout == "TEXT_PROJECTION_FILE_MAP + CONNECTORS_MAP"
    hidden, mask = _hidden_states(3, seed=2)
    with torch.no_grad():
        ours = loaded.module(hidden.to(dtype), mask)
        video, audio, video_mask = tiny.connectors(hidden, mask)
    _close(ours.video, video, bound)
    _close(ours.audio, audio, bound)
    assert torch.equal(ours.mask, video_mask)  # registers: every position attendable


def test_config_reads_the_25_spellings() -> None:
    section = t25.transformer_section(t25.LTX25)
    assert section["text_encoder_norm_type"] == "PER_TOKEN_RMS"
    config = TextEmbeddingsConfig.from_metadata({"transformer": section})
    assert config.video_connector.ff_bias and config.audio_features_dim == tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM
    section["text_encoder_norm_type"] = "layer_norm"
    with pytest.raises(ValueError, match="text_encoder_norm_type='layer_norm', expected 'per_token_rms'"):
        TextEmbeddingsConfig.from_metadata({"transformer": section})
    section.update(text_encoder_norm_type="per_token_rms", connector_ff_bias=False)
    from aiprod.aiprod_core.text_encoder import TextConnectors

    connectors = TextConnectors(TextEmbeddingsConfig.from_metadata({"transformer": section}), device="meta")
    assert not any(k.endswith("ff.net.2.bias") for k in connectors.state_dict())


def _projection_file(path, *, tensors_from, metadata: dict[str, str]):
    from safetensors import safe_open

    with safe_open(tensors_from, "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("text_embedding_projection.")}
    save_file(tensors, str(path), metadata)
    return path


def test_split_load_refuses_another_gemma_or_generation(tiny: t25.Tiny25, tmp_path) -> None:
    check_text_encoder_generation(tiny.text_encoder_path, tiny.transformer_path)
    other_gemma = _projection_file(tmp_path / "other.safetensors", tensors_from=tiny.text_encoder_path,
                                   metadata={"gemma_config": json.dumps({"model_type": "gemma4_unified",
                                                                         "gemma_version": "gemma4-12b-ltx-v0"})})
    expected = "gemma_version 'gemma4-12b-ltx-v0'.*gemma_version 'gemma4-12b-ltx-v1'"
    with pytest.raises(WrongComponentError, match=expected):
        load_split_text_embeddings(other_gemma, tiny.transformer_path)
    # the 2.5 text encoder with an LTX-2.3 transformer: both generations named
    ltx23 = tmp_path / "ltx23.safetensors"
    save_file({"model.diffusion_model.patchify_proj.weight": torch.zeros(4, 4)}, str(ltx23), {
        "model_version": "2.3.0", "config": json.dumps({"transformer": tc.transformer_config(tc.LTX23)})})
    with pytest.raises(WrongComponentError) as info:
        load_split_text_embeddings(tiny.text_encoder_path, ltx23)
    assert "Gemma 4 (the text encoder of LTX-2.5)" in str(info.value) and "is LTX-2.3" in str(info.value)


def test_text_projection_needs_the_transformer_config(tiny: t25.Tiny25) -> None:
    with pytest.raises(CheckpointFormatError, match="has no `config` metadata, so the text projection"):
        load_component(tiny.text_encoder_path, "text_projection")
    connectors = load_component(tiny.transformer_path, "text_connectors", dtype=torch.float32)
    assert sorted({k.split(".")[0] for k in connectors.module.state_dict()}) == ["audio_connector", "video_connector"]
