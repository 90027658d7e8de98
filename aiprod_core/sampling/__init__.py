"""Sampling: schedules, noise, patchifiers and positions, diffusion steps, guidance and the denoising loop."""

from .guidance import CFG, STG, CFGStar, ModalityIsolation, Pass, SigmaBinnedGuider, StreamGuider
from .loop import StepReport, denoise
from .patchify import AudioLayout, VideoLayout
from .planner import Guidance, Prompt, X0Denoiser
from .samplers import Res2s, Sampler, StreamSteps
from .schedules import DISTILLED_SIGMAS, STAGE_2_DISTILLED_SIGMAS, distilled_sigmas, ltx2_sigmas
from .state import AudioLatentShape, GaussianNoiser, LatentState, VideoLatentShape
from .steps import EulerAncestralStep, EulerStep, GradientEstimationStep

__all__ = [
    "CFG",
    "DISTILLED_SIGMAS",
    "STAGE_2_DISTILLED_SIGMAS",
    "STG",
    "AudioLatentShape",
    "AudioLayout",
    "CFGStar",
    "EulerAncestralStep",
    "EulerStep",
    "GaussianNoiser",
    "GradientEstimationStep",
    "Guidance",
    "LatentState",
    "ModalityIsolation",
    "Pass",
    "Prompt",
    "Res2s",
    "Sampler",
    "SigmaBinnedGuider",
    "StepReport",
    "StreamGuider",
    "StreamSteps",
    "VideoLatentShape",
    "VideoLayout",
    "X0Denoiser",
    "denoise",
    "distilled_sigmas",
    "ltx2_sigmas",
]
