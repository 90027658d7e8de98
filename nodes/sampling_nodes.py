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
from ..aiprod_core.sampling import Guidance, Pass, StreamGuider, distilled_sigmas, ltx2_sigmas
from .latent_nodes import first_problem
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

__all__ = ["AIPRODGuider", "AIPRODLatentUpsample", "AIPRODSampler", "parse_blocks", "run_stage"]

CATEGORY = "AIPROD/sampling"
SCHEDULES = ("ltx2", "distilled", "distilled_stage_2")
MAX_SEED = 2**64 - 1
MAX_SCALE = 100.0
STREAM_DEFAULTS = {"video": 3.0, "audio": 7.0}  # ltx-pipelines' CFG per stream


def parse_blocks(text: str, name: str) -> tuple[int, ...]:
    """'28' or '27, 28' -> (27, 28); empty -> () (STG off)."""
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as exc:
        raise ValueError(f"{name}={text!r}: expected comma-separated block indices such as '28' or '27,28'") from exc


def _stream_inputs(stream: str) -> list:
    return [
        io.Float.Input(f"{stream}_cfg", default=STREAM_DEFAULTS[stream], min=0.0, max=MAX_SCALE, step=0.1,
                       tooltip=f"{stream} classifier-free guidance scale (1 = off; needs a negative prompt)."),
        io.Float.Input(f"{stream}_stg", default=1.0, min=0.0, max=MAX_SCALE, step=0.1,
                       tooltip=f"{stream} spatio-temporal guidance scale (0 = off)."),
        io.String.Input(f"{stream}_stg_blocks", default="28",
                        tooltip="Transformer blocks STG perturbs, comma-separated (LTX-2.3: 28, LTX-2: 29)."),
        io.Float.Input(f"{stream}_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                       tooltip=f"{stream} guidance std rescale (0 = off)."),
        io.Float.Input(f"{stream}_modality_scale", default=3.0, min=0.0, max=MAX_SCALE, step=0.1,
                       tooltip=f"{stream} modality-isolation guidance scale (1 = off)."),
        io.Int.Input(f"{stream}_skip_step", default=0, min=0, max=100,
                     tooltip="Reuse the guided prediction on k of every k+1 steps (0 = never)."),
    ]


_SETTINGS = ("cfg", "stg", "stg_blocks", "rescale", "modality_scale", "skip_step")


def _guider(values: dict, stream: str) -> StreamGuider:
    v = {k: values[f"{stream}_{k}"] for k in _SETTINGS}
    blocks = parse_blocks(v["stg_blocks"], f"{stream}_stg_blocks")
    rules.check_guidance(cfg=v["cfg"], stg=v["stg"], modality=v["modality_scale"], rescale=v["rescale"],
                         skip_step=v["skip_step"], stg_blocks=blocks, stream=stream)
    return StreamGuider.multimodal(cfg_scale=v["cfg"], stg_scale=v["stg"], stg_blocks=blocks,
                                   rescale_scale=v["rescale"], modality_scale=v["modality_scale"],
                                   skip_step=v["skip_step"])  # fmt: skip


class AIPRODGuider(io.ComfyNode):
    """Multimodal guidance settings per stream (video, audio)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODGuider",
            display_name="AIPROD Guider",
            category=CATEGORY,
            description="CFG, STG (on chosen blocks), std rescale, modality isolation and step skipping for the "
            "video and the audio stream. Defaults are ltx-pipelines' (LTX-2.3).",
            inputs=[*_stream_inputs("video"), *_stream_inputs("audio")],
            outputs=[GuiderSocket.Output(display_name="guider",
                                         tooltip="Guidance for 'AIPROD Sampler' / pipeline nodes.")],
        )

    @classmethod
    def validate_inputs(cls, **values) -> bool | str:
        if any(v is None for v in values.values()):
            return True  # a linked value: checked in execute
        return first_problem(lambda: _guider(values, "video"), lambda: _guider(values, "audio")) or True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return io.NodeOutput(GuiderSettings(_guider(values, "video"), _guider(values, "audio")))


def check_guider_layers(guider: GuiderSettings, model: torch.nn.Module) -> None:
    layers = getattr(getattr(model, "config", None), "num_layers", None)
    rules.check_stream_guider(guider.video, "video", layers)
    rules.check_stream_guider(guider.audio, "audio", layers)


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


def run_stage(model: TransformerHandle, bundle: LatentBundle, conditioning: PromptContexts, sigmas: torch.Tensor,
              noise_scale: float, seed: int, guider: GuiderSettings | None, video_vae: VideoVAE | None
              ) -> LatentBundle:
    """Encode the bundle's conditioning at its size and run one sampling stage (`aiprod_core.pipelines.sample`)."""
    host = ComfyModelHost()
    transformer = model.module()
    if guider is not None:
        check_guider_layers(guider, transformer)
    latents = bundle.latents
    items = []
    if bundle.images or bundle.references:
        if video_vae is None:
            raise ValueError("video_vae=None: image / reference conditioning needs the video VAE input connected")
        encoder = video_vae.encoder.get()
        items += image_conditionings(encoder, bundle.images, latents, host, keyframes_only=bundle.keyframes_only)
        items += reference_conditionings(encoder, bundle.references, latents, host, bundle.downscale_factor)
    contexts = conditioning.to(host.device, model.dtype)
    guidance = (Guidance(contexts.positive) if guider is None
                else Guidance(contexts.positive, contexts.negative, guider.video, guider.audio))
    if guider is not None and contexts.negative is None and any(Pass.NEGATIVE in g.needs()
                                                                for g in (guider.video, guider.audio)):
        raise ValueError("conditioning: the guider's CFG needs a negative prompt; enable encode_negative or set "
                         "video_cfg / audio_cfg to 1")
    generator = torch.Generator(device=host.device).manual_seed(seed)
    result = sample(transformer, latents, items, sigmas, guidance, generator, host, dtype=model.dtype,
                    noise_scale=noise_scale, callback=StepProgress(len(sigmas) - 1))  # fmt: skip
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
            "a guider for dev models), 'distilled' (8 fixed steps), 'distilled_stage_2' (3 refinement steps on an "
            "upsampled latent). A SIGMAS input overrides the schedule (noise scale = its first sigma). Shows "
            "progress and a latent preview; can be interrupted between steps.",
            inputs=[
                ModelSocket.Input("model", tooltip="The transformer."),
                LatentSocket.Input("latent", tooltip="Latents to sample (empty, conditioned or upsampled)."),
                ConditioningSocket.Input("conditioning", tooltip="Encoded prompts."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="ltx2",
                               tooltip="Sigma schedule: ltx2 (uses steps), distilled, distilled_stage_2."),
                io.Int.Input("steps", default=30, min=1, max=rules.MAX_STEPS,
                             tooltip="Steps of the ltx2 schedule (LTX-2.3: 30, LTX-2: 40)."),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="Noise seed."),
                GuiderSocket.Input("guider", optional=True,
                                   tooltip="Guidance (dev models); none = positive prompt only (distilled)."),
                VideoVAESocket.Input("video_vae", optional=True,
                                     tooltip="Needed when the latent carries image or reference conditioning."),
                io.Sigmas.Input("sigmas", optional=True, tooltip="Custom sigmas (override the schedule)."),
            ],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The denoised latents.")],
        )

    @classmethod
    def validate_inputs(cls, schedule: str, steps: int, seed: int) -> bool | str:
        if schedule is not None and schedule not in SCHEDULES:
            return f"schedule={schedule!r}: expected one of {list(SCHEDULES)!r}"
        checks = []
        if steps is not None:
            checks.append(lambda: rules.check_steps(steps, "steps"))
        if seed is not None:
            checks.append(lambda: rules.check_seed(seed))
        return first_problem(*checks) or True

    @classmethod
    def execute(cls, model: TransformerHandle, latent: LatentBundle, conditioning: PromptContexts, schedule: str,
                steps: int, seed: int, guider: GuiderSettings | None = None, video_vae: VideoVAE | None = None,
                sigmas: torch.Tensor | None = None) -> io.NodeOutput:
        values, noise_scale = _sigmas(schedule, steps, sigmas)
        return io.NodeOutput(run_stage(model, latent, conditioning, values, noise_scale, seed, guider, video_vae))


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
        result = upsample(latent.latents, upsampler.get(), video_vae.encoder.get(), ComfyModelHost())
        # the references condition stage 1 only (the refinement runs without them, as the IC-LoRA pipeline)
        return io.NodeOutput(replace(latent.with_latents(result, denoised=latent.denoised), references=()))
