"""The distilled two-stage flow on an LTX-2.5 model: ours ``pipelines.distilled`` (2.5 defaults: ancestral Euler
stage 1) vs the same flow driven through diffusers 0.42.1's components on the same weights.

diffusers has no distilled two-stage block set: its LTX-2.5 modular blocks (``modular_blocks_ltx25.py``) are the
one-stage ``LTX2AutoCoreDenoiseStep`` + decode, and a distilled run is that denoise step called with the distilled
sigmas, ``LTX2LatentUpsamplePipeline`` in between, and the stage-2 sigmas with ``noise_scale = sigmas[0]`` (the LTX-2
docs' recipe). The reference side runs exactly those steps on the components, without the block machinery:

- stage 1 at half size: 8 steps of ``DISTILLED_SIGMA_VALUES`` + 0 on ``LTXEulerAncestralRFScheduler(eta=1)``,
  the loop skipping the terminal timestep as ``LTX2DFRPipeline._inference_timesteps`` does; stage 2 after the x2
  upsample: ``STAGE_2_DISTILLED_SIGMA_VALUES`` on ``FlowMatchEulerDiscreteScheduler`` (shift 1, no dynamic shift:
  the given sigmas), the upsampled video and stage-1 audio re-noised at sigmas[0] (``_create_noised_state``);
- each step is ``LTX2LoopDenoiser``'s call for a guidance-free pass (``LTX2Guidance`` at scale 1 runs the
  conditional pass alone): ``timestep = sigma = audio_timestep = t``, ``use_cross_timestep``, the rotary coordinates
  of ``rope.prepare_video_coords`` / ``audio_rope.prepare_audio_coords``, velocity -> x0 -> velocity through
  ``convert_velocity_to_x0`` / ``convert_x0_to_velocity``, then each stream's scheduler ``step``;
- upsample: ``LTX2LatentUpsamplerModel`` on the un-normalised latent, re-normalised (the upsample pipeline's
  ``latents_normalized`` path + ``LTX2PrepareLatentsStep``'s normalisation);
- video decode: ``AutoencoderKLLTX2Video.decode`` (the conv VAE, LTX-2.3 layout, which 2.5 keeps) on the
  un-normalised latent, untiled, as ``LTX2VaeDecoderStep``; not the diffusion decoder, whose NATTEN attention
  takes tens of seconds per clip on this CPU even at the tiny `tiny25` widths (`diffusion_decode_memory_growth`);
- audio decode: ltx-core 1.0.0 ``decode_audio`` on the LTX-2.3 audio VAE / vocoder (2.5 keeps them; their parity
  with diffusers' ``AutoencoderKLLTX2Audio`` / ``LTX2VocoderWithBWE`` is tests/core/test_audio_vae25.py).

Not diffusers': the noise. Its blocks draw the initial noise as unpacked (B, C, F, H, W) tensors and the ancestral
noise from the global RNG; here both sides draw ours' order from one generator seeded ``SEED`` (stage-1 video,
stage-1 audio, stage-2 video, stage-2 audio, each of the packed token shape) and the ancestral noise from one seeded
``SEED + 10000`` (video, then audio, each step), as ltx-pipelines 1.2.0 does, so the flows are equal and the
outputs comparable (``python -m bench.cases.pipeline_distilled_ltx25`` prints the differences). Same random
weights: the transformer of `transformer_forward_ltx25` (12 blocks, video 512 / audio 256 wide), the mid-size conv
decoder of `vae_decode_tiled`, the tiny x2 upsampler of `pipeline_distilled`. Prompt contexts are random, 1024
tokens (the Gemma prompt padded as LTX-2.5 feeds it); the text encoder is outside the measurement on both sides.

Variants: ``""`` the published 2.5 config (prompt AdaLN: nothing to keep between steps); ``kv_on`` / ``kv_off``
the key/value-cacheable config (``use_prompt_adaln_single: false``) with our prompt K/V reuse on / off. diffusers
has no such reuse, so the reference runs the same in ``kv_on`` and ``kv_off``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from ..common import random_state_dict
from . import sizes
from .pipelines import SEED, audio_references, encoder_and_upsampler, our_models
from .transformer_forward_ltx25 import CONTEXT_TOKENS, VARIANTS, section
from .transformer_forward_ltx25 import _models as transformer_models

ANCESTRAL_SEED_OFFSET = 10000  # ltx-pipelines 1.2.0: the ancestral loop's own generator


def _contexts() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(9)
    video = torch.randn(1, CONTEXT_TOKENS, sizes.HEADS * sizes.VIDEO_HEAD_DIM, generator=gen)
    return video, torch.randn(1, CONTEXT_TOKENS, sizes.HEADS * sizes.AUDIO_HEAD_DIM, generator=gen)


def _ours(variant: str) -> Callable[[], Any]:
    from aiprod.aiprod_core.pipelines import GenerationRequest, PromptContexts, distilled

    model, _, state = transformer_models(section(variant))
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().reuse_prompt_kv = variant != "kv_off"
    del state
    models, contexts = our_models(two_stage=True, transformer=model), PromptContexts.from_tensors(*_contexts())
    request = GenerationRequest(sizes.PIPELINE_WIDTH, sizes.PIPELINE_HEIGHT, sizes.PIPELINE_FRAMES, sizes.FPS, SEED,
                                distilled_stage_1="euler_ancestral")  # the 2.5 default (generation_defaults)
    return lambda: distilled(models, contexts, request)


# ----------------------------------------------------------------------------------------------------------------
# The reference: diffusers' components in the flow of its LTX-2 blocks
# ----------------------------------------------------------------------------------------------------------------

# The Lightricks conv-VAE key -> diffusers key beyond diffusers' own converter (its LTX-2.0 table stops at
# up_blocks.6; the 2.3 / 2.5 layout has a fourth upsampler, as scripts/convert_ltx2_to_diffusers.py's 2.3 table).
_EXTRA_VAE_RENAMES = (("up_blocks.7", "up_blocks.3.upsamplers.0"), ("up_blocks.8", "up_blocks.3"))


def _diffusers_vae() -> torch.nn.Module:
    """diffusers' conv VAE with the decoder of `vae_decode_tiled` (widths 128 -> 16; diffusers order 32, 64, 64,
    128) holding ours' seeded weights, renamed by diffusers' ``convert_ltx2_vae_to_diffusers``."""
    from diffusers import AutoencoderKLLTX2Video
    from diffusers.loaders.single_file_utils import convert_ltx2_vae_to_diffusers

    from aiprod.aiprod_core.video_vae import VideoDecoder, VideoVAEConfig

    vae = AutoencoderKLLTX2Video(
        block_out_channels=(16, 16, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
        decoder_block_out_channels=(32, 64, 64, 128), decoder_layers_per_block=(1, 1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True, True), decoder_inject_noise=(False,) * 5,
        upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"), upsample_residual=(False,) * 4,
        upsample_factor=(2, 2, 1, 2), timestep_conditioning=False, decoder_causal=False,
        decoder_spatial_padding_mode="zeros",
    )  # fmt: skip
    state = random_state_dict(VideoDecoder(VideoVAEConfig.from_metadata({"vae": sizes.vae_section()}), device="meta"))
    file = {f"vae.{k}" if k.startswith("per_channel_statistics.") else f"vae.decoder.{k}": v for k, v in state.items()}
    renamed = {}
    for diffusers_key, value in convert_ltx2_vae_to_diffusers(file).items():
        name = diffusers_key
        for old, new in _EXTRA_VAE_RENAMES:
            name = name.replace(old, new)
        renamed[name] = value
    vae.decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in renamed.items()
                                 if k.startswith("decoder.")}, strict=True)  # fmt: skip
    vae.latents_mean.copy_(renamed["latents_mean"])
    vae.latents_std.copy_(renamed["latents_std"])
    return vae.eval()


def _diffusers_upsampler() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """diffusers' x2 upsampler with ours' weights (same keys) and the video encoder's statistics (mean, std)."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from support import tiny_configs as tc

    encoder, upsampler = encoder_and_upsampler("ours")
    config = tc.upsampler_config(2.0)
    reference = LTX2LatentUpsamplerModel(
        in_channels=config["in_channels"], mid_channels=config["mid_channels"],
        num_blocks_per_stage=config["num_blocks_per_stage"], dims=config["dims"], spatial_upsample=True,
        temporal_upsample=False, rational_spatial_scale=config["spatial_scale"], use_rational_resampler=False,
    )  # fmt: skip
    reference.load_state_dict(upsampler.state_dict(), strict=True)
    stats = encoder.per_channel_statistics
    return reference.eval(), stats.get_buffer("mean-of-means").clone(), stats.get_buffer("std-of-means").clone()


