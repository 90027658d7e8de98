"""One guided stage at the target size (CFG + STG + modality isolation + rescale on both streams), then decode:
ours ``pipelines.text_to_video`` vs ltx-pipelines ``TI2VidOneStagePipeline.__call__``'s flow."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import sizes
from .pipelines import SEED, contexts, our_models, pixel_shape, reference_decode, reference_models, reference_stage

CFG_VIDEO, CFG_AUDIO, STG, RESCALE, MODALITY = 3.0, 7.0, 1.0, 0.7, 3.0  # ltx-pipelines' defaults


def _ours() -> Callable[[], object]:
    from aiprod.aiprod_core.pipelines import GenerationRequest, GuidedSampling, text_to_video
    from aiprod.aiprod_core.sampling import StreamGuider

    models, ctx = our_models(two_stage=False), contexts()
    block = (sizes.STG_BLOCK,)
    guided = GuidedSampling(
        sizes.GUIDED_STEPS,
        StreamGuider.multimodal(CFG_VIDEO, STG, block, RESCALE, MODALITY),
        StreamGuider.multimodal(CFG_AUDIO, STG, block, RESCALE, MODALITY),
    )
    request = GenerationRequest(sizes.PIPELINE_WIDTH, sizes.PIPELINE_HEIGHT, sizes.PIPELINE_FRAMES, sizes.FPS, SEED)
    return lambda: text_to_video(models, ctx, request, guided).frames.shape[0]


def _reference() -> Callable[[], object]:
    from ltx_core.components.guiders import MultiModalGuiderParams, create_multimodal_guider_factory
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_pipelines.utils.helpers import multi_modal_guider_factory_denoising_func

    models, ctx = reference_models(two_stage=False), contexts()

    def params(cfg: float) -> MultiModalGuiderParams:
        return MultiModalGuiderParams(cfg_scale=cfg, stg_scale=STG, rescale_scale=RESCALE, modality_scale=MODALITY,
                                      stg_blocks=[sizes.STG_BLOCK])  # fmt: skip

    def run() -> int:
        generator = torch.Generator(device="cpu").manual_seed(SEED)
        sigmas = LTX2Scheduler().execute(steps=sizes.GUIDED_STEPS).to(dtype=torch.float32)
        denoise_fn = multi_modal_guider_factory_denoising_func(
            video_guider_factory=create_multimodal_guider_factory(params(CFG_VIDEO), ctx.negative.video),
            audio_guider_factory=create_multimodal_guider_factory(params(CFG_AUDIO), ctx.negative.audio),
            v_context=ctx.positive.video,
            a_context=ctx.positive.audio,
            transformer=models.transformer,
        )
        shape = pixel_shape(sizes.PIPELINE_WIDTH, sizes.PIPELINE_HEIGHT)
        video, audio = reference_stage(shape, GaussianNoiser(generator=generator), sigmas, denoise_fn)
        return reference_decode(models, video.latent, audio.latent, generator)

    return run


def prepare(side: str, variant: str) -> Callable[[], object]:
    torch.cuda.synchronize = lambda *args, **kwargs: None  # ltx-pipelines syncs unconditionally
    return _ours() if side == "ours" else _reference()
