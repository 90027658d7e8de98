"""Sampling nodes: guider parameters, one sampling stage, latent upsample."""

from __future__ import annotations

from dataclasses import replace

import torch
from comfy_api.latest import io

from ..aiprod_core.pipelines import (
    PromptContexts,
    image_conditionings,
    reference_conditionings,
    sample,
    upsample,
)
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.generations import generation_defaults
from ..aiprod_core.pipelines.pipelines import ANCESTRAL_NOISE_SEED_OFFSET
from ..aiprod_core.sampling import (
    EulerAncestralStep,
    Guidance,
    Pass,
    Res2s,
    StreamGuider,
    distilled_sigmas,
    ltx2_sigmas,
)
from .inputs import choice_input, float_input, int_input, seed_input
from .problems import contexts_model_problems, guider_model_problems
from .runtime import ComfyModelHost, StepProgress
from .types import (
    ConditioningSocket,
    GuiderSettings,
    GuiderSocket,
    LatentBundle,
    LatentSocket,
    ModelSocket,
    TransformerHandle,
    UpsamplerSocket,
    VideoVAE,
    VideoVAESocket,
)

__all__ = ["AIPRODGuider", "AIPRODLatentUpsample", "AIPRODSampler", "guider_settings", "run_stage", "sampler_step"]

CATEGORY = "AIPROD/sampling"
SCHEDULES = ("ltx2", "distilled", "distilled_stage_2")
SAMPLERS = ("euler", "res_2s")  # first-order Euler; res_2s: 2-stage exponential Runge-Kutta (HQ pipeline)
STREAM_DEFAULTS = {"video": 3.0, "audio": 7.0}  # ltx-pipelines' CFG per stream
DEFAULT_STG_BLOCKS = "28"  # LTX-2.3's (ltx-pipelines utils/constants.py); LTX-2: 29


def _stream_inputs(stream: str) -> list:
    return [
        float_input(f"{stream}_cfg", STREAM_DEFAULTS[stream], f"{stream} classifier-free guidance scale (1 = off; "
                    "needs a negative prompt).", step=0.1),
        float_input(f"{stream}_stg", 1.0, f"{stream} spatio-temporal guidance scale (0 = off).", step=0.1),
        io.String.Input(f"{stream}_stg_blocks", default=DEFAULT_STG_BLOCKS,
                        tooltip="Transformer blocks STG perturbs, comma-separated (LTX-2.3 / 2.5: 28, LTX-2: 29; empty "
                        "= "
                        "STG off). Checked against the model's block count where model and guider meet."),
        float_input(f"{stream}_rescale", 0.7, f"{stream} guidance std rescale (0 = off)."),
        float_input(f"{stream}_modality_scale", 3.0, f"{stream} modality-isolation guidance scale (1 = off).",
                    step=0.1),
        int_input(f"{stream}_skip_step", 0, "Reuse the guided prediction on k of every k+1 steps (0 = never)."),
    ]


_SETTINGS = ("cfg", "stg", "rescale", "modality_scale", "skip_step")


def guider_settings(values: dict) -> GuiderSettings:
    """Both streams' guiders from the Guider node's inputs; every problem of both streams in one ``ValueError``."""
    problems: list[str] = []
    settings: dict[str, dict] = {}
    for stream in rules.STREAMS:
        settings[stream] = {k: values[f"{stream}_{k}"] for k in _SETTINGS}
        try:
            settings[stream]["stg_blocks"] = rules.parse_indices(values[f"{stream}_stg_blocks"],
                                                                 f"{stream}_stg_blocks")
        except ValueError as exc:
            problems.append(str(exc))
            settings[stream]["stg_blocks"] = ()
        problems += rules.guidance_problems(stream, **settings[stream])
    rules.check_problems(problems)
    video, audio = (StreamGuider.multimodal(
        cfg_scale=v["cfg"], stg_scale=v["stg"], stg_blocks=v["stg_blocks"], rescale_scale=v["rescale"],
        modality_scale=v["modality_scale"], skip_step=v["skip_step"]) for v in settings.values())
    return GuiderSettings(video, audio)


