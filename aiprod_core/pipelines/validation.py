"""One vocabulary and one set of rules for what a generation is asked to do, checked before any model work.

The vocabulary is the request's own field names: ``width``, ``height``, ``frames``, ``fps``, ``seed``, ``steps``,
``strength``, ``crf``, the tiling fields ``spatial_tile`` / ``spatial_overlap`` / ``temporal_tile`` /
``temporal_overlap``, and per stream (``video_`` / ``audio_`` prefix) the guidance fields ``cfg``, ``stg``,
``stg_blocks``, ``rescale``, ``modality_scale``, ``skip_step``. Every message names the field, its value and the
rule. `RULES` holds the allowed values of each numeric field as data (the node layer builds its widgets from it),
`PIPELINES` what each pipeline accepts. Each rule is written once, as a ``*_problem`` / ``*_problems`` function that
returns text; the ``check_*`` / ``validate_*`` functions raise one ``ValueError`` listing every problem.

Sources: the size divisors are the reference's ``assert_resolution`` (ltx_pipelines utils/helpers.py); it crops
frame counts that are not 8k + 1, we reject them; image frame indices are Python-style (-1 = last frame).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..sampling.guidance import STG, Pass, SigmaBinnedGuider, StreamGuider
from ..video_vae.tiling import (
    FRAMES_PER_LATENT,
    MIN_SPATIAL_TILE,
    MIN_TEMPORAL_TILE,
    PIXELS_PER_LATENT,
    SpatialTiling,
    TemporalTiling,
    TilingConfig,
)
from .generations import check_lora_generation, generation_family
from .preprocess import DEFAULT_IMAGE_CRF, MAX_CRF

if TYPE_CHECKING:
    from .latents import PromptContexts

__all__ = [
    "PIPELINES",
    "RULES",
    "ImageCondition",
    "PipelineKind",
    "PipelineRules",
    "Rule",
    "check_lora_generation",
    "check_problems",
    "check_request",
    "generation_family",
    "guidance_problems",
    "parse_indices",
    "request_problems",
    "rule",
    "validate_request",
    "value_problem",
]

logger = logging.getLogger(__name__)

LATENT_PIXELS = PIXELS_PER_LATENT  # video VAE: pixels per latent cell along height and width
LATENT_FRAMES = FRAMES_PER_LATENT  # video VAE: pixel frames per latent frame after the first
MAX_SIDE = 8192
MAX_FRAMES = LATENT_FRAMES * 1024 + 1
MAX_VIDEO_TOKENS = 1 << 18  # 262,144 latent tokens: e.g. 3840x2176 at 241 frames, 1920x1088 at 961 frames
MAX_STEPS = 1000
MAX_SEED = 2**64 - 1
MIN_FPS = 1.0  # with the longest clip (8193 frames): ~2.3 h of audio, ~205k audio latent tokens at most
MAX_FPS = 240.0
MAX_SCALE = 100.0  # guidance scales: the reference uses 1 .. 7; far larger values only blow the prediction up
MAX_SKIP_STEP = 100
MAX_DOWNSCALE = 8
MAX_TILE = 8192
MAX_SECONDS = MAX_FRAMES / MIN_FPS  # the longest clip at the lowest frame rate
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000
STREAMS = ("video", "audio")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(number: float) -> str:
    if isinstance(number, int) or (float(number).is_integer() and abs(number) < 1e15):
        return str(int(number))
    return f"{number:g}"


@dataclass(frozen=True)
class Rule:
    """The allowed values of one numeric field: ``low`` .. ``high``, integers on the grid ``offset + k * multiple``
    when ``multiple`` > 1, or exactly ``off`` (the value that switches a feature off, e.g. 0 = no tiling).
    ``why`` explains the grid to the user."""

    low: float
    high: float
    integer: bool = False
    multiple: int = 1
    offset: int = 0
    off: int | None = None
    why: str = ""

    def describe(self) -> str:
        if self.multiple > 1:
            grid = f"{self.multiple}k+{self.offset}" if self.offset else f"a multiple of {self.multiple}"
            text = f"{grid} in [{_text(self.low)}, {_text(self.high)}]"
        else:
            text = f"{'an integer' if self.integer else 'a finite number'} in [{_text(self.low)}, {_text(self.high)}]"
        if self.off is not None:
            text += f", or {self.off} (off)"
        return text + (f" ({self.why})" if self.why else "")

    def nearest(self, value: float) -> list[int]:
        """The valid grid values next to ``value`` (empty for fields without a grid)."""
        if self.multiple == 1:
            return []
        m, o = self.multiple, self.offset
        if value < self.low:
            return [int(o + math.ceil((self.low - o) / m) * m)]
        if value > self.high:
            return [int(o + (self.high - o) // m * m)]
        below = o + (math.floor(value) - o) // m * m
        return [c for c in (below, below + m) if self.low <= c <= self.high]

    def problem(self, name: str, value: object) -> str | None:
        """Why ``value`` is not allowed for field ``name``, or None."""
        if self.off is not None and _is_int(value) and value == self.off:
            return None
        if not (_is_int(value) if self.integer else _is_real(value) and math.isfinite(value)):
            return f"{name}={value!r}: must be {self.describe()}"
        assert isinstance(value, int | float)
        if self.low <= value <= self.high and (self.multiple == 1 or (value - self.offset) % self.multiple == 0):
            return None
        nearest = self.nearest(value)
        hint = f"; nearest valid: {' or '.join(str(n) for n in nearest)}" if nearest else ""
        return f"{name}={value!r}: must be {self.describe()}{hint}"


_SIZE_WHY = f"the video VAE's latent grid is {LATENT_PIXELS} pixels"
_TWO_STAGE_WHY = f"two-stage pipelines: the first stage runs at half size on the {LATENT_PIXELS}-pixel latent grid"
RULES: dict[str, Rule] = {
    "width": Rule(LATENT_PIXELS, MAX_SIDE, True, LATENT_PIXELS, why=_SIZE_WHY),
    "height": Rule(LATENT_PIXELS, MAX_SIDE, True, LATENT_PIXELS, why=_SIZE_WHY),
    "frames": Rule(1, MAX_FRAMES, True, LATENT_FRAMES, 1, why="1, 9, 17, ..., 97, 121, ...: the video VAE codes the "
                   f"first frame alone and then {LATENT_FRAMES} frames per latent frame"),
    "fps": Rule(MIN_FPS, MAX_FPS, why="frames per second; the audio lasts frames / fps seconds, so a lower rate "
                "would ask for hours of audio"),
    "seed": Rule(0, MAX_SEED, True),
    "steps": Rule(1, MAX_STEPS, True),
    "strength": Rule(0.0, 1.0),
    "crf": Rule(0, MAX_CRF, why="H.264 quality; 0 = no compression"),
    "reference_downscale_factor": Rule(1, MAX_DOWNSCALE, True),
    "cfg": Rule(0.0, MAX_SCALE, why="1 = off"),
    "stg": Rule(0.0, MAX_SCALE, why="0 = off"),
    "modality_scale": Rule(0.0, MAX_SCALE, why="1 = off"),
    "rescale": Rule(0.0, 1.0, why="0 = off"),
    "skip_step": Rule(0, MAX_SKIP_STEP, True, why="0 = never skip"),
    "spatial_tile": Rule(MIN_SPATIAL_TILE, MAX_TILE, True, LATENT_PIXELS, off=0, why="pixels"),
    "spatial_overlap": Rule(0, MAX_TILE, True, LATENT_PIXELS, why="pixels, less than spatial_tile"),
    "temporal_tile": Rule(MIN_TEMPORAL_TILE, MAX_TILE, True, LATENT_FRAMES, off=0, why="frames"),
    "temporal_overlap": Rule(0, MAX_TILE, True, LATENT_FRAMES, why="frames, less than temporal_tile"),
    # The edit and audio-driven pipelines (their cross-field rules: `clip_rules`).
    "start_time": Rule(0.0, MAX_SECONDS, why="seconds"),
    "end_time": Rule(0.0, MAX_SECONDS, why="seconds"),
    "max_duration": Rule(0.0, MAX_SECONDS, off=0, why="seconds; 0 = the clip's duration"),
    "extend_frames": Rule(LATENT_FRAMES, MAX_FRAMES - 1, True, LATENT_FRAMES, why="frames added after the source"),
    "context_frames": Rule(1, MAX_FRAMES, True, LATENT_FRAMES, 1, off=0,
                           why="last source frames the continuation sees; 0 = the whole source"),
    "sample_rate": Rule(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, True, why="Hz"),
}


@dataclass(frozen=True)
class PipelineRules:
    """What one pipeline accepts: its size grid in pixels, the divisor of its first stage's size, whether it takes
    steps and a guider, and whether it needs a reference (control) video."""

    size_multiple: int
    stage_1_divisor: int = 1
    guided: bool = True
    reference_video: bool = False


class PipelineKind(str, Enum):
    """The generation pipelines (their rules are `PIPELINES`)."""

    ONE_STAGE = "one_stage"
    TWO_STAGES = "two_stages"
    DISTILLED = "distilled"
    IC_LORA = "ic_lora"
    KEYFRAME_INTERPOLATION = "keyframe_interpolation"
    TWO_STAGES_HQ = "two_stages_hq"
    AUDIO_TO_VIDEO = "audio_to_video"
    RETAKE = "retake"
    EXTEND = "extend"
    TEXT_TO_AUDIO = "text_to_audio"

    @property
    def rules(self) -> PipelineRules:
        return PIPELINES[self]

    @property
    def two_stage(self) -> bool:
        return self.rules.stage_1_divisor > 1

    @property
    def size_multiple(self) -> int:
        return self.rules.size_multiple


_HALF = 2 * LATENT_PIXELS
PIPELINES: dict[PipelineKind, PipelineRules] = {
    PipelineKind.ONE_STAGE: PipelineRules(LATENT_PIXELS),
    PipelineKind.TWO_STAGES: PipelineRules(_HALF, 2),
    PipelineKind.DISTILLED: PipelineRules(_HALF, 2, guided=False),
    PipelineKind.IC_LORA: PipelineRules(_HALF, 2, guided=False, reference_video=True),
    PipelineKind.KEYFRAME_INTERPOLATION: PipelineRules(_HALF, 2),
    PipelineKind.TWO_STAGES_HQ: PipelineRules(_HALF, 2),
    PipelineKind.AUDIO_TO_VIDEO: PipelineRules(_HALF, 2),
    PipelineKind.RETAKE: PipelineRules(LATENT_PIXELS),  # the source's own size, guided or distilled
    PipelineKind.EXTEND: PipelineRules(LATENT_PIXELS),
    PipelineKind.TEXT_TO_AUDIO: PipelineRules(LATENT_PIXELS),  # no video: only frames and fps (the duration)
}


def rule(name: str, kind: PipelineKind | str | None = None) -> Rule:
    """The rule of field ``name`` (a stream prefix such as ``video_cfg`` is allowed); width and height follow the
    grid of pipeline ``kind``."""
    base = RULES.get(name)
    if base is None:
        stream, _, field = name.partition("_")
        if stream not in STREAMS or field not in RULES:
            raise KeyError(f"{name!r} is not a request field; known: {sorted(RULES)}")
        base = RULES[field]
    if kind is not None and name in ("width", "height"):
        multiple = PipelineKind(kind).size_multiple
        if multiple != base.multiple:
            base = dataclasses.replace(base, low=multiple, multiple=multiple, why=_TWO_STAGE_WHY)
    return base


def value_problem(name: str, value: object, kind: PipelineKind | str | None = None) -> str | None:
    """Why ``value`` is not allowed for request field ``name``, or None."""
    return rule(name, kind).problem(name, value)


def check_problems(problems: Sequence[str | None]) -> None:
    """One ``ValueError`` listing every problem (Nones are skipped); nothing when there are none."""
    found = [p for p in problems if p]
    if found:
        raise ValueError("\n".join(found))


def fields_problems(values: dict[str, object], kind: PipelineKind | str | None = None) -> list[str]:
    """`value_problem` of each field in ``values`` (a None value is skipped: not known yet)."""
    return [p for name, value in values.items() if value is not None and (p := value_problem(name, value, kind))]


def latent_tokens(width: int, height: int, frames: int) -> int:
    """Video latent tokens of a generation: ((F - 1) / 8 + 1) * (H / 32) * (W / 32)."""
    return ((frames - 1) // LATENT_FRAMES + 1) * (height // LATENT_PIXELS) * (width // LATENT_PIXELS)


def budget_problem(width: int, height: int, frames: int, max_tokens: int = MAX_VIDEO_TOKENS) -> str | None:
    tokens = latent_tokens(width, height, frames)
    if tokens <= max_tokens:
        return None
    return (f"width x height x frames = {width}x{height}x{frames}: {tokens} video latent tokens, more than the "
            f"budget of {max_tokens} (e.g. 1920x1088 x 961 frames or 3840x2176 x 241 frames); lower the resolution "
            "or the frame count")


def size_problems(width: object, height: object, frames: object, fps: object,
                  kind: PipelineKind | str | None = None) -> list[str]:
    """The size rules (a None value is not known yet and skipped), then the token budget once all are valid."""
    problems = fields_problems({"width": width, "height": height, "frames": frames, "fps": fps}, kind)
    if not problems and None not in (width, height, frames):
        problems += [p for p in (budget_problem(width, height, frames),) if p]  # type: ignore[arg-type]
    return problems


def tiling_problems(spatial_tile: object, spatial_overlap: object, temporal_tile: object,
                    temporal_overlap: object) -> list[str]:
    """Decode tiles: sizes on the latent grid (0 = that axis whole), overlaps smaller than their tiles."""
    values = {"spatial_tile": spatial_tile, "spatial_overlap": spatial_overlap, "temporal_tile": temporal_tile,
              "temporal_overlap": temporal_overlap}
    problems = fields_problems(values)
    for tile, overlap in (("spatial_tile", "spatial_overlap"), ("temporal_tile", "temporal_overlap")):
        size, over = values[tile], values[overlap]
        if not problems and size and over is not None and over >= size:  # type: ignore[operator]
            problems.append(f"{overlap}={over!r}: must be less than {tile}={size!r}")
    return problems


def tiling_config(spatial_tile: int, spatial_overlap: int, temporal_tile: int,
                  temporal_overlap: int) -> TilingConfig | None:
    """The decode's `TilingConfig` (None: no tiling) after `tiling_problems`."""
    check_problems(tiling_problems(spatial_tile, spatial_overlap, temporal_tile, temporal_overlap))
    spatial = SpatialTiling(spatial_tile, spatial_overlap) if spatial_tile else None
    temporal = TemporalTiling(temporal_tile, temporal_overlap) if temporal_tile else None
    return None if spatial is None and temporal is None else TilingConfig(spatial, temporal)


