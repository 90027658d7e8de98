"""Gemma text-encoder LoRAs: ComfyUI's ``text_encoders.gemma3_12b.transformer.model...`` naming (and the PEFT,
Hugging Face and kohya variants) fused while Gemma loads, checked against a Gemma merged by hand; refusals.

Tolerance: float32 throughout. The plain lora_up/lora_down pairs are fused in the reference's order
``((strength * alpha / rank) * B) @ A``, the hand merge computes ``W + (strength * alpha / rank) * (B @ A)``:
they agree to float32 rounding (<= 1e-6 of the largest delta) and so do the hidden states (<= 1e-5 of their
largest value). The .diff patch and the fp8 LoRA (computed in float32, ComfyUI's way) are exact.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from support.word_tokenizer import write_word_tokenizer

from aiprod.loaders.errors import LoraMismatchError
from aiprod.loaders.lora_apply import check_text_encoder_lora, gemma_lora_transform
from aiprod.loaders.text_encoder_files import load_gemma

TEXT_CONFIG = {
    "model_type": "gemma3_text", "vocab_size": 32, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "query_pre_attn_scalar": 16, "sliding_window": 8, "sliding_window_pattern": 2, "rope_theta": 1_000_000,
    "rope_local_base_freq": 10_000, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "max_position_embeddings": 1024, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
}
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
               "mlp.up_proj", "mlp.down_proj")
COMFY = "text_encoders.gemma3_12b.transformer."
RANK, ALPHA, STRENGTH = 4, 2.0, 0.8
NORM = "model.layers.0.input_layernorm.weight"


def _write_gemma(folder, state: dict[str, torch.Tensor]):
    folder.mkdir()
    path = folder / "gemma_3_12B_it.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    (folder / "config.json").write_text(json.dumps(TEXT_CONFIG))
    write_word_tokenizer(folder)
    return path


@pytest.fixture(scope="module")
def gemma_state() -> dict[str, torch.Tensor]:
    from aiprod.aiprod_core.text_encoder import GemmaTextEncoder, gemma_text_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        encoder = GemmaTextEncoder(gemma_text_config(TEXT_CONFIG))
        for param in encoder.parameters():
            torch.nn.init.normal_(param, 0.0, 0.1)
    return {k: v.detach().float().contiguous() for k, v in encoder.state_dict().items()}


@pytest.fixture
def gemma_file(tmp_path, gemma_state):
    return _write_gemma(tmp_path / "text_encoders", gemma_state)


def _lora_pairs(gemma_state) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path -> (down (rank, in), up (out, rank)) for every projection of both layers."""
    gen = torch.Generator().manual_seed(11)
    pairs = {}
    for layer in range(TEXT_CONFIG["num_hidden_layers"]):
        for name in PROJECTIONS:
            path = f"model.layers.{layer}.{name}"
            out_features, in_features = gemma_state[f"{path}.weight"].shape
            pairs[path] = (torch.randn(RANK, in_features, generator=gen) * 0.1,
                           torch.randn(out_features, RANK, generator=gen) * 0.1)
    return pairs


def _lora_file(tmp_path, name: str, pairs, style: str, dtype=torch.float32, norm_diff=None):
    tensors = {}
    for path, (down, up) in pairs.items():
        if style == "comfy":  # ComfyUI's LoraSave / KJNodes extractor: lora_up / lora_down + alpha
            stem, down_key, up_key = COMFY + path, ".lora_down.weight", ".lora_up.weight"
        elif style == "peft":
            stem, down_key, up_key = "base_model.model." + path, ".lora_A.weight", ".lora_B.weight"
        elif style == "hf_conditional":  # Gemma3ForConditionalGeneration names (transformers < 4.52)
            stem, down_key, up_key = "language_model." + path, ".lora_A.weight", ".lora_B.weight"
        else:  # kohya
            stem, down_key, up_key = "lora_te_" + path.replace(".", "_"), ".lora_down.weight", ".lora_up.weight"
        tensors |= {stem + down_key: down.to(dtype), stem + up_key: up.to(dtype), f"{stem}.alpha": torch.tensor(ALPHA)}
    if norm_diff is not None:
        tensors[COMFY + NORM.removesuffix(".weight") + ".diff"] = norm_diff
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


