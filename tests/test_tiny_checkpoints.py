"""The tiny fixture checkpoints are honest: the reference loads them exactly and runs them.

Every check here goes through ltx-core / ltx-pipelines' own loading path (configurator from the file's
``config`` metadata + the ComfyUI key maps + ``SingleGPUModelBuilder`` / ``ModelLedger``).
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import safetensors
import torch
from support import tiny_configs as tc
from support.reference_components import CHECKPOINT_COMPONENTS, reference_components
from support.tiny_checkpoints import (
    FILE_NAMES,
    checkpoint_metadata,
    checkpoint_state_dict,
    lora_state_dict,
    safetensors_bytes,
    upsampler_state_dict,
)

pytestmark = pytest.mark.oracle

CPU = torch.device("cpu")
CONNECTOR_PREFIXES = ("video_embeddings_connector.", "audio_embeddings_connector.")
# Tensors the reference computes instead of learning; they do not depend on the seed.
COMPUTED_BUFFERS = re.compile(r"(\.filter|\.kernel|mel_stft\.(mel_basis|stft_fn\.(forward|inverse)_basis))$")


def meta_model(configurator: type, config: dict) -> torch.nn.Module:
    with tc.tiny_gemma_feature_config(), torch.device("meta"):
        return configurator.from_config(config)


def read_file(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}


def assert_materialized(model: torch.nn.Module) -> None:
    on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not on_meta, f"left uninitialised by the reference loader: {on_meta}"


def assert_lively(name: str, tensor: torch.Tensor) -> None:
    assert torch.isfinite(tensor).all(), f"{name} has non-finite values"
    assert tensor.float().std() > 1e-3, f"{name} is (nearly) constant"


@pytest.fixture
def ledger_for(tiny_set):
    from ltx_pipelines.utils.model_ledger import ModelLedger

    def make(generation: str, upsampler=None):
        return ModelLedger(
            dtype=torch.float32,
            device=CPU,
            checkpoint_path=str(tiny_set.checkpoint(generation)),
            spatial_upsampler_path=None if upsampler is None else str(upsampler),
        )

    return make


# --------------------------------------------------------------------------------------------------------
# (a) loading: exact key sets, metadata round trip
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_checkpoint_loads_through_reference_with_exact_keys(tiny_set, generation):
    from ltx_core.loader import SafetensorsModelStateDictLoader

    path = str(tiny_set.checkpoint(generation))
    loader = SafetensorsModelStateDictLoader()
    config = loader.metadata(path)
    assert config == tc.checkpoint_config(generation) == tiny_set.configs[generation]
    file_tensors, metadata = read_file(path)
    assert metadata["model_version"] == tc.MODEL_VERSIONS[generation]
    assert {t.dtype for t in file_tensors.values()} == {torch.bfloat16}

    consumed: set[str] = set()
    for name in CHECKPOINT_COMPONENTS:
        configurator, sd_ops = reference_components()[name]
        expected = meta_model(configurator, config).state_dict()
        loaded = loader.load(path, sd_ops=sd_ops, device=CPU).sd
        assert not set(expected) - set(loaded), f"{name}: missing {sorted(set(expected) - set(loaded))}"
        unexpected = set(loaded) - set(expected)
        if name == "transformer":
            # Reference quirk: LTXV_MODEL_COMFY_RENAMING_MAP takes all of model.diffusion_model.*, which also
            # holds the text connectors (read by the embeddings processor); the strict=False load drops them.
            assert unexpected and all(key.startswith(CONNECTOR_PREFIXES) for key in unexpected)
        else:
            assert not unexpected, f"{name}: unexpected {sorted(unexpected)}"
        for key, tensor in expected.items():
            assert loaded[key].shape == tensor.shape, f"{name}.{key}"
        consumed |= {key for key in file_tensors if sd_ops.apply_to_key(key) is not None}
    assert consumed == set(file_tensors), f"keys no reference builder reads: {set(file_tensors) - consumed}"


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_text_projection_and_connectors_have_the_generation_layout(tiny_set, generation):
    keys = set(read_file(tiny_set.checkpoint(generation))[0])
    projection = {key.split(".")[1] for key in keys if key.startswith("text_embedding_projection.")}
    expected = {"aggregate_embed"} if generation == tc.LTX2 else {"video_aggregate_embed", "audio_aggregate_embed"}
    assert projection == expected
    assert any(key.startswith("model.diffusion_model.audio_embeddings_connector.") for key in keys)
    assert ("model.diffusion_model.caption_projection.linear_1.weight" in keys) == (generation == tc.LTX2)
    assert {key.split(".")[0] for key in keys} == {"model", "text_embedding_projection", "vae", "audio_vae", "vocoder"}
    assert {key.split(".")[1] for key in keys if key.startswith("model.")} == {"diffusion_model"}
    # One set of latent statistics per VAE, shared by its encoder and decoder.
    statistics = {key.rsplit(".", 1)[0] for key in keys if "per_channel_statistics" in key}
    assert statistics == {"vae.per_channel_statistics", "audio_vae.per_channel_statistics"}
    vocoder_nested = any(key.startswith("vocoder.bwe_generator.") for key in keys)
    assert vocoder_nested == (generation == tc.LTX23)


def test_model_version_selects_pipeline_params(tiny_set):
    from ltx_pipelines.utils.constants import LTX_2_3_PARAMS, LTX_2_PARAMS, detect_params

    assert detect_params(str(tiny_set.ltx2)) is LTX_2_PARAMS
    assert detect_params(str(tiny_set.ltx23)) is LTX_2_3_PARAMS


@pytest.mark.parametrize(("attr", "scale"), [("upsampler_x2", 2.0), ("upsampler_x1_5", 1.5)])
def test_upsampler_loads_and_upsamples(tiny_set, ledger_for, attr, scale):
    from ltx_core.loader import SafetensorsModelStateDictLoader
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator, upsample_video

    path = getattr(tiny_set, attr)
    config = SafetensorsModelStateDictLoader().metadata(str(path))
    assert config == tc.upsampler_config(scale)
    expected = meta_model(LatentUpsamplerConfigurator, config).state_dict()
    file_tensors, _ = read_file(path)
    assert set(file_tensors) == set(expected)
    for key, tensor in expected.items():
        assert file_tensors[key].shape == tensor.shape and file_tensors[key].dtype == torch.bfloat16, key

    ledger = ledger_for(tc.LTX23, upsampler=path)
    upsampler, encoder = ledger.spatial_upsampler(), ledger.video_encoder()
    assert_materialized(upsampler)
    latent = torch.randn(1, 128, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = upsample_video(latent, encoder, upsampler)
    assert out.shape == (1, 128, 2, int(4 * scale), int(4 * scale))
    assert_lively(attr, out)


# --------------------------------------------------------------------------------------------------------
# (b) reference forward passes on CPU in float32
# --------------------------------------------------------------------------------------------------------


def _text_contexts(ledger):
    with tc.tiny_gemma_feature_config():
        processor = ledger.gemma_embeddings_processor()
    assert_materialized(processor)
    gen = torch.Generator().manual_seed(1)
    hidden = tuple(torch.randn(1, 128, tc.TINY_GEMMA_HIDDEN_SIZE, generator=gen) for _ in range(3))
    mask = torch.zeros(1, 128, dtype=torch.int64)
    mask[:, -17:] = 1  # left padding, 17 real tokens
    with torch.no_grad():
        return processor.process_hidden_states(hidden, mask, padding_side="left")


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_reference_transformer_forward(ledger_for, generation):
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
    from ltx_core.tools import AudioLatentTools, VideoLatentTools
    from ltx_core.types import AudioLatentShape, VideoLatentShape
    from ltx_pipelines.utils.helpers import modality_from_latent_state

    ledger = ledger_for(generation)
    text = _text_contexts(ledger)
    audio_width = tc.CAPTION_CHANNELS if generation == tc.LTX2 else tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM
    assert text.video_encoding.shape == (1, 128, tc.CAPTION_CHANNELS)
    assert text.audio_encoding.shape == (1, 128, audio_width)
    assert_lively("video context", text.video_encoding)
    assert_lively("audio context", text.audio_encoding)

    transformer = ledger.transformer()
    assert_materialized(transformer)
    gen = torch.Generator().manual_seed(2)
    video_shape = VideoLatentShape(batch=1, channels=128, frames=2, height=2, width=3)
    audio_shape = AudioLatentShape(batch=1, channels=8, frames=5, mel_bins=16)
    video = VideoLatentTools(VideoLatentPatchifier(patch_size=1), video_shape, 24.0).create_initial_state(
        CPU, torch.float32, torch.randn(video_shape.to_torch_shape(), generator=gen)
    )
    audio = AudioLatentTools(AudioPatchifier(patch_size=1), audio_shape).create_initial_state(
        CPU, torch.float32, torch.randn(audio_shape.to_torch_shape(), generator=gen)
    )
    sigma = torch.tensor([0.7])
    with torch.no_grad():
        denoised_video, denoised_audio = transformer(
            video=modality_from_latent_state(video, text.video_encoding, sigma),
            audio=modality_from_latent_state(audio, text.audio_encoding, sigma),
            perturbations=None,
        )
    assert denoised_video.shape == (1, 12, 128)
    assert denoised_audio.shape == (1, 5, 128)
    for name, out, latent in (("video", denoised_video, video.latent), ("audio", denoised_audio, audio.latent)):
        assert_lively(name, out)
        assert not torch.allclose(out, latent, atol=1e-2), f"{name}: the transformer predicts zero velocity"
        assert (out[:, 0] - out[:, -1]).abs().max() > 1e-2, f"{name}: every token gets the same output"


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_reference_video_vae_decode_and_encode(ledger_for, generation):
    ledger = ledger_for(generation)
    decoder, encoder = ledger.video_decoder(), ledger.video_encoder()
    assert_materialized(decoder)
    assert_materialized(encoder)
    assert decoder.timestep_conditioning == (generation == tc.LTX2)
    latent = torch.randn(1, 128, 2, 2, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        video = decoder(latent, generator=torch.Generator().manual_seed(4))
        assert video.shape == (1, 3, 9, 64, 96)
        assert_lively("decoded video", video)
        encoded = encoder(video.clamp(-1.0, 1.0))
    assert encoded.shape == latent.shape
    assert_lively("encoded latent", encoded)


@pytest.mark.parametrize(("generation", "sample_rate"), [(tc.LTX2, 24000), (tc.LTX23, 48000)])
def test_reference_audio_decode_and_vocoder(ledger_for, generation, sample_rate):
    ledger = ledger_for(generation)
    decoder, encoder, vocoder = ledger.audio_decoder(), ledger.audio_encoder(), ledger.vocoder()
    for model in (decoder, encoder, vocoder):
        assert_materialized(model)
    latent = torch.randn(1, 8, 5, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        mel = decoder(latent)
        assert mel.shape == (1, 2, 17, 64)  # 5 latent frames -> 4 * 5 - 3 causal mel frames
        assert_lively("mel", mel)
        assert encoder(mel).shape == latent.shape
        waveform = vocoder(mel)
    assert vocoder.output_sampling_rate == sample_rate
    assert waveform.shape == (1, 2, 17 * sample_rate // 100)  # 100 mel frames per second
    assert_lively("waveform", waveform)
    assert waveform.abs().max() < 0.9, "the waveform runs into the final tanh / clamp"


# --------------------------------------------------------------------------------------------------------
# (c) determinism, (d) non-trivial tensors
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_same_seed_same_bytes_other_seed_other_weights(tiny_set, generation):
    first = checkpoint_state_dict(generation, seed=0)
    payload = safetensors_bytes(first, checkpoint_metadata(generation))
    cached = tiny_set.checkpoint(generation).read_bytes()
    assert hashlib.sha256(payload).digest() == hashlib.sha256(cached).digest()

    other = checkpoint_state_dict(generation, seed=1)
    assert set(other) == set(first)
    unchanged = {key for key in first if torch.equal(first[key], other[key])}
    assert unchanged == {key for key in first if COMPUTED_BUFFERS.search(key)}


def test_auxiliary_files_are_seeded(tiny_set):
    seeded = {
        "upsampler_x2": lambda seed: upsampler_state_dict(2.0, seed),
        "lora": lambda seed: lora_state_dict(seed, "lora"),
    }
    for name, make in seeded.items():
        cached, _ = read_file(getattr(tiny_set, name))
        again, other = make(0), make(1)
        assert all(torch.equal(cached[key], again[key]) for key in cached), name
        assert not any(torch.equal(again[k], other[k]) for k in again if not COMPUTED_BUFFERS.search(k)), name
    lora, ic_lora = read_file(tiny_set.lora)[0], read_file(tiny_set.ic_lora)[0]
    assert not any(torch.equal(lora[key], ic_lora[key]) for key in lora)


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_every_stored_tensor_is_nontrivial(tiny_set, generation):
    # No exceptions are needed: the architecture has no tensor that must be zero. Structural zeros inside a
    # tensor are fine (the STFT bases' sine rows for DC and Nyquist are identically zero).
    tensors, _ = read_file(tiny_set.checkpoint(generation))
    for key, tensor in tensors.items():
        values = tensor.float()
        assert torch.isfinite(values).all(), key
        assert values.abs().max() > 0, f"{key} is all zeros"
        if values.numel() > 1:
            assert values.std() > 0, f"{key} is constant"
        if key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight")):
            assert not torch.all(values == 1), f"{key} is the identity"
        if key.endswith("timestep_scale_multiplier"):
            assert values.item() != 1000.0, f"{key} still has its constructor value"
        if key.endswith("std-of-means"):
            assert values.min() > 0, key
    mel_basis = [value for key, value in tensors.items() if key.endswith("mel_stft.mel_basis")]
    assert len(mel_basis) == (generation == tc.LTX23)
    for basis in mel_basis:  # a real slaney filterbank: non-negative triangles, every filter non-empty
        assert basis.min() >= 0 and (basis.float().sum(dim=1) > 0).all()


# --------------------------------------------------------------------------------------------------------
# (e) LoRAs
# --------------------------------------------------------------------------------------------------------

LORA_KEY = re.compile(r"^diffusion_model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_lora_keys_name_real_transformer_modules(tiny_set, generation):
    from ltx_core.model.transformer import LTXModelConfigurator

    model = meta_model(LTXModelConfigurator, tc.checkpoint_config(generation))
    for path in (tiny_set.lora, tiny_set.ic_lora):
        tensors, _ = read_file(path)
        modules: dict[str, set[str]] = {}
        for key, tensor in tensors.items():
            match = LORA_KEY.match(key)
            assert match, key
            module = model.get_submodule(match["module"])
            assert isinstance(module, torch.nn.Linear), key
            expected = (
                (tc.LORA_RANK, module.in_features) if match["part"] == "A" else (module.out_features, tc.LORA_RANK)
            )
            assert tuple(tensor.shape) == expected, key
            assert tensor.dtype == torch.bfloat16
            modules.setdefault(match["module"], set()).add(match["part"])
        assert all(parts == {"A", "B"} for parts in modules.values())
        assert len(modules) == tc.NUM_LAYERS * len(tc.LORA_ATTENTIONS) * len(tc.LORA_PROJECTIONS)


def test_lora_fuses_through_reference_builder(tiny_set):
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, SingleGPUModelBuilder
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator

    builder = SingleGPUModelBuilder(
        model_class_configurator=LTXModelConfigurator,
        model_path=str(tiny_set.ltx23),
        model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
    )
    fused = builder.lora(str(tiny_set.lora), 0.5, LTXV_LORA_COMFY_RENAMING_MAP).build(device=CPU, dtype=torch.float32)
    assert_materialized(fused)
    base, _ = read_file(tiny_set.ltx23)
    lora, _ = read_file(tiny_set.lora)
    target = "transformer_blocks.1.audio_to_video_attn.to_v"
    delta = (lora[f"diffusion_model.{target}.lora_B.weight"] * 0.5) @ lora[f"diffusion_model.{target}.lora_A.weight"]
    expected = base[f"model.diffusion_model.{target}.weight"].float() + delta.float()
    torch.testing.assert_close(fused.get_submodule(target).weight, expected, rtol=0, atol=1e-6)
    assert delta.float().abs().max() > 1e-2, "the LoRA delta is negligible"


def test_ic_lora_carries_reference_downscale_factor(tiny_set):
    from ltx_pipelines.ic_lora import _read_lora_reference_downscale_factor

    assert _read_lora_reference_downscale_factor(str(tiny_set.ic_lora)) == 2
    assert _read_lora_reference_downscale_factor(str(tiny_set.lora)) == 1


def test_set_uses_comfyui_model_folders(tiny_set):
    for name, relative in FILE_NAMES.items():
        path = getattr(tiny_set, name)
        assert path == tiny_set.root / relative and path.is_file()
        assert path.parent.name in ("checkpoints", "latent_upscale_models", "loras")
    metadata = read_file(tiny_set.upsampler_x1_5)[1]
    assert json.loads(metadata["config"])["rational_resampler"] is True
