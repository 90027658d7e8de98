"""Up-front checks of a generation request: each raises ``ValueError`` naming the parameter, its value and the rule
(with the nearest valid values where there are some) before any model work.

Rules and where they come from:

- width / height: positive multiples of 32 for the one-stage pipeline (the video VAE maps 32x32 pixels to one
  latent cell) and of 64 for the two-stage ones (two stages, distilled, IC-LoRA, keyframe interpolation: stage 1
  runs at half size on the same 32-pixel grid). The reference's ``assert_resolution`` (ltx_pipelines
  utils/helpers.py) enforces the same divisors.
- num_frames: 8k + 1 (1, 9, 17, ..., 121): the VAE codes the first frame alone and then 8 frames per latent frame.
  The reference does not check it (its encoder crops, its latent shape floors); we reject.
- Size budget: latent tokens = ((F - 1) / 8 + 1) x (H / 32) x (W / 32) must stay within `MAX_VIDEO_TOKENS`,
  each side within `MAX_SIDE`.
- Frame indices of image conditionings are Python-style: ``0 .. F - 1``, or ``-F .. -1`` counted from the end
  (-1 = the last frame, resolved to ``F + index``). They need NOT be multiples of 8: index 0 replaces latent frame 0
  (keyframe interpolation appends it as a guide instead);
  any other index appends a keyframe whose time positions are shifted by the pixel index (reference
  ``VideoConditionByKeyframeIndex``), so every pixel frame is addressable. Such a keyframe spans time positions
  [k, k + 8) / fps (one latent frame, no causal first-frame shift): k = 8j - 7 lines up exactly with generated
  latent frame j, and k = F - 1 reaches 7 frames past the end; the reference imposes no alignment and neither do
  we. Two images on one frame are rejected.
- Prompts: any string, empty included (the reference encodes "" as BOS + padding; an empty negative prompt is
  common). Past the tokenizer's 1024 tokens the prompt is clipped by the tokenizer: a warning, not an error.
- Frame rate: 1 .. 240 fps (finite). The audio latent covers frames / fps seconds, so a tiny positive rate would
  ask for days of audio tokens; the node schemas' min / max are skipped by ComfyUI for validated inputs.
- Seeds 0 .. 2**64 - 1 (ComfyUI's range; ``torch.Generator.manual_seed`` accepts it); guidance scales finite and
  >= 0, rescale and strengths in [0, 1]; CRF 0..51.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..sampling.guidance import STG, Pass, SigmaBinnedGuider, StreamGuider
from .preprocess import DEFAULT_IMAGE_CRF, MAX_CRF

__all__ = [
    "MAX_FRAME_RATE",
    "MAX_SIDE",
    "MAX_VIDEO_TOKENS",
    "MIN_FRAME_RATE",
    "ImageCondition",
    "PipelineKind",
    "ReferenceVideoPlan",
    "ValidatedRequest",
    "check_budget",
    "check_frame_rate",
    "check_guidance",
    "check_lora_generation",
    "check_num_frames",
    "check_prompt",
    "check_reference_video",
    "check_resolution",
    "check_seed",
    "check_steps",
    "check_stream_guider",
    "check_strength",
    "generation_family",
    "resolve_frame_indices",
    "validate_request",
]

logger = logging.getLogger(__name__)

LATENT_PIXELS = 32  # video VAE: pixels per latent cell along height and width
LATENT_FRAMES = 8  # video VAE: pixel frames per latent frame after the first
MAX_SIDE = 8192
MAX_VIDEO_TOKENS = 1 << 18  # 262,144 latent tokens: e.g. 3840x2176 at 241 frames, 1920x1088 at 961 frames
MAX_STEPS = 1000
MAX_SEED = 2**64 - 1
MIN_FRAME_RATE = 1.0  # with the longest clip (8193 frames): ~2.3 h of audio, ~205k audio latent tokens at most
MAX_FRAME_RATE = 240.0
MAX_PROMPT_TOKENS = 1024  # the reference's tokenizer length (module_ops_from_gemma_root)


class PipelineKind(str, Enum):
    """The five generation pipelines."""

    ONE_STAGE = "one_stage"
    TWO_STAGES = "two_stages"
    DISTILLED = "distilled"
    IC_LORA = "ic_lora"
    KEYFRAME_INTERPOLATION = "keyframe_interpolation"

    @property
    def two_stage(self) -> bool:
        return self is not PipelineKind.ONE_STAGE

    @property
    def size_multiple(self) -> int:
        return 2 * LATENT_PIXELS if self.two_stage else LATENT_PIXELS


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _nearest_multiples(value: int, multiple: int) -> str:
    low = value // multiple * multiple
    candidates = [c for c in (low, low + multiple) if c >= multiple]
    return " or ".join(str(c) for c in candidates)


def check_resolution(width: int, height: int, kind: PipelineKind | str) -> None:
    """width / height: multiples of 32 (one stage) or 64 (two stages), within `MAX_SIDE`."""
    kind = PipelineKind(kind)
    multiple = kind.size_multiple
    why = (
        f"for two-stage pipelines (the first stage runs at half resolution on a {LATENT_PIXELS}-pixel latent grid)"
        if kind.two_stage
        else f"(the video VAE's latent grid is {LATENT_PIXELS} pixels)"
    )
    for name, value in (("width", width), ("height", height)):
        if not _is_int(value):
            raise ValueError(f"{name}={value!r}: must be an integer multiple of {multiple}")
        if value < multiple or value % multiple:
            raise ValueError(
                f"{name}={value}: must be a positive multiple of {multiple} {why}; "
                f"nearest valid: {_nearest_multiples(max(value, 0), multiple)}"
            )
        if value > MAX_SIDE:
            raise ValueError(f"{name}={value}: must be at most {MAX_SIDE} pixels")


def check_num_frames(num_frames: int) -> None:
    """num_frames = 8k + 1 >= 1."""
    if not _is_int(num_frames):
        raise ValueError(f"num_frames={num_frames!r}: must be an integer of the form 8k+1 (1, 9, 17, ..., 121)")
    if num_frames < 1 or (num_frames - 1) % LATENT_FRAMES:
        low = max(0, (num_frames - 1) // LATENT_FRAMES) * LATENT_FRAMES + 1
        nearest = "1" if num_frames < 1 else f"{low} or {low + LATENT_FRAMES}"
        raise ValueError(
            f"num_frames={num_frames}: must be 8k+1 (1, 9, 17, ..., 97, 121, ...) because the video VAE codes the "
            f"first frame alone and then {LATENT_FRAMES} frames per latent frame; nearest valid: {nearest}"
        )


def latent_tokens(width: int, height: int, num_frames: int) -> int:
    """Video latent tokens of a generation: ((F - 1) / 8 + 1) * (H / 32) * (W / 32)."""
    frames = (num_frames - 1) // LATENT_FRAMES + 1
    return frames * (height // LATENT_PIXELS) * (width // LATENT_PIXELS)


def check_budget(width: int, height: int, num_frames: int, max_tokens: int = MAX_VIDEO_TOKENS) -> None:
    tokens = latent_tokens(width, height, num_frames)
    if tokens > max_tokens:
        raise ValueError(
            f"width x height x num_frames = {width}x{height}x{num_frames}: {tokens} video latent tokens, more than "
            f"the budget of {max_tokens} (e.g. 1920x1088 x 961 frames or 3840x2176 x 241 frames); "
            "lower the resolution or the frame count"
        )


def check_frame_rate(frame_rate: float) -> None:
    """frames per second in [`MIN_FRAME_RATE`, `MAX_FRAME_RATE`]: the audio latent covers frames / fps seconds, so a
    tiny positive rate (1e-6) would ask for days of audio tokens and exhaust memory before sampling starts."""
    if not _is_real(frame_rate) or not math.isfinite(frame_rate) or frame_rate <= 0:
        raise ValueError(f"frame_rate={frame_rate!r}: must be a finite number > 0 (frames per second)")
    if not MIN_FRAME_RATE <= frame_rate <= MAX_FRAME_RATE:
        raise ValueError(
            f"frame_rate={frame_rate!r}: must be between {MIN_FRAME_RATE:g} and {MAX_FRAME_RATE:g} frames per second "
            "(the audio lasts frames / fps seconds; a lower rate would ask for hours of audio)"
        )


def check_steps(steps: int, name: str = "num_inference_steps") -> None:
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"{name}={steps!r}: must be an integer in [1, {MAX_STEPS}]")


def check_seed(seed: int) -> None:
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r}: must be an integer in [0, 2**64 - 1]")


def _check_finite(value: float, name: str) -> None:
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number (NaN and infinity are rejected)")


def check_strength(value: float, name: str = "strength") -> None:
    """A strength or weight in [0, 1] (1 = keep the conditioning clean / full effect)."""
    _check_finite(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r}: must be in [0, 1]")


def check_guidance(  # one optional argument per guidance setting
    *,
    cfg: float | None = None,
    stg: float | None = None,
    modality: float | None = None,
    rescale: float | None = None,
    skip_step: int | None = None,
    stg_blocks: Sequence[int] | None = None,
    num_layers: int | None = None,
    stream: str = "video",
) -> None:
    """Guidance settings of one stream: scales finite and >= 0, rescale in [0, 1], skip_step >= 0, STG blocks
    existing transformer blocks (when ``num_layers`` is known). 1.0 is "no effect" for CFG and modality scales."""
    for name, value in (("cfg_scale", cfg), ("stg_scale", stg), ("modality_scale", modality)):
        if value is not None:
            _check_finite(value, f"{stream}_{name}")
            if value < 0:
                raise ValueError(f"{stream}_{name}={value!r}: must be >= 0")
    if rescale is not None:
        check_strength(rescale, f"{stream}_rescale_scale")
    if skip_step is not None and (not _is_int(skip_step) or skip_step < 0):
        raise ValueError(f"{stream}_skip_step={skip_step!r}: must be an integer >= 0 (0 = no skipping)")
    for block in stg_blocks or ():
        if not _is_int(block) or block < 0 or (num_layers is not None and block >= num_layers):
            limit = f"0..{num_layers - 1}" if num_layers is not None else ">= 0"
            raise ValueError(f"{stream}_stg_blocks contains {block!r}: blocks must be integers in {limit}")


def check_stream_guider(
    guider: StreamGuider | SigmaBinnedGuider, stream: str = "video", num_layers: int | None = None
) -> None:
    """`check_guidance` on a built guider (every sigma bin of a `SigmaBinnedGuider`)."""
    guiders = [g for _, g in guider.bins] if isinstance(guider, SigmaBinnedGuider) else [guider]
    for one in guiders:
        check_guidance(rescale=one.rescale, skip_step=one.skip_step, num_layers=num_layers, stream=stream)
        for term in one.terms:
            scale = term.scale  # type: ignore[attr-defined]  (every term class has a scale)
            if isinstance(term, STG):
                check_guidance(stg=scale, stg_blocks=term.blocks, num_layers=num_layers, stream=stream)
            elif term.source is Pass.NEGATIVE:
                check_guidance(cfg=scale, stream=stream)
            else:
                check_guidance(modality=scale, stream=stream)


def check_prompt(prompt: str, name: str = "prompt", token_count: int | None = None) -> str:
    """Any string, empty included; beyond `MAX_PROMPT_TOKENS` (when ``token_count`` is known) a warning says the
    tokenizer clips the tail. Returns the prompt."""
    if not isinstance(prompt, str):
        raise ValueError(f"{name}={prompt!r}: must be a string (an empty string is allowed)")
    if token_count is not None and token_count > MAX_PROMPT_TOKENS:
        logger.warning(
            "%s: %d tokens; only the first %d reach the model (the tokenizer clips the rest)",
            name,
            token_count,
            MAX_PROMPT_TOKENS,
        )
    return prompt


@dataclass(frozen=True)
class ImageCondition:
    """An image to condition on: pixel frame ``frame_index`` (Python-style, -1 = last), ``strength`` in [0, 1],
    H.264 ``crf`` (0 = none), and the image's (H, W) when known (any size: it is resized and centre-cropped)."""

    frame_index: int
    strength: float = 1.0
    crf: float = DEFAULT_IMAGE_CRF
    size: tuple[int, int] | None = None


