"""Shared pieces of the tests of the edit and audio pipelines (retake, extension, audio-to-video, text-to-audio,
HQ): the tiny models of `pipeline_oracle` plus the audio VAE encoder, source clips and audio tracks, and the
reference flows (ltx-pipelines 1.0.0 helpers, float32) those pipelines are compared with."""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

import torch
from pipeline_oracle import CPU, F32, FPS, Pair, pixel_shape, tiny_pair
from support import tiny_configs as tc
from support.tiny_checkpoints import build_reference_module, checkpoint_components, init_module

from aiprod.aiprod_core.audio_vae import AudioEncoder, AudioVAEConfig
from aiprod.aiprod_core.pipelines import AudioClip, PipelineModels, SourceClip

AUDIO_RATE = 44100  # a source track's own rate (the audio VAE works at 16 kHz, the vocoders at 24 / 48 kHz)


@functools.cache
def audio_encoders(generation: str) -> tuple[torch.nn.Module, AudioEncoder]:
    """(ltx-core's audio encoder, ours) with the same seeded weights."""
    config = tc.checkpoint_config(generation)
    configurator, to_file_key = checkpoint_components()["audio_encoder"]
    reference = init_module(build_reference_module(configurator, config), 0, to_file_key, config).float().eval()
    ours = AudioEncoder(AudioVAEConfig.from_metadata(config))
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours.eval()


def models(generation: str) -> PipelineModels:
    """`tiny_pair`'s models with our audio encoder."""
    return replace(tiny_pair(generation).ours, audio_encoder=audio_encoders(generation)[1])


def frames(count: int, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth moving test clip (F, H, W, 3) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t, y, x = torch.meshgrid(torch.linspace(0, 1, count), torch.linspace(0, 1, height), torch.linspace(0, 1, width),
                             indexing="ij")  # fmt: skip
    phases = torch.rand(3, generator=gen) * 6.0
    return torch.stack([0.5 + 0.4 * torch.sin(5 * x + 3 * y + 4 * t + p) for p in phases], dim=-1)


def tone(seconds: float, rate: int = AUDIO_RATE, channels: int = 2, seed: int = 0) -> AudioClip:
    """A few sine partials plus a little noise, (channels, round(seconds x rate)) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    samples = round(seconds * rate)
    time = torch.arange(samples, dtype=torch.float64) / rate
    waves = [0.3 * torch.sin(2 * math.pi * (220.0 * (c + 1)) * time) + 0.1 * torch.sin(2 * math.pi * 1330.0 * time)
             for c in range(channels)]  # fmt: skip
    noise = torch.randn(channels, samples, generator=gen, dtype=torch.float64) * 0.02
    return AudioClip((torch.stack(waves) + noise).float(), rate)


def source(count: int = 17, *, audio: bool = True, rate: int = AUDIO_RATE, channels: int = 2,
           size: tuple[int, int] = (64, 64)) -> SourceClip:  # fmt: skip
    track = tone(count / FPS, rate, channels) if audio else None
    return SourceClip(frames(count, *size), FPS, track)


# --------------------------------------------------------------------------------------------------------
# Reference flows (ltx-pipelines 1.0.0 helpers, float32)
# --------------------------------------------------------------------------------------------------------


def ref_audio_latent(generation: str, clip: AudioClip, latent_frames: int) -> torch.Tensor:
    """ltx-core's ``encode_audio`` of a stereo track, its first ``latent_frames`` frames."""
    from ltx_core.model.audio_vae import encode_audio
    from ltx_core.types import Audio

    waveform = clip.waveform if clip.waveform.shape[0] == 2 else clip.waveform.expand(2, -1)
    latent = encode_audio(Audio(waveform=waveform[None].float(), sampling_rate=clip.sample_rate),
                          audio_encoders(generation)[0], None)  # fmt: skip
    return latent[:, :, :latent_frames]


def ref_states(shape: Any, noiser: Any, video_items: list[Any], audio_items: list[Any],
               noise_scale: float | tuple[float, float], video: torch.Tensor | None,
               audio: torch.Tensor | None) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """Noised (video, audio) states and their tools, as 1.0.0's ``noise_video_state`` / ``noise_audio_state``;
    ``noise_scale`` one for both or (video, audio)."""
    from ltx_pipelines.utils.helpers import noise_audio_state, noise_video_state
    from ltx_pipelines.utils.types import PipelineComponents

    video_scale, audio_scale = noise_scale if isinstance(noise_scale, tuple) else (noise_scale, noise_scale)
    components = PipelineComponents(dtype=F32, device=CPU)
    video_state, video_tools = noise_video_state(
        output_shape=shape, noiser=noiser, conditionings=video_items, components=components, dtype=F32,
        device=CPU, noise_scale=video_scale, initial_latent=video,
    )  # fmt: skip
    audio_state, audio_tools = noise_audio_state(
        output_shape=shape, noiser=noiser, conditionings=audio_items, components=components, dtype=F32,
        device=CPU, noise_scale=audio_scale, initial_latent=audio,
    )  # fmt: skip
    return video_state, video_tools, audio_state, audio_tools


def ref_loop(states: tuple[Any, Any, Any, Any], sigmas: torch.Tensor, denoise_fn: Any,
             res2s: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Euler (or res_2s, float32 states) loop over the noised states; the unpatchified latents."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep, Res2sDiffusionStep
    from ltx_pipelines.utils.samplers import euler_denoising_loop, res2s_audio_video_denoising_loop

    video_state, video_tools, audio_state, audio_tools = states
    if res2s:
        video_state, audio_state = res2s_audio_video_denoising_loop(
            sigmas, video_state, audio_state, Res2sDiffusionStep(), denoise_fn, model_dtype=F32
        )
    else:
        video_state, audio_state = euler_denoising_loop(sigmas, video_state, audio_state, EulerDiffusionStep(),
                                                        denoise_fn)  # fmt: skip
    video = video_tools.unpatchify(video_tools.clear_conditioning(video_state)).latent
    audio = audio_tools.unpatchify(audio_tools.clear_conditioning(audio_state)).latent
    return video, audio


class FrozenAudioSigma(torch.nn.Module):
    """A reference transformer that sees the audio at sigma 0: ltx-pipelines 1.2.0's rule for a frozen stream
    (``modality_from_latent_state``), which its 1.0.0 helpers predate."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, video: Any, audio: Any, perturbations: Any) -> Any:
        if audio is not None:
            audio = replace(audio, sigma=torch.zeros_like(audio.sigma))
        return self.transformer(video, audio, perturbations)


def ref_shape(width: int, height: int, frames_: int) -> Any:
    return pixel_shape(width, height, frames_)


__all__ = ["Pair", "audio_encoders", "frames", "models", "source", "tone"]