def parse_indices(text: object, name: str, example: str = "'28' or '27, 28'") -> tuple[int, ...]:
    """Comma-separated integers, strictly: '27, 28' -> (27, 28), '' -> (); an empty entry ('1,,0'), a trailing
    comma or anything but an integer is an error naming ``name``."""
    if not isinstance(text, str):
        raise ValueError(f"{name}={text!r}: expected comma-separated integers such as {example}")
    if not text.strip():
        return ()
    parts = [part.strip() for part in text.split(",")]
    bad = [part for part in parts if not re.fullmatch(r"[+-]?\d{1,9}", part)]
    if bad:
        what = "an empty entry" if "" in bad else f"{bad[0]!r} is not an integer"
        raise ValueError(f"{name}={text!r}: {what}; expected comma-separated integers such as {example}")
    return tuple(int(part) for part in parts)


def stg_blocks_problem(blocks: Sequence[int], name: str, num_layers: int | None = None) -> str | None:
    """STG blocks are existing transformer blocks: >= 0, < the model's block count when it is known."""
    bad = [b for b in blocks if not _is_int(b) or b < 0 or (num_layers is not None and b >= num_layers)]
    if not bad:
        return None
    if num_layers is None:
        return f"{name}={tuple(blocks)!r}: block {bad[0]!r} is not a transformer block index (0, 1, 2, ...)"
    return (f"{name}={tuple(blocks)!r}: the model has {num_layers} transformer blocks (0..{num_layers - 1}), so "
            f"block {bad[0]!r} does not exist; set the guider's {name} to blocks in 0..{num_layers - 1}")