class _Reference:
    """The distilled flow on diffusers' components (see the module docstring); ``latents`` keeps the last result."""

    def __init__(self, variant: str) -> None:
        _, self.transformer, _ = transformer_models(section(variant))
        self.upsampler, self.mean, self.std = _diffusers_upsampler()
        self.vae = _diffusers_vae()
        self.audio = audio_references()
        self.context, self.audio_context = _contexts()
        self.latents: tuple[torch.Tensor, torch.Tensor] | None = None
        self.frames: torch.Tensor | None = None

    def _stage(self, scheduler: Any, video: torch.Tensor, audio: torch.Tensor, grid: tuple[int, int, int],
               generator: torch.Generator | None, skip_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        import copy

        from diffusers.modular_pipelines.ltx2.denoise import convert_velocity_to_x0, convert_x0_to_velocity

        audio_scheduler = copy.deepcopy(scheduler)  # LTX2SetTimestepsStep: an independent audio scheduler state
        frames, height, width = grid
        model = self.transformer
        video_coords = model.rope.prepare_video_coords(1, frames, height, width, video.device, fps=sizes.FPS)
        audio_coords = model.audio_rope.prepare_audio_coords(1, audio.shape[1], audio.device)
        timesteps = scheduler.timesteps[:-1] if skip_last else scheduler.timesteps
        # ltx-core 1.2.0 marks the first latent frame of every state (tools.py create_initial_state); diffusers'
        # plain blocks pass no marker, so it is passed here as ours (and the reference) build it
        marker = torch.zeros(1, video.shape[1], 1, device=video.device)
        marker[:, : height * width] = 1.0
        step_kwargs = {} if generator is None else {"generator": generator}
        for i, t in enumerate(timesteps):
            timestep = t.expand(1)
            velocity, audio_velocity = model(
                hidden_states=video, audio_hidden_states=audio, encoder_hidden_states=self.context,
                audio_encoder_hidden_states=self.audio_context, timestep=timestep, audio_timestep=timestep,
                sigma=timestep, video_coords=video_coords, audio_coords=audio_coords, num_frames=frames,
                height=height, width=width, fps=sizes.FPS, audio_num_frames=audio.shape[1], use_cross_timestep=True,
                video_keyframes_mask=marker, return_dict=False,
            )  # fmt: skip
            x0 = convert_velocity_to_x0(video, velocity.float(), i, scheduler)
            audio_x0 = convert_velocity_to_x0(audio, audio_velocity.float(), i, audio_scheduler)
            video = scheduler.step(convert_x0_to_velocity(video, x0, i, scheduler), t, video, return_dict=False,
                                   **step_kwargs)[0]  # fmt: skip
            audio = audio_scheduler.step(convert_x0_to_velocity(audio, audio_x0, i, audio_scheduler), t, audio,
                                         return_dict=False, **step_kwargs)[0]  # fmt: skip
        return video, audio

    def __call__(self) -> int:
        from diffusers import FlowMatchEulerDiscreteScheduler, LTXEulerAncestralRFScheduler
        from diffusers.modular_pipelines.ltx2.before_denoise import _pack_latents, _unpack_latents
        from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
        from ltx_core.model.audio_vae import decode_audio

        from aiprod.aiprod_core.pipelines.latents import audio_latent_frames

        generator = torch.Generator().manual_seed(SEED)
        frames = (sizes.PIPELINE_FRAMES - 1) // 8 + 1
        height, width = sizes.PIPELINE_HEIGHT // 32, sizes.PIPELINE_WIDTH // 32
        audio_tokens = audio_latent_frames(sizes.PIPELINE_FRAMES, sizes.FPS)  # = round(frames / fps x 25), as theirs
        half = (frames, height // 2, width // 2)
        video = torch.randn(1, half[0] * half[1] * half[2], 128, generator=generator)
        audio = torch.randn(1, audio_tokens, 128, generator=generator)
        ancestral = LTXEulerAncestralRFScheduler(eta=1.0)
        ancestral.set_timesteps(sigmas=[*DISTILLED_SIGMA_VALUES, 0.0])
        ancestral.set_begin_index(0)
        noise = torch.Generator().manual_seed(SEED + ANCESTRAL_SEED_OFFSET)
        video, audio = self._stage(ancestral, video, audio, half, noise, skip_last=True)
        mean, std = self.mean.view(1, -1, 1, 1, 1), self.std.view(1, -1, 1, 1, 1)
        upsampled = (self.upsampler(_unpack_latents(video, *half) * std + mean) - mean) / std
        sigma = STAGE_2_DISTILLED_SIGMA_VALUES[0]
        video = _pack_latents(upsampled)
        video = sigma * torch.randn(video.shape, generator=generator) + (1 - sigma) * video
        audio = sigma * torch.randn(audio.shape, generator=generator) + (1 - sigma) * audio
        euler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
        euler.set_timesteps(sigmas=STAGE_2_DISTILLED_SIGMA_VALUES)
        euler.set_begin_index(0)
        video, audio = self._stage(euler, video, audio, (frames, height, width), None, skip_last=False)
        latent = _unpack_latents(video, frames, height, width)  # (B, C, F, H, W), normalised
        audio_latent = audio.unflatten(2, (8, 16)).transpose(1, 2)  # (B, T, C x M) -> (B, C, T, M)
        self.latents = (latent, audio_latent)
        vae = self.vae
        pixels = vae.decode(latent * vae.latents_std.view(1, -1, 1, 1, 1) + vae.latents_mean.view(1, -1, 1, 1, 1),
                            None, return_dict=False)[0]  # fmt: skip
        decode_audio(audio_latent, self.audio["audio_decoder"], self.audio["vocoder"])
        self.frames = ((pixels.float() + 1) / 2).clamp(0, 1)[0].permute(1, 2, 3, 0)  # (F, H, W, 3), as ours
        return pixels.shape[2]


def prepare(side: str, variant: str) -> Callable[[], object]:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}, expected one of {VARIANTS}")
    return _ours(variant) if side == "ours" else _Reference(variant)


def compare(variant: str = "kv_on") -> dict[str, float]:
    """Both flows once in this process: max |ours - ref| of the final video / audio latents and the frames."""
    with torch.inference_mode():
        ours = prepare("ours", variant)()
        reference = _Reference(variant)
        reference()
    video, audio = reference.latents
    return {
        "video_latent_max_abs": float((ours.latents.video - video).abs().max()),
        "video_latent_ref_max": float(video.abs().max()),
        "audio_latent_max_abs": float((ours.latents.audio - audio).abs().max()),
        "audio_latent_ref_max": float(audio.abs().max()),
        "frames_max_abs": float((ours.frames - reference.frames).abs().max()),
    }


if __name__ == "__main__":  # python -m bench.cases.pipeline_distilled_ltx25 [VARIANT]
    import json

    from ..common import register_pack

    register_pack()
    sys.stdout.write(json.dumps(compare(sys.argv[1] if len(sys.argv) > 1 else "kv_on")) + "\n")