def resolve_frame_indices(images: Sequence[ImageCondition], num_frames: int) -> tuple[int, ...]:
    """Checks each image's settings and resolves frame indices to 0 .. num_frames - 1 (negative: from the end)."""
    resolved: list[int] = []
    for i, image in enumerate(images):
        name = f"images[{i}]"
        index = image.frame_index
        if not _is_int(index) or not -num_frames <= index < num_frames:
            raise ValueError(
                f"{name}.frame_index={index!r}: out of range for num_frames={num_frames}; use 0..{num_frames - 1}, "
                f"or -{num_frames}..-1 counted from the end (-1 = last frame)"
            )
        index = index + num_frames if index < 0 else index
        if index in resolved:
            raise ValueError(
                f"{name}.frame_index={image.frame_index!r}: frame {index} already has images[{resolved.index(index)}]"
            )
        resolved.append(index)
        check_strength(image.strength, f"{name}.strength")
        if not _is_real(image.crf) or not 0 <= image.crf <= MAX_CRF:
            raise ValueError(f"{name}.crf={image.crf!r}: must be a number in [0, {MAX_CRF}] (0 = no compression)")
        if image.size is not None and (len(image.size) != 2 or min(image.size) < 2):  # H, W
            raise ValueError(f"{name}.size={image.size!r}: an image needs at least 2x2 pixels (H.264 round trip)")
    return tuple(resolved)


