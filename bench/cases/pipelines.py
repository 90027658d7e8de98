"""End-to-end pipelines on the mid-size modules, ours (``aiprod_core.pipelines``) and ltx-pipelines' flow.

Both start from the prompt contexts (the Gemma text encoder is outside the measurement: the reference pipeline
classes load Gemma-3-12B and hard-code bf16, so the reference side runs each class's ``__call__`` flow through
``ltx_pipelines.utils.helpers`` as the pipeline parity tests do) and end with decoded frames and waveform.
float32 on both sides. Audio VAE / vocoder and the upsampler keep the tiny test sizes (they are not the cost).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..common import build_reference, random_state_dict
from . import sizes
from .transformer_forward import ours_model, reference_model
from .vae_decode_tiled import ours_decoder, reference_decoder

F32, CPU = torch.float32, torch.device("cpu")
SEED = 11


def contexts() -> Any:
    from aiprod.aiprod_core.pipelines import PromptContexts

    gen = torch.Generator().manual_seed(9)
    widths = (sizes.HEADS * sizes.VIDEO_HEAD_DIM, sizes.HEADS * sizes.AUDIO_HEAD_DIM) * 2
    tensors = [torch.randn(1, sizes.CONTEXT_TOKENS, width, generator=gen) for width in widths]
    return PromptContexts.from_tensors(*tensors)


def audio_references() -> dict[str, torch.nn.Module]:
    """ltx-core's audio decoder and vocoder with the test suite's honest init (computed DFT / mel buffers kept)."""
    from support import tiny_configs as tc
    from support.tiny_checkpoints import build_reference_module, checkpoint_components, init_module

    config = tc.checkpoint_config(sizes.GENERATION)
    out = {}
    for name in ("audio_decoder", "vocoder"):
        configurator, to_file_key = checkpoint_components()[name]
        out[name] = init_module(build_reference_module(configurator, config), 0, to_file_key, config).float().eval()
    return out


def encoder_and_upsampler(side: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    from support import tiny_configs as tc

    from aiprod.aiprod_core.upsampler import LatentUpsampler, LatentUpsamplerConfig
    from aiprod.aiprod_core.video_vae import VideoEncoder, VideoVAEConfig

    vae = {"vae": sizes.vae_section()}
    up = tc.upsampler_config(2.0)
    encoder = VideoEncoder(VideoVAEConfig.from_metadata(vae), device="meta")
    upsampler = LatentUpsampler(LatentUpsamplerConfig.from_metadata(up), device="meta")
    enc_state, up_state = random_state_dict(encoder, seed=1), random_state_dict(upsampler, seed=2)
    if side == "ours":
        encoder.load_state_dict(enc_state, strict=True, assign=True)
        upsampler.load_state_dict(up_state, strict=True, assign=True)
        return encoder.eval(), upsampler.eval()
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    from ltx_core.model.video_vae.model_configurator import VideoEncoderConfigurator

    return build_reference(VideoEncoderConfigurator, vae, enc_state), build_reference(
        LatentUpsamplerConfigurator, up, up_state
    )


def our_models(two_stage: bool, transformer: torch.nn.Module | None = None) -> Any:
    """Our pipeline modules (``transformer``: the LTX-2.3 mid-size model of `transformer_forward` unless given)."""
    from support import tiny_configs as tc

    from aiprod.aiprod_core.audio_vae import AudioDecoder, AudioVAEConfig, VocoderConfig, build_vocoder
    from aiprod.aiprod_core.pipelines import PipelineModels

    audio = audio_references()
    config = tc.checkpoint_config(sizes.GENERATION)
    audio_decoder = AudioDecoder(AudioVAEConfig.from_metadata(config))
    audio_decoder.load_state_dict(audio["audio_decoder"].state_dict(), strict=True)
    vocoder = build_vocoder(VocoderConfig.from_metadata(config))
    vocoder.load_state_dict(audio["vocoder"].state_dict(), strict=True)
    encoder, upsampler = encoder_and_upsampler("ours") if two_stage else (None, None)
    return PipelineModels(
        transformer=ours_model() if transformer is None else transformer,
        video_encoder=encoder,
        video_decoder=ours_decoder(),
        audio_decoder=audio_decoder.eval(),
        vocoder=vocoder.eval(),
        upsampler=upsampler,
        dtype=F32,
    )


def reference_models(two_stage: bool) -> SimpleNamespace:
    from ltx_core.model.transformer import X0Model

    encoder, upsampler = encoder_and_upsampler("ref") if two_stage else (None, None)
    return SimpleNamespace(
        transformer=X0Model(reference_model()),
        video_encoder=encoder,
        video_decoder=reference_decoder(),
        upsampler=upsampler,
        **audio_references(),
    )


def pixel_shape(width: int, height: int) -> Any:
    from ltx_core.types import VideoPixelShape

    return VideoPixelShape(batch=1, frames=sizes.PIPELINE_FRAMES, width=width, height=height, fps=sizes.FPS)


def reference_stage(shape: Any, noiser: Any, sigmas: torch.Tensor, denoise_fn: Any, **initial: Any) -> tuple[Any, Any]:
    """``denoise_audio_video`` with an Euler loop over ``denoise_fn``, as the pipeline classes call it."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils.helpers import denoise_audio_video
    from ltx_pipelines.utils.samplers import euler_denoising_loop
    from ltx_pipelines.utils.types import PipelineComponents

    def loop(sigmas: torch.Tensor, video_state: Any, audio_state: Any, stepper: Any) -> tuple[Any, Any]:
        return euler_denoising_loop(sigmas, video_state, audio_state, stepper, denoise_fn)

    return denoise_audio_video(
        output_shape=shape, conditionings=[], noiser=noiser, sigmas=sigmas, stepper=EulerDiffusionStep(),
        denoising_loop_fn=loop, components=PipelineComponents(dtype=F32, device=CPU), dtype=F32, device=CPU,
        **initial,
    )  # fmt: skip


def reference_decode(models: SimpleNamespace, video: torch.Tensor, audio: torch.Tensor, generator: Any) -> int:
    """ltx-core's ``decode_video`` (uint8 chunks, consumed) and ``decode_audio``; returns the frame count."""
    from ltx_core.model.audio_vae import decode_audio
    from ltx_core.model.video_vae import decode_video

    frames = sum(chunk.shape[0] for chunk in decode_video(video, models.video_decoder, generator=generator))
    decode_audio(audio, models.audio_decoder, models.vocoder)
    return frames