def _hidden(loaded, text="a red cat runs at night"):
    ids, mask = loaded.tokenizer([text])
    with torch.no_grad():
        return torch.stack(loaded.encoder(ids, mask))


def test_a_comfyui_gemma_lora_changes_gemma_as_the_merged_weights_do(tmp_path, gemma_file, gemma_state):
    pairs = _lora_pairs(gemma_state)
    norm_diff = torch.randn(64, generator=torch.Generator().manual_seed(3)) * 0.05
    lora = _lora_file(tmp_path, "gemma-3-12b-it-abliterated_lora_rank4.safetensors", pairs, "comfy",
                      norm_diff=norm_diff)
    check_text_encoder_lora(lora, gemma_file)
    transform, report = gemma_lora_transform(gemma_file, [(lora, STRENGTH)], strict=True)
    assert len(report.applied[str(lora)]) == len(pairs) + 1 and not report.unmatched
    fused = load_gemma(gemma_file, dtype=torch.float32, transform=transform)

    merged_state = dict(gemma_state)
    for path, (down, up) in pairs.items():
        merged_state[f"{path}.weight"] = gemma_state[f"{path}.weight"] + (STRENGTH * ALPHA / RANK) * (up @ down)
    merged_state[NORM] = gemma_state[NORM] + STRENGTH * norm_diff
    merged = load_gemma(_write_gemma(tmp_path / "merged", merged_state), dtype=torch.float32)
    plain = load_gemma(gemma_file, dtype=torch.float32)

    ours, theirs = fused.encoder.state_dict(), merged.encoder.state_dict()
    for key, value in theirs.items():
        tolerance = 1e-6 * max((value - gemma_state[key]).abs().max().item(), 1e-30)
        assert (ours[key] - value).abs().max() <= tolerance, key
    assert torch.equal(ours[NORM], theirs[NORM])
    hidden, expected, before = _hidden(fused), _hidden(merged), _hidden(plain)
    assert (hidden - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert (hidden - before).abs().max() > 100 * (hidden - expected).abs().max()  # the LoRA does change them


@pytest.mark.parametrize("style", ["peft", "hf_conditional", "kohya"])
def test_peft_hf_and_kohya_gemma_namings_fuse_the_same_weights(tmp_path, gemma_file, gemma_state, style):
    pairs = _lora_pairs(gemma_state)
    comfy = _lora_file(tmp_path, "comfy.safetensors", pairs, "comfy")
    other = _lora_file(tmp_path, f"{style}.safetensors", pairs, style)
    loads = []
    for lora in (comfy, other):
        transform, report = gemma_lora_transform(gemma_file, [(lora, STRENGTH)], strict=True)
        assert len(report.applied[str(lora)]) == len(pairs)
        loads.append(load_gemma(gemma_file, dtype=torch.float32, transform=transform).encoder.state_dict())
    assert all(torch.equal(loads[0][k], loads[1][k]) for k in loads[0])


def test_an_fp8_gemma_lora_on_a_bf16_gemma(tmp_path, gemma_file, gemma_state):
    pairs = _lora_pairs(gemma_state)
    lora = _lora_file(tmp_path, "gemma_lora_fp8.safetensors", pairs, "comfy", dtype=torch.float8_e4m3fn)
    transform, _ = gemma_lora_transform(gemma_file, [(lora, STRENGTH)])
    state = load_gemma(gemma_file, dtype=torch.bfloat16, transform=transform).encoder.state_dict()
    for path, (down, up) in pairs.items():
        down8, up8 = down.to(torch.float8_e4m3fn).float(), up.to(torch.float8_e4m3fn).float()
        weight = gemma_state[f"{path}.weight"]  # the stored (float32) weight, rounded to bf16 once, after the LoRA
        assert torch.equal(state[f"{path}.weight"], (weight + (STRENGTH * ALPHA / RANK) * (up8 @ down8)).bfloat16())


def test_transformer_and_foreign_loras_are_refused_for_the_text_encoder(tiny_set, tmp_path, gemma_file):
    with pytest.raises(LoraMismatchError) as info:
        check_text_encoder_lora(tiny_set.lora, gemma_file)
    message = str(info.value)
    assert message.startswith(f"{tiny_set.lora}: is a transformer LoRA (LoRA patches in the ComfyUI "
                              "(diffusion_model.*) naming, e.g. diffusion_model.transformer_blocks.")
    assert message.endswith("not a LoRA for the text-encoder (Gemma). Apply it with the AIPROD LoRA Loader (on the "
                            "model).")
    big = tmp_path / "gemma_12b_lora.safetensors"  # Gemma-3 12B sizes (hidden 3840) against the tiny Gemma
    save_file({f"{COMFY}model.layers.0.self_attn.q_proj.lora_down.weight": torch.zeros(4, 3840),
               f"{COMFY}model.layers.0.self_attn.q_proj.lora_up.weight": torch.zeros(4096, 4)}, str(big))
    with pytest.raises(LoraMismatchError) as info:
        check_text_encoder_lora(big, gemma_file)
    assert str(info.value) == (
        f"{big}: does not fit the Gemma text encoder {gemma_file}: none of its 1 LoRA keys match a tensor of it "
        f"(first: {COMFY}model.layers.0.self_attn.q_proj.lora_down.weight; LoRA patches in the ComfyUI text encoder "
        "(text_encoders.gemma3_12b.transformer.*) naming). It is probably a LoRA for another model or model "
        "version; use a LoRA trained for Gemma-3 12B (the LTX-2 text encoder).")


def test_a_lora_with_both_parts_applies_each_part_at_its_own_node(tiny_set, tmp_path, gemma_file, gemma_state):
    """ComfyUI's LoraSave writes the model and the text encoder into one file: the transformer load applies the
    diffusion_model.* part, the Gemma load the text_encoders.* part; each reports the other part by name."""
    from safetensors.torch import load_file

    from aiprod.loaders.lora_apply import load_component_with_loras

    pairs = _lora_pairs(gemma_state)
    gemma_only = _lora_file(tmp_path, "te.safetensors", pairs, "comfy")
    both = tmp_path / "both.safetensors"
    save_file({**load_file(str(tiny_set.lora)), **load_file(str(gemma_only))}, str(both))
    transformer = load_component_with_loras(tiny_set.ltx2, "transformer", [(both, 1.0)], strict=True)
    report = transformer.lora_report
    assert len(report.applied[str(both)]) == len(load_file(str(tiny_set.lora))) // 2
    assert len(report.other_model[str(both)]) == len(pairs)
    transform, te_report = gemma_lora_transform(gemma_file, [(both, 1.0)], strict=True)
    assert len(te_report.applied[str(both)]) == len(pairs)
    assert all(k.startswith("diffusion_model.") for k in te_report.other_model[str(both)])
    fused = load_gemma(gemma_file, dtype=torch.float32, transform=transform).encoder.state_dict()
    transform, _ = gemma_lora_transform(gemma_file, [(gemma_only, 1.0)])
    alone = load_gemma(gemma_file, dtype=torch.float32, transform=transform).encoder.state_dict()
    assert all(torch.equal(fused[k], alone[k]) for k in alone)


def test_a_gemma4_text_encoder_refuses_text_encoder_loras(tmp_path):
    from support import tiny_gemma4 as tg

    from aiprod.loaders.text_encoder_generation import load_text_encoder

    folder = tg.write_hf_folder(tmp_path / "gemma4-12b-ltx", tg.build_model())
    lora = _lora_file(tmp_path, "gemma3_lora.safetensors", {"model.layers.0.self_attn.q_proj": (
        torch.zeros(RANK, 64), torch.zeros(64, RANK))}, "comfy")
    with pytest.raises(LoraMismatchError) as info:
        check_text_encoder_lora(lora, folder)
    assert str(info.value) == (f"{folder}: is a Gemma 4 (LTX-2.5) text encoder; text-encoder LoRAs apply to Gemma 3 "
                               "(the LTX-2 / LTX-2.3 text encoder) only.")
    with pytest.raises(ValueError, match="text-encoder LoRAs apply to Gemma 3"):
        load_text_encoder(folder, transform=lambda key, value, target: value)