def guidance_problems(stream: str, *, num_layers: int | None = None, **settings: object) -> list[str]:
    """One stream's guidance settings (``cfg``, ``stg``, ``stg_blocks``, ``rescale``, ``modality_scale``,
    ``skip_step``; None = not given) under the names ``<stream>_<setting>``."""
    blocks = settings.pop("stg_blocks", None)
    problems = fields_problems({f"{stream}_{k}": v for k, v in settings.items()})
    if blocks is not None:
        problems += [p for p in (stg_blocks_problem(blocks, f"{stream}_stg_blocks", num_layers),) if p]  # type: ignore[arg-type]
    return problems


def guider_problems(guider: StreamGuider | SigmaBinnedGuider, stream: str = "video",
                    num_layers: int | None = None) -> list[str]:
    """`guidance_problems` of a built guider (every sigma bin of a `SigmaBinnedGuider`)."""
    problems: list[str] = []
    for one in [g for _, g in guider.bins] if isinstance(guider, SigmaBinnedGuider) else [guider]:
        problems += guidance_problems(stream, rescale=one.rescale, skip_step=one.skip_step)
        for term in one.terms:
            scale = term.scale  # type: ignore[attr-defined]  (every term class has a scale)
            if isinstance(term, STG):
                problems += guidance_problems(stream, stg=scale, stg_blocks=term.blocks, num_layers=num_layers)
            else:
                problems += guidance_problems(stream, **{"cfg" if term.source is Pass.NEGATIVE else "modality_scale":
                                                         scale})
    return list(dict.fromkeys(problems))