@dataclass(frozen=True)
class ReferenceVideoPlan:
    """How an IC-LoRA reference video is used: its first ``frames`` frames, resized to (height, width)."""

    frames: int
    height: int
    width: int


def check_reference_video(
    shape: Sequence[int], *, height: int, width: int, num_frames: int, downscale_factor: int = 1
) -> ReferenceVideoPlan:
    """A reference video (F, H, W, C) of any pixel size, conditioning a generation of ``height`` x ``width``
    (IC-LoRA: its stage 1, half the output size) and ``num_frames`` frames.

    The video is resized to (height / factor, width / factor), which must sit on the 32-pixel latent grid; its
    first min(F, num_frames) frames are used, floored to 8k + 1 (a warning says so when frames are dropped).
    """
    if not _is_int(downscale_factor) or downscale_factor < 1:
        raise ValueError(f"reference_downscale_factor={downscale_factor!r}: must be an integer >= 1")
    if len(shape) != 4 or min(shape) < 1:  # F, H, W, C
        raise ValueError(f"reference video: shape {tuple(shape)}; expected (F, H, W, C) with at least one frame")
    ref_h, ref_w = height // downscale_factor, width // downscale_factor
    for name, size, ref in (("height", height, ref_h), ("width", width, ref_w)):
        if size % downscale_factor or ref % LATENT_PIXELS or ref == 0:
            raise ValueError(
                f"reference_downscale_factor={downscale_factor}: the conditioned {name} {size} / {downscale_factor} "
                f"must be a whole multiple of {LATENT_PIXELS} (the latent grid); pick a {name} that is a multiple "
                f"of {LATENT_PIXELS * downscale_factor}"
            )
    available = min(shape[0], num_frames)
    frames = (available - 1) // LATENT_FRAMES * LATENT_FRAMES + 1
    if frames != shape[0]:
        logger.warning(
            "reference video: %d frames; using the first %d (at most num_frames=%d, 8k+1 for the video VAE)",
            shape[0],
            frames,
            num_frames,
        )
    return ReferenceVideoPlan(frames=frames, height=ref_h, width=ref_w)


