"""The demo model set (scripts/demo_models.py): official formats, strict loads through our loaders, sane forwards,
deterministic bytes, idempotent writes, a round-tripping tokenizer."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from support.demo_fixtures import load_demo_models_module

from aiprod.aiprod_core.audio_vae import decode_latent
from aiprod.aiprod_core.text_encoder import encode_prompts
from aiprod.aiprod_core.transformer import ModalityInput
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.detect import describe_file
from aiprod.loaders.lora import match_loras, read_lora
from aiprod.loaders.lora_apply import load_component_with_loras
from aiprod.loaders.safetensors_header import read_header
from aiprod.loaders.text_encoder_files import load_gemma

CHECKPOINT_COMPONENTS = ("transformer", "text_embeddings", "video_encoder", "video_decoder", "audio_encoder",
                         "audio_decoder", "vocoder")
PROMPT = "A red fox runs through snow at dawn, camera tracking left; birds sing. (4K, 25 fps!)"
SEQ_LEN = 32


@pytest.fixture(scope="module")
def dm():
    return load_demo_models_module()


def _assert_sane(name: str, tensor: torch.Tensor) -> None:
    assert torch.isfinite(tensor).all(), f"{name}: non-finite values"
    assert tensor.float().std() > 1e-3, f"{name}: (nearly) constant output, std {tensor.float().std():.2e}"


def test_every_file_loads_strictly_through_our_loaders(demo_models, dm) -> None:
    header = read_header(demo_models.checkpoint)
    assert header.metadata["model_version"] == "2.3.0"
    assert set(json.loads(header.metadata["config"])) == {"transformer", "vae", "audio_vae", "vocoder"}
    assert {info.dtype for info in header.tensors.values()} == {"BF16"}
    prefixes = ("model.diffusion_model.", "vae.", "audio_vae.", "vocoder.", "text_embedding_projection.")
    assert all(key.startswith(prefixes) for key in header.tensors)
    assert any(k.startswith("model.diffusion_model.video_embeddings_connector.") for k in header.tensors)
    assert any(k.startswith("model.diffusion_model.audio_embeddings_connector.") for k in header.tensors)
    description = describe_file(demo_models.checkpoint)
    assert description.kind == "single-file checkpoint" and "2.3" in description.generation
    taken: set[str] = set()
    for component in CHECKPOINT_COMPONENTS:  # load_component checks every key and shape (strict)
        loaded = load_component(demo_models.checkpoint, component, dtype=torch.float32)
        assert not any(p.is_meta for p in loaded.module.parameters())
        taken |= _file_keys(demo_models.checkpoint, component)
    assert taken == set(header.tensors), f"tensors no component takes: {sorted(set(header.tensors) - taken)[:5]}"
    upsampler = load_component(demo_models.upsampler, "latent_upsampler", dtype=torch.float32)
    assert upsampler.module.config.spatial_scale == 2.0
    gemma = load_gemma(demo_models.text_encoder_dir, dtype=torch.float32, max_length=SEQ_LEN)
    assert (gemma.encoder.hidden_size, gemma.encoder.num_layers) == (dm.GEMMA_HIDDEN, dm.GEMMA_LAYERS)
    assert gemma.layout == "GEMMA_CONDITIONAL_GENERATION_MAP"
    single = load_gemma(demo_models.text_encoder_weights, dtype=torch.float32, max_length=SEQ_LEN)  # file + beside
    assert single.files.config_source.endswith("config.json")
    loras = [(read_lora(demo_models.distilled_lora), 1.0), (read_lora(demo_models.ic_lora), 1.0)]
    assert loras[1][0].reference_downscale_factor == 2 and loras[0][0].reference_downscale_factor is None
    assert all(lora.formats == ("AIPRODV_LORA_COMFY_RENAMING_MAP",) and not lora.orphans for lora, _ in loras)
    match = match_loras(loras, demo_models.checkpoint, header.tensors)
    assert all(not unmatched for unmatched in match.unmatched.values())
    fused = load_component_with_loras(demo_models.checkpoint, "transformer", loras, dtype=torch.float32, strict=True)
    assert sum(len(keys) for keys in fused.lora_report.applied.values()) == 2 * len(loras[0][0].pairs)


def _file_keys(path, component: str) -> set[str]:
    from aiprod.loaders.component_loader import plan_load

    return set(plan_load(path, component).keys.values())


def _video_positions(frames: int, height: int, width: int, fps: float = 25.0) -> torch.Tensor:
    """(1, 3, T, 2) [start, end) of each latent token: time in seconds, y / x in pixels (8 x 32 x 32 factors)."""
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    starts = torch.stack([f.flatten() * 8 / fps, h.flatten() * 32.0, w.flatten() * 32.0])  # (3, T)
    ends = starts + torch.tensor([8 / fps, 32.0, 32.0])[:, None]
    return torch.stack([starts, ends], dim=-1)[None]


@torch.no_grad()
def test_each_component_forward_is_finite_and_not_constant(demo_models) -> None:
    ckpt = demo_models.checkpoint

    def load(component: str) -> torch.nn.Module:
        return load_component(ckpt, component, dtype=torch.float32).module

    gemma = load_gemma(demo_models.text_encoder_dir, dtype=torch.float32, max_length=SEQ_LEN)
    text = encode_prompts([PROMPT], gemma.tokenizer, gemma.encoder, load("text_embeddings"))
    _assert_sane("text video context", text.video)
    _assert_sane("text audio context", text.audio)
    gen = torch.Generator().manual_seed(0)
    video = torch.rand((1, 3, 9, 64, 64), generator=gen) * 2 - 1  # (B, C, F, H, W) pixels in [-1, 1]
    latent = load("video_encoder")(video)  # (1, 128, 2, 2, 2)
    _assert_sane("video encoder", latent)
    _assert_sane("video decoder", load("video_decoder")(latent))
    upsampled = load_component(demo_models.upsampler, "latent_upsampler", dtype=torch.float32).module(latent)
    assert upsampled.shape == (1, 128, 2, 4, 4)
    _assert_sane("upsampler", upsampled)
    mel = torch.randn((1, 2, 40, 64), generator=gen) - 4.0  # (B, 2, T, mel bins) log-mel
    audio_latent = load("audio_encoder")(mel)  # (1, 8, T', 16)
    _assert_sane("audio encoder", audio_latent)
    waveform = decode_latent(audio_latent, load("audio_decoder"), load("vocoder"))  # (1, 2, samples) at 48 kHz
    _assert_sane("vocoder", waveform)
    peak = waveform.abs().max().item()
    assert peak < 0.95, f"vocoder output clips or nearly does (peak {peak:.3f})"
    _assert_sane("transformer", _transformer_velocity(load("transformer"), latent, audio_latent, text))


def _transformer_velocity(model, latent, audio_latent, text) -> torch.Tensor:
    batch, channels, frames, height, width = latent.shape  # (B, C, F, H, W)
    tokens = latent.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels)  # (B, T, C)
    audio_tokens = audio_latent.permute(0, 2, 1, 3).reshape(batch, audio_latent.shape[2], -1)  # (B, T', 8 x 16)
    audio_starts = torch.arange(audio_tokens.shape[1]) * 0.04
    audio_positions = torch.stack([audio_starts, audio_starts + 0.04], dim=-1)[None, None]  # (1, 1, T', 2)
    sigma = torch.tensor([0.7])
    video_in = ModalityInput(tokens, sigma, sigma.expand(batch, tokens.shape[1]),
                             _video_positions(frames, height, width), text.video, text.mask)
    audio_in = ModalityInput(audio_tokens, sigma, sigma.expand(batch, audio_tokens.shape[1]), audio_positions,
                             text.audio, text.mask)
    out = model(video_in, audio_in)
    _assert_sane("transformer audio", out.audio)
    return out.video


@torch.no_grad()
def test_distilled_lora_changes_the_transformer(demo_models) -> None:
    base = load_component(demo_models.checkpoint, "transformer", dtype=torch.float32).module
    fused = load_component_with_loras(demo_models.checkpoint, "transformer", [(demo_models.distilled_lora, 1.0)],
                                      dtype=torch.float32, strict=True).module
    name = "transformer_blocks.0.attn1.to_q.weight"
    weight, delta = base.state_dict()[name], fused.state_dict()[name] - base.state_dict()[name]
    ratio = (delta.norm() / weight.norm()).item()
    assert 0.01 < ratio < 0.5, f"distilled LoRA changes {name} by {ratio:.3f} of its norm"


def test_tokenizer_round_trips_and_pads_left(demo_models, dm) -> None:
    gemma = load_gemma(demo_models.text_encoder_dir, dtype=torch.float32, max_length=SEQ_LEN)
    hf = gemma.tokenizer.tokenizer
    ids = hf(PROMPT, add_special_tokens=False).input_ids
    assert hf.decode(ids) == PROMPT
    assert max(ids) < dm.GEMMA_VOCAB_SIZE and hf.unk_token_id not in ids
    assert (hf.pad_token_id, hf.eos_token_id, hf.bos_token_id) == (0, 1, 2)
    input_ids, mask = gemma.tokenizer(["a cat"])
    assert input_ids.shape == (1, SEQ_LEN) and mask[0, -6:].all() and not mask[0, :-6].any()  # <bos> + 5 bytes
    assert input_ids[0, -6].item() == hf.bos_token_id and (input_ids[0, :-6] == 0).all()
    chat = hf.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                                  tokenize=False, add_generation_prompt=True)
    assert chat == "<bos><start_of_turn>user\nS\n\nhi<end_of_turn>\n<start_of_turn>model\n"


def _tree_bytes(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_idempotent_writes(demo_models, dm, tmp_path) -> None:
    again = dm.write_demo_models(tmp_path / "a", seed=0)
    assert _tree_bytes(again.root) == _tree_bytes(demo_models.root)
    assert again.combos() == demo_models.combos()
    assert again.combo("checkpoint") == "aiprod-demo-ltx-2.3-tiny.safetensors"  # ComfyUI's name, file name first
    stamps = {p: p.stat().st_mtime_ns for p in again.root.rglob("*") if p.is_file() and p.name != dm.MANIFEST}
    for path in stamps:
        os.utime(path, ns=(1, 1))
    dm.write_demo_models(again.root, seed=0)  # manifest current: nothing built or written
    assert all(p.stat().st_mtime_ns == 1 for p in stamps)
    (again.root / dm.MANIFEST).unlink()
    again.ic_lora.write_bytes(b"damaged")
    dm.write_demo_models(again.root, seed=0)  # rebuilt in memory: only the damaged file is rewritten
    assert again.ic_lora.read_bytes() == demo_models.ic_lora.read_bytes()
    assert [p.name for p in stamps if p.stat().st_mtime_ns != 1] == [again.ic_lora.name]
    assert dm.lora_tensors(1, "distilled").keys() == dm.lora_tensors(0, "distilled").keys()
    assert not torch.equal(*(dm.lora_tensors(s, "distilled")["diffusion_model.transformer_blocks.0.attn1.to_q"
                                                           ".lora_B.weight"] for s in (0, 1)))


def test_configs_are_the_tiny_ltx23_configs_with_the_blocks_the_templates_name(dm) -> None:
    """One implementation of the tiny sets: the demo configs are tiny_configs' LTX-2.3 ones, with 30 transformer
    blocks so the STG blocks the templates name (28; 29 for LTX-2) exist."""
    from support import tiny_configs as tc

    expected = tc.checkpoint_config(tc.LTX23)
    expected["transformer"]["num_layers"] = 30
    assert dm.demo_checkpoint_config() == expected
    assert dm.demo_upsampler_config() == tc.upsampler_config(2.0)
    assert dm.gemma_config_json()["text_config"]["hidden_size"] == tc.TINY_GEMMA_HIDDEN_SIZE
    assert dm.gemma_config_json()["text_config"]["num_hidden_layers"] == tc.TINY_GEMMA_NUM_LAYERS


def test_example_workflows_name_official_files_the_demo_set_stands_in_for(demo_models, dm) -> None:
    """The templates and their API twins name the official LTX-2.3 files; make demo and the tests install the demo
    set under those names (`OFFICIAL_FILES`), so every model file a workflow names is installed."""
    import importlib.util

    from support.workflows import api_workflows, ui_templates

    spec = importlib.util.spec_from_file_location("aiprod_demo25_names", dm.REPO_ROOT / "scripts" /
                                                  "demo_models_ltx25.py")  # the LTX-2.5 demo set's official names
    demo25 = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(demo25)
    official = [*demo_models.install_map(), *demo25.FILES.values()]
    installed = {rel.partition("/")[2] for rel in official}
    installed |= {f"{rel.partition('/')[2]} ({rel.partition('/')[0]})" for rel in official}
    model_inputs = ("checkpoint", "gemma", "upsampler", "lora", "model_file", "vae", "audio_vae")
    named = {f"{name}:{node_id}.{key}": value for name, prompt in api_workflows().items()
             for node_id, node in prompt.items() for key, value in node["inputs"].items()
             if key in model_inputs and isinstance(value, str)}
    assert named and not {where: value for where, value in named.items() if value not in installed}
    assert not any("aiprod-demo" in value for value in named.values())  # the official names, not the demo's
    notes = [node["widgets_values"][0] for template in ui_templates().values() for node in template["nodes"]
             if node["type"] == "Note"]
    assert len(notes) == len(ui_templates())
    assert all("models/checkpoints/" in note or "models/diffusion_models/" in note for note in notes)
    for rel in demo_models.install_map().values():
        assert rel.exists(), rel