@dataclass(frozen=True)
class ImageCondition:
    """An image to condition on: pixel frame ``frame_index`` (Python-style, -1 = last), ``strength`` in [0, 1],
    H.264 ``crf`` (0 = none, None = the model generation's value), and the image's (H, W) when known (any size: it is
    resized and centre-cropped)."""

    frame_index: int
    strength: float = 1.0
    crf: float | None = DEFAULT_IMAGE_CRF
    size: tuple[int, int] | None = None


def _images(images: Sequence[ImageCondition], frames: int) -> tuple[tuple[int, ...], list[str]]:
    """(resolved frame indices, problems) of the images of a ``frames``-frame clip."""
    resolved: list[int] = []
    problems: list[str] = []
    for i, image in enumerate(images):
        name, index = f"images[{i}]", image.frame_index
        if not _is_int(index) or not -frames <= index < frames:
            problems.append(f"{name}.frame_index={index!r}: out of range for frames={frames}; use 0..{frames - 1}, "
                            f"or -{frames}..-1 counted from the end (-1 = last frame)")
        else:
            index = index + frames if index < 0 else index
            if index in resolved:
                problems.append(f"{name}.frame_index={image.frame_index!r}: frame {index} already has "
                                f"images[{resolved.index(index)}]")
        resolved.append(index)
        crf = None if image.crf is None else rule("crf").problem(f"{name}.crf", image.crf)  # None: the generation's
        problems += [p for p in (rule("strength").problem(f"{name}.strength", image.strength), crf) if p]
        if image.size is not None and (len(image.size) != 2 or min(image.size) < 2):  # H, W
            problems.append(f"{name}.size={image.size!r}: an image needs at least 2x2 pixels (H.264 round trip)")
    return tuple(resolved), problems