class AIPRODGuider(io.ComfyNode):
    """Multimodal guidance settings per stream (video, audio)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODGuider",
            display_name="AIPROD Guider",
            category=CATEGORY,
            description="CFG, STG (on chosen blocks), std rescale, modality isolation and step skipping for the "
            "video and the audio stream. Defaults are ltx-pipelines' (LTX-2.3 and LTX-2.5 share them).",
            inputs=[*_stream_inputs("video"), *_stream_inputs("audio")],
            outputs=[GuiderSocket.Output(display_name="guider",
                                         tooltip="Guidance for 'AIPROD Sampler' / pipeline nodes.")],
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return io.NodeOutput(guider_settings(values))


def _sigmas(schedule: str, steps: int, sigmas: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """(sigmas, noise scale): fresh noise for a full schedule, sigmas[0] for a refinement."""
    if sigmas is not None:
        values = sigmas.flatten().float().cpu()
        return values, float(values[0])
    if schedule == "ltx2":
        return ltx2_sigmas(steps), 1.0
    if schedule == "distilled":
        return distilled_sigmas(), 1.0
    values = distilled_sigmas(stage_2=True)
    return values, float(values[0])


def sampler_step(name: str) -> Res2s | None:
    """The core's sampler for a `SAMPLERS` choice (None: the loop's default Euler)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r}: expected one of {list(SAMPLERS)!r}")
    return Res2s() if name == "res_2s" else None


def run_stage(model: TransformerHandle, bundle: LatentBundle, conditioning: PromptContexts, sigmas: torch.Tensor,
              noise_scale: float, seed: int, guider: GuiderSettings | None, video_vae: VideoVAE | None,
              sampler: str = "euler", ancestral: bool = False) -> LatentBundle:
    """Encode the bundle's conditioning at its size and run one sampling stage (`aiprod_core.pipelines.sample`)."""
    host = ComfyModelHost()
    rules.check_problems(guider_model_problems(guider, model))
    transformer = model.module()
    latents = bundle.latents
    items = []
    if bundle.images or bundle.references:
        if video_vae is None:
            raise ValueError("video_vae=None: image / reference conditioning needs the video VAE input connected")
        encoder = video_vae.encoder.get()
        items += image_conditionings(encoder, bundle.images, latents, host, keyframes_only=bundle.keyframes_only,
                                     generation=model.generation)  # an image's crf None: the generation's
        items += reference_conditionings(encoder, bundle.references, latents, host, bundle.downscale_factor)
    contexts = conditioning.to(host.device, model.dtype)
    guidance = (Guidance(contexts.positive) if guider is None
                else Guidance(contexts.positive, contexts.negative, guider.video, guider.audio))
    if guider is not None and contexts.negative is None and any(Pass.NEGATIVE in g.needs()
                                                                for g in (guider.video, guider.audio)):
        raise ValueError("conditioning: the guider's CFG needs a negative prompt; enable encode_negative or set "
                         "video_cfg / audio_cfg to 1")
    generator = torch.Generator(device=host.device).manual_seed(seed)
    step = sampler_step(sampler)
    if ancestral and step is None:  # LTX-2.5's distilled stage 1, as the distilled pipeline samples it
        step = EulerAncestralStep(torch.Generator(device=host.device).manual_seed(seed + ANCESTRAL_NOISE_SEED_OFFSET))
    result = sample(transformer, latents, [*items, *bundle.video_items], sigmas, guidance, generator, host,
                    dtype=model.dtype, noise_scale=noise_scale, callback=StepProgress(len(sigmas) - 1),
                    step=step, audio_conditionings=bundle.audio_items)  # fmt: skip
    return bundle.with_latents(result, denoised=True)