_VERSION = re.compile(r"(?:ltx)?[-_ v]*(\d)(?:[._]?(\d))?")


def generation_family(generation: str | None) -> str | None:
    """'2.5', '2.3' or '2.0' from the spellings in use ("2.5.0", "ltx25", "LTX-2.5 (22B family)", "2.3.0", "ltx23",
    "ltx2", "2.0"), None when unknown or empty."""
    if not generation:
        return None
    match = _VERSION.match(generation.strip().lower())
    if match is None or match.group(1) != "2":
        return None
    return f"2.{match.group(2) or 0}"


def check_lora_generation(lora_generation: str | None, model_generation: str | None, lora_name: str = "LoRA") -> None:
    """A LoRA made for one generation (LTX-2 19B, LTX-2.3 22B, LTX-2.5 22B) does not fit another's transformer."""
    lora, model = generation_family(lora_generation), generation_family(model_generation)
    if lora is None or model is None:
        logger.warning(
            "%s: cannot compare generations (LoRA %r, model %r); loading it anyway",
            lora_name,
            lora_generation,
            model_generation,
        )
        return
    if lora != model:
        raise ValueError(
            f"{lora_name}: generation={lora_generation!r} (LTX-{lora}) does not match the model's "
            f"{model_generation!r} (LTX-{model}); use a LoRA trained for LTX-{model}"
        )


