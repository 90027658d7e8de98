"""The stages every pipeline is composed of (and ComfyUI exposes one node each): prompt contexts, conditioning,
sampling, latent upsampling, video decode and audio decode.

Each stage borrows the modules it needs from the `ModelHost` for its own duration only, runs without autograd
and returns plain tensors / `AVLatents`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..conditioning import (
    AttentionStrength,
    ConditioningItem,
    ImageAtLatentIndex,
    Keyframe,
    ReferenceVideo,
    apply_conditionings,
    mark_first_frame,
)
from ..sampling import GaussianNoiser, Guidance, Prompt, StepReport, X0Denoiser, denoise
from ..sampling.samplers import Sampler
from ..sampling.state import LatentState
from ..sampling.steps import DiffusionStep
from ..upsampler import upsample_latent
from ..video_vae import DiffusionVideoDecoder, TilingConfig, tiled_decode
from ..video_vae import decode_video as decode_with_either
from .generations import generation_defaults
from .latents import AVLatents, PromptContexts
from .models import ModelHost
from .pixels import reference_mask_to_latent, reference_video_pixels
from .preprocess import DEFAULT_IMAGE_CRF, conditioning_image

__all__ = [
    "ImageCondition",
    "ReferenceCondition",
    "decode_audio",
    "decode_oom_message",
    "decode_video",
    "has_keyframe_marker",
    "image_conditionings",
    "prompt_contexts",
    "reference_conditionings",
    "sample",
    "sample_oom_message",
    "seeded",
    "upsample",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageCondition:
    """An image (H, W, 3) or (1, H, W, 3) in [0, 1] (or uint8) at pixel frame ``frame_index`` (negative: from the end)
    with conditioning ``strength``.

    ``crf``: the H.264 round trip the reference applies to conditioning images (0 skips it); None: the model
    generation's value (LTX-2 / LTX-2.3: 33, LTX-2.5: 18), resolved where the image is encoded
    (`image_conditionings`' ``generation``), as ltx-pipelines 1.2.0 resolves an unset ``crf`` from its checkpoint.
    """

    image: torch.Tensor
    frame_index: int = 0
    strength: float = 1.0
    crf: float | None = DEFAULT_IMAGE_CRF


@dataclass(frozen=True)
class ReferenceCondition:
    """An IC-LoRA reference video (F, H, W, 3) in [0, 1] (or uint8).

    attention_strength: how strongly its tokens and the generated ones attend each other (1 = fully).
    attention_mask: optional (F, H, W) pixel mask in [0, 1] multiplied by ``attention_strength``.
    """

    video: torch.Tensor
    strength: float = 1.0
    attention_strength: float = 1.0
    attention_mask: torch.Tensor | None = None


def has_keyframe_marker(transformer: nn.Module | None) -> bool:
    """Whether the transformer has LTX-2.5's learned keyframe embedding (config ``use_keyframes_abs_pos_embedding``):
    only then does `sample` build a keyframes mask, so LTX-2 / LTX-2.3 states carry none."""
    config = getattr(transformer, "config", None)
    return bool(getattr(config, "use_keyframes_abs_pos_embedding", False)) and bool(getattr(config, "with_video", True))


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def seeded(seed_or_generator: int | torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded with an int seed; a generator (or None) is passed through."""
    if seed_or_generator is None or isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    return torch.Generator(device=device).manual_seed(int(seed_or_generator))


HiddenStates = tuple[Sequence[torch.Tensor], torch.Tensor]  # Gemma's L x (1, S, D) hidden states, mask (1, S)


@torch.no_grad()
def prompt_contexts(
    processor: nn.Module, positive: HiddenStates, negative: HiddenStates | None, host: ModelHost
) -> PromptContexts:
    """Gemma hidden states of each prompt -> the transformer's contexts (feature extractor + connectors).

    Each prompt is processed on its own, as the reference does. The connectors' mask (all ones: registers fill the
    padding) is not passed on, as in the reference pipelines.
    """

    def process(prompt: HiddenStates, model: nn.Module) -> Prompt:
        hidden, mask = prompt
        dtype = _dtype_of(model)
        embeddings = model(tuple(h.to(host.device, dtype) for h in hidden), mask.to(host.device))
        return Prompt(embeddings.video, embeddings.audio)

    with host.use(processor) as model:
        return PromptContexts(process(positive, model), None if negative is None else process(negative, model))


@torch.no_grad()
def image_conditionings(
    encoder: nn.Module,
    images: Sequence[ImageCondition],
    latents: AVLatents,
    host: ModelHost,
    *,
    keyframes_only: bool = False,
    generation: str | None = None,
) -> list[ConditioningItem]:
    """Encode images at the latents' resolution: frame 0 replaces the first latent frame, others are keyframes.

    ``keyframes_only``: every image (frame 0 included) becomes an appended keyframe (keyframe interpolation).
    ``generation``: the model's generation label or model_version; an image whose ``crf`` is None is re-compressed
    at its CRF (`generations.generation_defaults`; unknown: LTX-2.3's 33).
    """
    if not images:
        return []
    default_crf = generation_defaults(generation).image_crf
    items: list[ConditioningItem] = []
    with host.use(encoder) as vae:
        dtype = _dtype_of(vae)
        for condition in images:
            crf = default_crf if condition.crf is None else condition.crf
            pixels = conditioning_image(condition.image, latents.height, latents.width, crf)
            pixels = pixels.to(host.device, dtype)  # (1, 3, 1, H, W)
            latent = vae(pixels)  # (1, 128, 1, H', W')
            frame = condition.frame_index + (latents.frames if condition.frame_index < 0 else 0)
            if frame == 0 and not keyframes_only:
                items.append(ImageAtLatentIndex(latent, condition.strength, 0))
            else:
                items.append(Keyframe(latent, frame, condition.strength))
    return items


@torch.no_grad()
def reference_conditionings(
    encoder: nn.Module,
    references: Sequence[ReferenceCondition],
    latents: AVLatents,
    host: ModelHost,
    downscale_factor: int = 1,
) -> list[ConditioningItem]:
    """Encode IC-LoRA reference videos at 1 / ``downscale_factor`` of the latents' resolution (first frames)."""
    height, width = latents.height // downscale_factor, latents.width // downscale_factor
    items: list[ConditioningItem] = []
    with host.use(encoder) as vae:
        dtype = _dtype_of(vae)
        for reference in references:
            pixels = reference_video_pixels(reference.video[: latents.frames], height, width).to(host.device, dtype)
            latent = vae(pixels)  # (1, 128, F', H' / d, W' / d)
            item: ConditioningItem = ReferenceVideo(latent, downscale_factor, reference.strength)
            strength: float | torch.Tensor | None = None
            if reference.attention_mask is not None:
                mask = reference_mask_to_latent(reference.attention_mask, latent.shape[2:])
                strength = mask.to(latent.device, latent.dtype) * reference.attention_strength
            elif reference.attention_strength < 1.0:
                strength = reference.attention_strength
            items.append(item if strength is None else AttentionStrength(item, strength))
    return items


@torch.no_grad()
def sample(
    transformer: nn.Module,
    latents: AVLatents,
    conditionings: Sequence[ConditioningItem],
    sigmas: torch.Tensor,
    guidance: Guidance,
    generator: torch.Generator | int,
    host: ModelHost,
    *,
    dtype: torch.dtype,
    noise_scale: float = 1.0,
    step: DiffusionStep | Sampler | None = None,
    callback: Callable[[StepReport], None] | None = None,
    audio_conditionings: Sequence[ConditioningItem] = (),
) -> AVLatents:
    """One sampling stage: condition and noise the latents (video draw, then audio), denoise along ``sigmas``.

    ``latents`` are the starting point (zeros for a fresh clip, an upsampled stage-1 result for a refinement
    with ``noise_scale`` = sigmas[0], a source clip's encoding for an edit); ``conditionings`` act on the video
    stream, ``audio_conditionings`` on the audio stream (region masks, `Frozen`), both before the noise, so a kept
    token is never noised. A video latent without tokens (height or width 0) means no video stream: the
    transformer runs audio-only and never touches its video branch. ``generator``: a seed, or a generator a
    pipeline keeps drawing from; ``step``: the sampler (default Euler). Returns the denoised latents without the
    appended conditioning tokens.

    On a transformer with LTX-2.5's keyframe embedding (`has_keyframe_marker`) the video state's first latent frame
    is marked before the conditionings apply, in every pipeline and stage, as ltx-core 1.2.0 marks every initial
    state; other transformers get no mask at all.
    """
    device = host.device
    video_layout, audio_layout = latents.video_layout(), latents.audio_layout()
    noiser = GaussianNoiser(seeded(generator, device))
    video = None
    if video_layout.tokens > 0:
        video = video_layout.initial_state(device, dtype, latents.video.to(device, dtype))
        if has_keyframe_marker(transformer):
            video = mark_first_frame(video, video_layout)
        video = noiser(apply_conditionings(video, list(conditionings), video_layout), noise_scale)
    audio = audio_layout.initial_state(device, dtype, latents.audio.to(device, dtype))
    audio = noiser(apply_conditionings(audio, list(audio_conditionings), audio_layout), noise_scale)  # type: ignore[arg-type]
    try:
        with host.use(transformer) as model:
            video, audio = denoise(
                X0Denoiser(model), sigmas.to(device), video, audio, guidance=guidance, step=step, callback=callback
            )
    except torch.OutOfMemoryError as exc:  # same type, so hosts still free memory on it; the message says what to do
        raise torch.OutOfMemoryError(sample_oom_message(exc, latents, video)) from exc
    if audio is None or (video is None and video_layout.tokens > 0):
        raise RuntimeError("denoise dropped a stream")
    return AVLatents(
        video=latents.video if video is None else video_layout.unpatchify(video.latent),
        audio=audio_layout.unpatchify(audio.latent),
        frames=latents.frames,
        fps=latents.fps,
    )


@torch.no_grad()
def upsample(latents: AVLatents, upsampler: nn.Module, encoder: nn.Module, host: ModelHost) -> AVLatents:
    """x2 spatial latent upsample of the video (normalised with the video VAE statistics); audio unchanged."""
    stats = encoder.per_channel_statistics
    mean, std = stats.get_buffer("mean-of-means"), stats.get_buffer("std-of-means")
    with host.use(upsampler) as model:
        video = latents.video.to(host.device, _dtype_of(model))
        upsampled = upsample_latent(video, model, mean.to(host.device), std.to(host.device))
    return latents.with_video(upsampled.to(latents.video.dtype))


@torch.no_grad()
def decode_video(
    decoder: nn.Module,
    latent: torch.Tensor,
    host: ModelHost,
    *,
    generator: torch.Generator | int | None = None,
    tiling: TilingConfig | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Video latent (B, 128, F', H', W') -> frames (B, F, H, W, 3) float32 in [0, 1].

    ``decoder``: the conv `VideoDecoder` or LTX-2.5's `DiffusionVideoDecoder` (its file's denoising steps).
    ``generator`` drives the timestep-conditioned (LTX-2) decoder's and the diffusion decoder's noise; ``tiling``
    bounds memory; ``on_chunk(frames_done, frames_total)`` runs between tiled chunks (progress / interrupt checks).
    """
    generator = seeded(generator, host.device)
    try:
        with host.use(decoder) as vae:
            latent = latent.to(host.device, _dtype_of(vae))
            if isinstance(vae, DiffusionVideoDecoder):  # LTX-2.5's diffusion decoder: its own schedule, tiled alike
                video = decode_with_either(latent, vae, tiling, generator=generator, on_chunk=on_chunk)
            elif tiling is None:
                video = vae(latent, generator=generator)
            else:
                video = tiled_decode(vae, latent, tiling, generator=generator, on_chunk=on_chunk)
    except torch.OutOfMemoryError as exc:  # same type, so hosts still free memory on it; the message says what to do
        raise torch.OutOfMemoryError(decode_oom_message(exc, tiling)) from exc
    frames = ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # (B, 3, F, H, W)
    return frames.permute(0, 2, 3, 4, 1).contiguous()


def decode_oom_message(exc: BaseException, tiling: TilingConfig | None) -> str:
    """What to do when the video decoder runs out of memory: smaller tiles or a low-VRAM mode."""
    spatial = tiling.spatial if tiling is not None else None
    temporal = tiling.temporal if tiling is not None else None
    now = (f"spatial_tile={spatial.tile_size_in_pixels if spatial else 0}, "
           f"temporal_tile={temporal.tile_size_in_frames if temporal else 0}")
    return (f"{exc}\nOut of memory while decoding the video ({now}; 0 = no tiling on that axis). Decode in smaller "
            "tiles: spatial_tile 256 (or 128) pixels and temporal_tile 32 (or 16) frames, or run with low-VRAM "
            "settings (ComfyUI: --lowvram, or --novram / --cpu-vae where memory is very short).")


def sample_oom_message(exc: BaseException, latents: AVLatents, video: LatentState | None) -> str:
    """What to do when sampling runs out of memory: stream the weights, keep quantized weights, or make the clip
    smaller."""
    frames, height, width = latents.video.shape[-3:]
    tokens = video.latent.shape[1] if video is not None else frames * height * width
    return (f"{exc}\nOut of memory while sampling a latent of {frames} x {height} x {width} ({tokens} video tokens "
            "per pass). Stream the transformer's blocks from CPU memory (loader: weight_streaming = on), keep "
            "quantized checkpoints (fp8, NVFP4, int8, GGUF) quantized (loader: quantized_weights = keep), or lower "
            "the resolution or frame count; ComfyUI's --lowvram "
            "frees other models first.")


@torch.no_grad()
def decode_audio(
    decoder: nn.Module,
    vocoder: nn.Module,
    latent: torch.Tensor,
    host: ModelHost,
    *,
    duration: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Audio latent (B, 8, T, 16) -> (waveform (B, 2, S) float32, sample rate).

    With ``duration`` (seconds) the waveform is cut, or padded with silence at its end, to exactly
    round(duration x sample rate) samples.
    """
    with host.use(decoder) as audio_vae:
        mel = audio_vae(latent.to(host.device, _dtype_of(audio_vae)))  # (B, 2, 4 T - 3, 64)
    with host.use(vocoder) as model:
        waveform = model(mel.to(_dtype_of(model))).float()  # (B, 2, S')
    rate = int(vocoder.output_sampling_rate)
    if duration is not None:
        samples = round(duration * rate)
        if waveform.shape[-1] < samples:
            logger.debug("audio: padding %d samples of silence", samples - waveform.shape[-1])
        waveform = torch.nn.functional.pad(waveform, (0, max(0, samples - waveform.shape[-1])))[..., :samples]
    return waveform, rate