def image_problems(images: Sequence[ImageCondition], frames: int) -> list[str]:
    return _images(images, frames)[1]


def resolve_frame_indices(images: Sequence[ImageCondition], frames: int) -> tuple[int, ...]:
    """Checks each image's settings and resolves frame indices to 0 .. frames - 1 (negative: from the end)."""
    resolved, problems = _images(images, frames)
    check_problems(problems)
    return resolved


@dataclass(frozen=True)
class ReferenceVideoPlan:
    """How an IC-LoRA reference video is used: its first ``frames`` frames, resized to (height, width)."""

    frames: int
    height: int
    width: int


def reference_video_problems(shape: Sequence[int], *, height: int, width: int, frames: int,
                             downscale_factor: int = 1) -> list[str]:
    """A reference video (F, H, W, C) conditioning a generation of ``height`` x ``width`` (IC-LoRA: its stage 1)
    is resized to 1 / ``downscale_factor`` of that, which must sit on the 32-pixel latent grid."""
    problem = value_problem("reference_downscale_factor", downscale_factor)
    if problem:
        return [problem]
    problems = []
    if len(shape) != 4 or min(shape) < 1:  # F, H, W, C
        problems.append(f"reference video: shape {tuple(shape)}; expected (F, H, W, C) with at least one frame")
    for name, size in (("height", height), ("width", width)):
        if size % downscale_factor or (size // downscale_factor) % LATENT_PIXELS or size < downscale_factor:
            problems.append(f"reference_downscale_factor={downscale_factor}: the conditioned {name} {size} / "
                            f"{downscale_factor} must be a whole multiple of {LATENT_PIXELS} (the latent grid); pick "
                            f"a {name} that is a multiple of {LATENT_PIXELS * downscale_factor}")
    return problems


def check_reference_video(shape: Sequence[int], *, height: int, width: int, frames: int,
                          downscale_factor: int = 1) -> ReferenceVideoPlan:
    """`reference_video_problems`, then the plan: the first min(F, frames) frames floored to 8k + 1 (a warning says
    so when frames are dropped), resized to (height, width) / ``downscale_factor``."""
    check_problems(reference_video_problems(shape, height=height, width=width, frames=frames,
                                            downscale_factor=downscale_factor))
    used = (min(shape[0], frames) - 1) // LATENT_FRAMES * LATENT_FRAMES + 1
    if used != shape[0]:
        logger.warning("reference video: %d frames; using the first %d (at most frames=%d, 8k+1 for the video VAE)",
                       shape[0], used, frames)
    return ReferenceVideoPlan(frames=used, height=height // downscale_factor, width=width // downscale_factor)


@dataclass(frozen=True)
class ValidatedRequest:
    """A checked request; ``frame_indices`` are the images' resolved frame indices (0 .. frames - 1)."""

    kind: PipelineKind
    width: int
    height: int
    frames: int
    fps: float
    seed: int
    frame_indices: tuple[int, ...] = ()
    reference: ReferenceVideoPlan | None = None

    @property
    def stage_1_size(self) -> tuple[int, int]:
        """(height, width) of the first stage: half size for two-stage pipelines."""
        divisor = self.kind.rules.stage_1_divisor
        return self.height // divisor, self.width // divisor


def request_problems(kind: PipelineKind | str, *, width: object, height: object, frames: object, fps: object,
                     seed: object, steps: object = None, images: Sequence[ImageCondition] = (),
                     reference_video_shape: Sequence[int] | None = None, reference_downscale_factor: int = 1,
                     conditioning_attention_strength: float = 1.0) -> list[str]:
    """Every problem of one pipeline request, in the order a user fixes them. ``steps`` applies to the guided
    pipelines; the distilled and IC-LoRA ones use fixed schedules."""
    kind = PipelineKind(kind)
    problems = size_problems(width, height, frames, fps, kind) + fields_problems({"seed": seed, "steps": steps})
    if problems:
        return problems
    problems += _images(images, frames)[1]  # type: ignore[arg-type]
    if kind.rules.reference_video:
        problem = rule("strength").problem("conditioning_attention_strength", conditioning_attention_strength)
        problems += [problem] if problem else []
        if reference_video_shape is None:
            problems.append(f"reference_video=None: the {kind.value} pipeline needs a reference (control) video")
        else:
            divisor = kind.rules.stage_1_divisor  # the reference video conditions stage 1
            problems += reference_video_problems(reference_video_shape, height=height // divisor,  # type: ignore[operator]
                                                 width=width // divisor, frames=frames,  # type: ignore[operator]
                                                 downscale_factor=reference_downscale_factor)
    elif reference_video_shape is not None:
        problems.append(f"reference_video: only pipelines with a control video take one, not {kind.value!r}")
    return problems


def validate_request(kind: PipelineKind | str, **fields: Any) -> ValidatedRequest:
    """`request_problems` raised as one ``ValueError``, else the checked request."""
    kind = PipelineKind(kind)
    check_problems(request_problems(kind, **fields))
    indices = _images(fields.get("images", ()), fields["frames"])[0]
    reference = None
    if fields.get("reference_video_shape") is not None:
        divisor = kind.rules.stage_1_divisor
        reference = check_reference_video(fields["reference_video_shape"], height=fields["height"] // divisor,
                                          width=fields["width"] // divisor, frames=fields["frames"],
                                          downscale_factor=fields.get("reference_downscale_factor", 1))
    return ValidatedRequest(kind, fields["width"], fields["height"], fields["frames"], float(fields["fps"]),
                            fields["seed"], indices, reference)


def context_widths(model_config: object) -> tuple[int, int] | None:
    """(video, audio) width of the prompt contexts a transformer takes, from its config (None: not known)."""
    if model_config is None or not hasattr(model_config, "inner_dim"):
        return None
    if getattr(model_config, "caption_projection_in_transformer", False):  # LTX-2: projected inside the model
        channels = model_config.caption_channels  # type: ignore[attr-defined]
        return channels, channels
    return model_config.inner_dim, model_config.audio_inner_dim  # type: ignore[attr-defined]


def contexts_problems(contexts: PromptContexts, guided: Any = None, model_config: object = None) -> list[str]:
    """Prompt contexts for a run: both positive streams, a negative where a guider's CFG needs one, and the widths
    the transformer takes (a context from another model's text encoder fails here, not in the sampler)."""
    problems = []
    widths = context_widths(model_config)
    for label, prompt in (("positive", contexts.positive), ("negative", contexts.negative)):
        if prompt is None:
            continue
        for index, stream in enumerate(STREAMS):
            context = getattr(prompt, stream)
            if context is None:
                problems.append(f"{label} {stream} context: missing; video and audio contexts are both required")
            elif context.ndim != 3 or (widths is not None and context.shape[-1] != widths[index]):
                expected = "(B, S, D)" if widths is None else f"(B, S, {widths[index]})"
                problems.append(f"{label} {stream} context: shape {tuple(context.shape)}, expected {expected} for "
                                "this model (encode the prompt with this model's text encoder)")
    for stream in STREAMS if guided is not None else ():
        if Pass.NEGATIVE in getattr(guided, stream).needs() and contexts.negative is None:
            problems.append(f"negative=None: the {stream} guider's CFG needs negative prompt contexts; encode a "
                            f"negative prompt or set {stream}_cfg to 1")
    return problems


def check_request(request: Any, contexts: PromptContexts, kind: PipelineKind, *, guided: Any = None,
                  references: Sequence[Any] = (), downscale_factor: int = 1, model_config: object = None) -> Any:
    """Every rule of a pipeline run (request, references, guidance against the model, contexts) raised as one
    ``ValueError``; returns ``request`` with the images' frame indices resolved (negative count from the end)."""
    images = [ImageCondition(image.frame_index, image.strength, image.crf, tuple(image.image.shape[-3:-1]))
              for image in request.images]
    fields = {"width": request.width, "height": request.height, "frames": request.frames, "fps": request.fps,
              "seed": request.seed, "steps": None if guided is None else guided.steps, "images": images,
              "reference_video_shape": tuple(references[0].video.shape) if references else None,
              "reference_downscale_factor": downscale_factor}
    problems = request_problems(kind, **fields)
    divisor = kind.rules.stage_1_divisor
    for index, reference in enumerate(references):
        problems += [p for p in (rule("strength").problem(f"references[{index}].strength", reference.strength),
                                 rule("strength").problem(f"references[{index}].attention_strength",
                                                          reference.attention_strength)) if p]
        if index > 0 and not problems:  # request_problems checked the first
            problems += reference_video_problems(tuple(reference.video.shape), height=request.height // divisor,
                                                 width=request.width // divisor, frames=request.frames,
                                                 downscale_factor=downscale_factor)
    num_layers = getattr(model_config, "num_layers", None)
    for stream in STREAMS if guided is not None else ():
        problems += guider_problems(getattr(guided, stream), stream, num_layers)
    problems += contexts_problems(contexts, guided, model_config)
    check_problems(problems)
    resolved = _images(images, request.frames)[0]
    return dataclasses.replace(request, images=tuple(dataclasses.replace(image, frame_index=index)
                                                     for image, index in zip(request.images, resolved, strict=True)))