@dataclass(frozen=True)
class ValidatedRequest:
    """A checked request; ``frame_indices`` are the images' resolved frame indices (0 .. num_frames - 1)."""

    kind: PipelineKind
    width: int
    height: int
    num_frames: int
    frame_rate: float
    seed: int
    frame_indices: tuple[int, ...] = ()
    reference: ReferenceVideoPlan | None = None

    @property
    def stage_1_size(self) -> tuple[int, int]:
        """(height, width) of the first stage: half size for two-stage pipelines."""
        divisor = 2 if self.kind.two_stage else 1
        return self.height // divisor, self.width // divisor


def validate_request(  # the request's fields
    kind: PipelineKind | str,
    *,
    width: int,
    height: int,
    num_frames: int,
    frame_rate: float,
    seed: int,
    steps: int | None = None,
    images: Sequence[ImageCondition] = (),
    prompt: str = "",
    negative_prompt: str | None = None,
    reference_video_shape: Sequence[int] | None = None,
    reference_downscale_factor: int = 1,
    conditioning_attention_strength: float = 1.0,
    max_video_tokens: int = MAX_VIDEO_TOKENS,
) -> ValidatedRequest:
    """All checks of one pipeline request, in the order a user fixes them. ``steps`` applies to the pipelines with
    a step count (one stage, two stages, keyframe interpolation); distilled and IC-LoRA use fixed schedules."""
    kind = PipelineKind(kind)
    check_resolution(width, height, kind)
    check_num_frames(num_frames)
    check_budget(width, height, num_frames, max_video_tokens)
    check_frame_rate(frame_rate)
    check_seed(seed)
    if steps is not None:
        check_steps(steps)
    check_prompt(prompt)
    if negative_prompt is not None:
        check_prompt(negative_prompt, "negative_prompt")
    frame_indices = resolve_frame_indices(images, num_frames)
    reference = None
    if kind is PipelineKind.IC_LORA:
        check_strength(conditioning_attention_strength, "conditioning_attention_strength")
        if reference_video_shape is None:
            raise ValueError("reference_video=None: the IC-LoRA pipeline needs a reference (control) video")
        reference = check_reference_video(
            reference_video_shape,
            height=height // 2,  # the reference video conditions stage 1
            width=width // 2,
            num_frames=num_frames,
            downscale_factor=reference_downscale_factor,
        )
    elif reference_video_shape is not None:
        raise ValueError(f"reference_video: only the IC-LoRA pipeline takes one, not {kind.value!r}")
    return ValidatedRequest(kind, width, height, num_frames, float(frame_rate), seed, frame_indices, reference)
