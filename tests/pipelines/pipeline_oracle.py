"""Shared parity machinery of the pipeline tests: the same tiny modules as ltx-core references and as ours, and
the reference pipelines' flows driven in float32 through ``ltx_pipelines.utils.helpers`` (the pipeline classes
hard-code bf16), step for step as each class's ``__call__`` does.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image
from support import tiny_configs as tc
from support.tiny_checkpoints import (
    build_reference_module,
    checkpoint_components,
    init_module,
    lora_state_dict,
)

from aiprod.aiprod_core.audio_vae import AudioDecoder, AudioVAEConfig, VocoderConfig, build_vocoder
from aiprod.aiprod_core.pipelines import GuidedSampling, PipelineModels, PromptContexts
from aiprod.aiprod_core.sampling import StreamGuider
from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig
from aiprod.aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig
from aiprod.aiprod_core.video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig

logger = logging.getLogger(__name__)

F32 = torch.float32
CPU = torch.device("cpu")
FPS = 24.0
CONTEXT_TOKENS = 6
LATENT_ATOL = 1e-4  # acceptance bar: final latents
DECODED_ATOL = 1e-3  # acceptance bar: decoded frames (in [0, 1]) and waveform


# --------------------------------------------------------------------------------------------------------
# Modules: reference (ltx-core, honest seeded init) and ours (same state dicts, strict)
# --------------------------------------------------------------------------------------------------------


def _fused_copy(transformer: torch.nn.Module, kind: str) -> torch.nn.Module:
    """The transformer with a tiny LoRA fused in float32 (W += B @ A): a stand-in for a LoRA-fused model."""
    fused = copy.deepcopy(transformer)
    tensors = lora_state_dict(seed=3, kind=kind)
    with torch.no_grad():
        for key, down in tensors.items():
            if not key.endswith(".lora_A.weight"):
                continue
            path = key[len("diffusion_model.") : -len(".lora_A.weight")]
            up = tensors[key.replace("lora_A", "lora_B")]
            fused.get_submodule(path).weight.add_(up.float() @ down.float())
    return fused.eval()


@dataclass(frozen=True)
class Pair:
    """Reference modules (namespace) and our `PipelineModels` holding the same weights."""

    ref: SimpleNamespace
    ours: PipelineModels


def _our_transformer(reference: torch.nn.Module, config: dict[str, Any]) -> AVTransformer:
    ours = AVTransformer(TransformerConfig.from_metadata(config), device="meta")
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return ours.eval()


def _strict_copy(module: torch.nn.Module, reference: torch.nn.Module) -> torch.nn.Module:
    module.load_state_dict(reference.state_dict(), strict=True)
    return module.eval()


@functools.cache
def tiny_pair(generation: str) -> Pair:
    """Reference modules of the tiny checkpoint of ``generation`` and ours, with stage-2 / IC-LoRA variants."""
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    config = tc.checkpoint_config(generation)
    ref: dict[str, torch.nn.Module] = {}
    for name in ("transformer", "video_encoder", "video_decoder", "audio_decoder", "vocoder"):
        configurator, to_file_key = checkpoint_components()[name]
        module = build_reference_module(configurator, config)
        ref[name] = init_module(module, 0, to_file_key, config).float().eval()
    up_config = tc.upsampler_config(2.0)
    upsampler = build_reference_module(LatentUpsamplerConfigurator, up_config)
    ref["upsampler"] = init_module(upsampler, 0, lambda k: f"x2:{k}", up_config).float().eval()
    ref["refiner"] = _fused_copy(ref["transformer"], "lora")
    ref["ic"] = _fused_copy(ref["transformer"], "ic_lora")

    vae = VideoVAEConfig.from_metadata(config)
    ours = PipelineModels(
        transformer=_our_transformer(ref["transformer"], config),
        video_encoder=_strict_copy(VideoEncoder(vae), ref["video_encoder"]),
        video_decoder=_strict_copy(VideoDecoder(vae), ref["video_decoder"]),
        audio_decoder=_strict_copy(AudioDecoder(AudioVAEConfig.from_metadata(config)), ref["audio_decoder"]),
        vocoder=_strict_copy(build_vocoder(VocoderConfig.from_metadata(config)), ref["vocoder"]),
        upsampler=_strict_copy(LatentUpsampler(LatentUpsamplerConfig.from_metadata(up_config)), ref["upsampler"]),
        refiner=_our_transformer(ref["refiner"], config),
        dtype=F32,
    )
    ours_ic = _our_transformer(ref["ic"], config)
    return Pair(SimpleNamespace(**ref, ours_ic=ours_ic), ours)


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def tiny_25_transformer(seed: int = 0) -> AVTransformer:
    """Our transformer at the tiny LTX-2.3 sizes with LTX-2.5's switches (bias-free FF, the keyframe embedding),
    random weights (the embedding at 10x the others' scale, so that the marker shows in the output)."""
    config = tc.checkpoint_config(tc.LTX23)["transformer"]
    config = {**config, "ff_bias": False, "audio_ff_bias": False, "use_keyframes_abs_pos_embedding": True}
    model = AVTransformer(TransformerConfig.from_metadata({"transformer": config}))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.5 if name == "keyframes_abs_pos_embedding" else 0.05
            parameter.copy_(torch.randn(parameter.shape, generator=gen) * scale)
    return model.eval()


def diffusers_dfr_layout(base: torch.Tensor, frames: int, fps: float, **inputs: Any) -> tuple[Any, ...]:
    """diffusers' ``LTX2DFRPipeline.prepare_latents`` on already-normalised latents ``base`` (B, C, F', H', W'),
    noise scale 0 (so the result is the layout), with its own rotary coordinate builder and a 1 x 1 patch;
    ``inputs``: its conditioning arguments (``condition_latents``, ``keyframe_latents``, ``slot_frame_indices``,
    ``reference_latents``, ...)."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr import LTX2DFRPipeline

    pipe = SimpleNamespace(vae_spatial_compression_ratio=32, vae_temporal_compression_ratio=8,
                           transformer_spatial_patch_size=1, transformer_temporal_patch_size=1,
                           transformer=SimpleNamespace(rope=LTX2AudioVideoRotaryPosEmbed(dim=32)))
    pipe._pack_latents = LTX2DFRPipeline._pack_latents
    pipe._maybe_normalize_video_latents = lambda latents, normalized: latents
    pipe._prepare_keyframe_coords = functools.partial(LTX2DFRPipeline._prepare_keyframe_coords, pipe)
    _, height, width = base.shape[2:]
    return LTX2DFRPipeline.prepare_latents(
        pipe, height=height * 32, width=width * 32, num_frames=frames, frame_rate=fps, noise_scale=0.0,
        dtype=torch.float32, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), latents=base,
        **inputs,
    )


def contexts(generation: str, seed: int = 9) -> PromptContexts:
    """Positive and negative contexts as the text path hands them to the transformer (after the connectors)."""
    gen = torch.Generator().manual_seed(seed)
    ltx2 = generation == tc.LTX2
    video_dim = tc.CAPTION_CHANNELS if ltx2 else tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM
    audio_dim = tc.CAPTION_CHANNELS if ltx2 else tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM
    tensors = [torch.randn(1, CONTEXT_TOKENS, dim, generator=gen) for dim in (video_dim, audio_dim) * 2]
    return PromptContexts.from_tensors(*tensors)


GEMMA_TOKENS = 128  # a multiple of the connectors' 128 learnable registers (the tokenizer pads to 1024)


def _gemma_hidden_states(seed: int, valid: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """L = layers + 1 Gemma hidden states (1, S, D) with per-layer scale / offset, and a left-padded mask (1, S)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (1, GEMMA_TOKENS, tc.TINY_GEMMA_HIDDEN_SIZE)
    hidden = tuple(torch.randn(shape, generator=gen) * (1.0 + layer) + 0.3 * layer
                   for layer in range(tc.TINY_GEMMA_NUM_LAYERS + 1))  # fmt: skip
    mask = (torch.arange(GEMMA_TOKENS) >= GEMMA_TOKENS - valid).to(torch.int64)[None]
    return hidden, mask


@functools.cache
def gemma_contexts(generation: str) -> tuple[PromptContexts, PromptContexts]:
    """(ours, reference): the same Gemma hidden states through our embeddings processor (the `prompt_contexts`
    stage) and through ltx-core's ``EmbeddingsProcessor.process_hidden_states``, weights shared."""
    from ltx_core.text_encoders.gemma import EmbeddingsProcessorConfigurator

    from aiprod.aiprod_core.pipelines import LocalHost, prompt_contexts
    from aiprod.aiprod_core.text_encoder import TextEmbeddingsConfig, TextEmbeddingsProcessor

    config = tc.checkpoint_config(generation)
    configurator, to_file_key = checkpoint_components()["embeddings_processor"]
    reference = build_reference_module(EmbeddingsProcessorConfigurator, config)
    reference = init_module(reference, 0, to_file_key, config).float().eval()
    ours = TextEmbeddingsProcessor(TextEmbeddingsConfig.from_metadata(config), tc.TINY_GEMMA_HIDDEN_SIZE,
                                   tc.TINY_GEMMA_NUM_LAYERS, device="meta")  # fmt: skip
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    prompts = (_gemma_hidden_states(1, 21), _gemma_hidden_states(2, 9))
    with torch.no_grad():
        ref = [reference.process_hidden_states(hidden, mask) for hidden, mask in prompts]
        mine = prompt_contexts(ours.eval(), prompts[0], prompts[1], LocalHost())
    ref_contexts = PromptContexts.from_tensors(
        ref[0].video_encoding, ref[0].audio_encoding, ref[1].video_encoding, ref[1].audio_encoding
    )
    return mine, ref_contexts


def guided(generation: str, steps: int = 2) -> GuidedSampling:
    """CFG + STG + modality isolation + rescale on both streams (every guided pass is exercised)."""
    block = 1 if generation == tc.LTX2 else 0
    return GuidedSampling(
        steps,
        StreamGuider.multimodal(3.0, 1.0, (block,), 0.7, 3.0),
        StreamGuider.multimodal(7.0, 1.0, (1 - block,), 0.7, 3.0),
    )


def reference_guider_params(generation: str) -> tuple[Any, Any]:
    from ltx_core.components.guiders import MultiModalGuiderParams

    block = 1 if generation == tc.LTX2 else 0
    video = MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0,
                                   stg_blocks=[block])  # fmt: skip
    audio = MultiModalGuiderParams(cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0,
                                   stg_blocks=[1 - block])  # fmt: skip
    return video, audio