class AIPRODSampler(io.ComfyNode):
    """One sampling stage over the audio+video latents."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODSampler",
            display_name="AIPROD Sampler",
            category=CATEGORY,
            description="Noises the latents with the seed and denoises them along a schedule: 'ltx2' (steps, with "
            "a guider for dev models), 'distilled' (8 fixed steps; LTX-2.5: ancestral Euler, as its distilled "
            "pipeline), 'distilled_stage_2' (3 refinement steps on an "
            "upsampled latent). A SIGMAS input overrides the schedule (noise scale = its first sigma). The sampler: "
            "euler or res_2s (second order). Honours the latent's retake / extension windows and frozen audio; a "
            "latent without video (Empty Audio Latent) samples audio alone. Shows progress and a latent preview; "
            "can be interrupted between steps.",
            inputs=[
                ModelSocket.Input("model", tooltip="The transformer."),
                LatentSocket.Input("latent", tooltip="Latents to sample (empty, conditioned or upsampled)."),
                ConditioningSocket.Input("conditioning", lazy=True, tooltip="Encoded prompts (encoded only once "
                                         "the model, latent and guider passed their checks)."),
                choice_input("schedule", SCHEDULES, "Sigma schedule: ltx2 (uses steps), distilled, "
                             "distilled_stage_2.", default="ltx2"),
                int_input("steps", 30, "Steps of the ltx2 schedule (LTX-2.3: 30, LTX-2: 40)."),
                seed_input("Noise seed."),
                GuiderSocket.Input("guider", optional=True,
                                   tooltip="Guidance (dev models); none = positive prompt only (distilled)."),
                VideoVAESocket.Input("video_vae", optional=True,
                                     tooltip="Needed when the latent carries image or reference conditioning."),
                io.Sigmas.Input("sigmas", optional=True, tooltip="Custom sigmas (override the schedule)."),
                choice_input("sampler", SAMPLERS, "euler: first-order (one model call per step). res_2s: the "
                             "second-order sampler of the HQ pipeline (two calls per step, fewer steps; LTX-2.3 HQ: "
                             "15).", default="euler", optional=True),
            ],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The denoised latents.")],
        )

    @classmethod
    def check_lazy_status(cls, model: TransformerHandle | None = None, conditioning: PromptContexts | None = None,
                          guider: GuiderSettings | None = None, **_: object) -> list[str]:
        """Model and guider meet here: their problems (STG blocks the model lacks) are raised before the prompt is
        encoded; then the conditioning is asked for."""
        if conditioning is not None:
            rules.check_problems(contexts_model_problems(conditioning, model))
            return []
        if model is not None:
            rules.check_problems(guider_model_problems(guider, model))
        return ["conditioning"]

    @classmethod
    def execute(cls, model: TransformerHandle, latent: LatentBundle, conditioning: PromptContexts, schedule: str,
                steps: int, seed: int, guider: GuiderSettings | None = None, video_vae: VideoVAE | None = None,
                sigmas: torch.Tensor | None = None, sampler: str = "euler") -> io.NodeOutput:
        values, noise_scale = _sigmas(schedule, steps, sigmas)
        ancestral = schedule == "distilled" and sigmas is None and (
            generation_defaults(model.generation).distilled_stage_1 == "euler_ancestral")
        return io.NodeOutput(run_stage(model, latent, conditioning, values, noise_scale, seed, guider, video_vae,
                                       sampler, ancestral))


class AIPRODLatentUpsample(io.ComfyNode):
    """Spatial latent upsample (x2 or x1.5, by the upsampler file) of the video latent; audio unchanged."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODLatentUpsample",
            display_name="AIPROD Latent Upsample",
            category=CATEGORY,
            description="Upsamples the video latent with the LTX latent upsampler (normalised with the video VAE's "
            "statistics). Follow with a 'distilled_stage_2' sampler to refine.",
            inputs=[
                LatentSocket.Input("latent", tooltip="Sampled latents."),
                UpsamplerSocket.Input("upsampler", tooltip="From 'AIPROD Latent Upsampler Loader'."),
                VideoVAESocket.Input("video_vae", tooltip="The video VAE (its latent statistics)."),
            ],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="Upsampled latents.")],
        )

    @classmethod
    def execute(cls, latent: LatentBundle, upsampler, video_vae: VideoVAE) -> io.NodeOutput:
        module = upsampler.get()
        config = getattr(module, "config", None)
        if config is not None and config.temporal_upsample and not config.spatial_upsample:
            raise ValueError("upsampler: LTX-2.5's temporal upscaler (twice the frame rate); use AIPROD Temporal "
                             "Upsample for it, or load a spatial upscaler (spatial-upscaler-x2) here")
        result = upsample(latent.latents, module, video_vae.encoder.get(), ComfyModelHost())
        # the references condition stage 1 only (the refinement runs without them, as the IC-LoRA pipeline)
        return io.NodeOutput(replace(latent.with_latents(result, denoised=latent.denoised), references=()))
