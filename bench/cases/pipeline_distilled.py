"""The distilled two-stage flow: 8 fixed steps at half size, x2 latent upsample, 3 fixed steps, decode:
ours ``pipelines.distilled`` vs ltx-pipelines ``DistilledPipeline.__call__``'s flow."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import sizes
from .pipelines import SEED, contexts, our_models, pixel_shape, reference_decode, reference_models, reference_stage


def _ours() -> Callable[[], object]:
    from aiprod.aiprod_core.pipelines import GenerationRequest, distilled

    models, ctx = our_models(two_stage=True), contexts()
    request = GenerationRequest(sizes.PIPELINE_WIDTH, sizes.PIPELINE_HEIGHT, sizes.PIPELINE_FRAMES, sizes.FPS, SEED)
    return lambda: distilled(models, ctx, request).frames.shape[0]


def _reference() -> Callable[[], object]:
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.model.upsampler import upsample_video
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
    from ltx_pipelines.utils.helpers import simple_denoising_func

    models, ctx = reference_models(two_stage=True), contexts()
    denoise_fn = simple_denoising_func(
        video_context=ctx.positive.video, audio_context=ctx.positive.audio, transformer=models.transformer
    )
    width, height = sizes.PIPELINE_WIDTH, sizes.PIPELINE_HEIGHT

    def run() -> int:
        generator = torch.Generator(device="cpu").manual_seed(SEED)
        noiser = GaussianNoiser(generator=generator)
        video, audio = reference_stage(
            pixel_shape(width // 2, height // 2), noiser, torch.Tensor(DISTILLED_SIGMA_VALUES), denoise_fn
        )
        upscaled = upsample_video(latent=video.latent[:1], video_encoder=models.video_encoder,
                                  upsampler=models.upsampler)  # fmt: skip
        sigmas = torch.Tensor(STAGE_2_DISTILLED_SIGMA_VALUES)
        video, audio = reference_stage(
            pixel_shape(width, height), noiser, sigmas, denoise_fn,
            noise_scale=sigmas[0], initial_video_latent=upscaled, initial_audio_latent=audio.latent,
        )  # fmt: skip
        return reference_decode(models, video.latent, audio.latent, generator)

    return run


def prepare(side: str, variant: str) -> Callable[[], object]:
    torch.cuda.synchronize = lambda *args, **kwargs: None  # ltx-pipelines syncs unconditionally
    return _ours() if side == "ours" else _reference()