def image_u8(seed: int, height: int = 48, width: int = 80) -> np.ndarray:
    """A smooth RGB uint8 test image of a size the pipelines must resize and crop."""
    gen = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    phases = torch.rand(3, generator=gen) * 6.0
    channels = [0.5 + 0.4 * torch.sin(4.0 * x + 3.0 * y + p) for p in phases]
    return (torch.stack(channels, dim=-1) * 255).round().to(torch.uint8).numpy()


def write_png(array: np.ndarray, path: Path) -> str:
    Image.fromarray(array).save(path)
    return str(path)


# --------------------------------------------------------------------------------------------------------
# The reference flow (ltx_pipelines 1.0.0), float32
# --------------------------------------------------------------------------------------------------------


def pixel_shape(width: int, height: int, frames: int) -> Any:
    from ltx_core.types import VideoPixelShape

    return VideoPixelShape(batch=1, frames=frames, width=width, height=height, fps=FPS)


def ref_guided_fn(model: Any, ctx: PromptContexts, generation: str) -> Any:
    from ltx_core.components.guiders import create_multimodal_guider_factory
    from ltx_pipelines.utils.helpers import multi_modal_guider_factory_denoising_func

    video_params, audio_params = reference_guider_params(generation)
    return multi_modal_guider_factory_denoising_func(
        video_guider_factory=create_multimodal_guider_factory(params=video_params, negative_context=ctx.negative.video),
        audio_guider_factory=create_multimodal_guider_factory(params=audio_params, negative_context=ctx.negative.audio),
        v_context=ctx.positive.video,
        a_context=ctx.positive.audio,
        transformer=model,
    )


def ref_simple_fn(model: Any, ctx: PromptContexts) -> Any:
    from ltx_pipelines.utils.helpers import simple_denoising_func

    return simple_denoising_func(video_context=ctx.positive.video, audio_context=ctx.positive.audio, transformer=model)


def ref_stage(
    shape: Any,
    conditionings: list[Any],
    noiser: Any,
    sigmas: torch.Tensor,
    denoise_fn: Any,
    noise_scale: float | torch.Tensor = 1.0,
    video: torch.Tensor | None = None,
    audio: torch.Tensor | None = None,
) -> tuple[Any, Any]:
    """``denoise_audio_video`` with an Euler loop over ``denoise_fn``, as every pipeline class calls it."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils.helpers import denoise_audio_video
    from ltx_pipelines.utils.samplers import euler_denoising_loop
    from ltx_pipelines.utils.types import PipelineComponents

    def loop(sigmas: torch.Tensor, video_state: Any, audio_state: Any, stepper: Any) -> tuple[Any, Any]:
        return euler_denoising_loop(sigmas, video_state, audio_state, stepper, denoise_fn)

    return denoise_audio_video(
        output_shape=shape, conditionings=conditionings, noiser=noiser, sigmas=sigmas, stepper=EulerDiffusionStep(),
        denoising_loop_fn=loop, components=PipelineComponents(dtype=F32, device=CPU), dtype=F32, device=CPU,
        noise_scale=noise_scale, initial_video_latent=video, initial_audio_latent=audio,
    )  # fmt: skip


def ref_images(inputs: list[Any], width: int, height: int, encoder: Any, keyframes: bool = False) -> list[Any]:
    from ltx_pipelines.utils.helpers import (
        combined_image_conditionings,
        image_conditionings_by_adding_guiding_latent,
    )

    build = image_conditionings_by_adding_guiding_latent if keyframes else combined_image_conditionings
    return build(images=inputs, height=height, width=width, video_encoder=encoder, dtype=F32, device=CPU)


def ref_two_stage(
    pair: Pair,
    shape: tuple[int, int, int],
    stage_1: tuple[Any, torch.Tensor, list[Any]],
    stage_2_model: Any,
    ctx: PromptContexts,
    images: list[Any],
    generator: torch.Generator,
    keyframes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1 (given fn, sigmas, conditionings) at half size -> ``upsample_video`` -> stage 2 -> latents."""
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.model.upsampler import upsample_video
    from ltx_pipelines.utils.constants import STAGE_2_DISTILLED_SIGMA_VALUES

    width, height, frames = shape
    noiser = GaussianNoiser(generator=generator)
    denoise_fn, sigmas, conditionings = stage_1
    video, audio = ref_stage(pixel_shape(width // 2, height // 2, frames), conditionings, noiser, sigmas, denoise_fn)
    upscaled = upsample_video(latent=video.latent[:1], video_encoder=pair.ref.video_encoder,
                              upsampler=pair.ref.upsampler)  # fmt: skip
    stage_2_conditionings = ref_images(images, width, height, pair.ref.video_encoder, keyframes)
    distilled = torch.Tensor(STAGE_2_DISTILLED_SIGMA_VALUES)
    video, audio = ref_stage(
        pixel_shape(width, height, frames), stage_2_conditionings, noiser, distilled,
        ref_simple_fn(stage_2_model, ctx), noise_scale=distilled[0], video=upscaled, audio=audio.latent,
    )  # fmt: skip
    return video.latent, audio.latent


def ref_decode(pair: Pair, video: torch.Tensor, audio: torch.Tensor, generator: torch.Generator) -> tuple[Any, ...]:
    """``decode_video`` without tiling stopped before its uint8 cast (frames in [0, 1]) and ``decode_audio``."""
    from ltx_core.model.audio_vae import decode_audio

    decoded = pair.ref.video_decoder(video, generator=generator)
    frames = ((decoded + 1.0) / 2.0).clamp(0.0, 1.0)[0].permute(1, 2, 3, 0)  # (F, H, W, 3)
    sound = decode_audio(audio, pair.ref.audio_decoder, pair.ref.vocoder)
    return frames, sound.waveform, sound.sampling_rate


# --------------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------------


def max_diff(ours: torch.Tensor, ref: torch.Tensor, what: str, atol: float) -> float:
    assert ours.shape == ref.shape, f"{what}: {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(ref).all(), what
    diff = (ours.double() - ref.double()).abs().max().item()
    logger.info("%s: max|ours - ref| = %.3e (max|ref| %.3f)", what, diff, ref.abs().max().item())
    assert diff <= atol, f"{what}: max|ours - ref| = {diff:.3e} > {atol:.0e}"
    return diff


def assert_result_matches(result: Any, pair: Pair, ref_latents: tuple[torch.Tensor, torch.Tensor],
                          generator: torch.Generator, frames: int) -> dict[str, float]:  # fmt: skip
    """Final latents within 1e-4, decoded frames / waveform within 1e-3; audio exactly frames / fps long."""
    ref_video, ref_audio = ref_latents
    diffs = {
        "video latent": max_diff(result.latents.video, ref_video, "video latent", LATENT_ATOL),
        "audio latent": max_diff(result.latents.audio, ref_audio, "audio latent", LATENT_ATOL),
    }
    ref_frames, ref_wave, ref_rate = ref_decode(pair, ref_video, ref_audio, generator)
    assert ref_frames.std() > 1e-3 and ref_wave.std() > 1e-4, "vacuous comparison: flat reference outputs"
    diffs["frames"] = max_diff(result.frames, ref_frames, "frames", DECODED_ATOL)
    assert result.sample_rate == ref_rate
    samples = round(frames / FPS * ref_rate)
    assert result.waveform.shape == (ref_wave.shape[0], samples)
    common = min(samples, ref_wave.shape[-1])
    diffs["waveform"] = max_diff(result.waveform[:, :common], ref_wave[:, :common], "waveform", DECODED_ATOL)
    assert (result.waveform[:, common:] == 0).all()  # padded silence beyond the reference's decode
    return diffs
