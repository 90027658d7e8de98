"""Per-generation defaults of the reference pipelines (ltx-pipelines 1.2.0 ``utils/constants.py``), as data.

LTX-2 (19B): 40 guided steps, STG on block 29. LTX-2.3 (22B): 30 steps, STG block 28. From ``model_version`` 2.4
(the pre-release stamp of the 2.5 architecture; the reference's ``LTX_2_4_PARAMS``) 2.3's steps and guidance are
kept and conditioning images are re-compressed at H.264 CRF 18 instead of 33; from 2.5 the distilled pipeline
samples stage 1 with the ancestral Euler step (``distilled.py``: ``ANCESTRAL_SAMPLER_SINCE_VERSION = (2, 5)``). The
guidance scales (CFG 3 video / 7 audio, STG 1, rescale 0.7, modality 3) and the distilled sigmas are the same for
every generation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

__all__ = ["GENERATION_DEFAULTS", "GenerationDefaults", "generation_defaults"]


logger = logging.getLogger(__name__)

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
class GenerationDefaults:
    """What the reference changes between generations: guided steps, the STG block, the conditioning-image CRF and
    the distilled stage-1 sampler ("euler" / "euler_ancestral", `GenerationRequest.distilled_stage_1`)."""

    steps: int
    stg_block: int
    image_crf: int
    distilled_stage_1: str = "euler"


GENERATION_DEFAULTS = {
    "2.0": GenerationDefaults(steps=40, stg_block=29, image_crf=33),
    "2.3": GenerationDefaults(steps=30, stg_block=28, image_crf=33),
    "2.4": GenerationDefaults(steps=30, stg_block=28, image_crf=18),
    "2.5": GenerationDefaults(steps=30, stg_block=28, image_crf=18, distilled_stage_1="euler_ancestral"),
}
PRE_RELEASE = "model_version 2.4"  # detect's label of a 2.4-stamped file ("LTX-2.5 (22B family, pre-release ...)")
UNKNOWN_FAMILY = "2.3"  # a model whose header does not say: the 22B defaults, as the nodes always assumed


def generation_defaults(generation: str | None) -> GenerationDefaults:
    """The defaults for a generation label or model_version ("LTX-2.5 (22B family)", "2.4.0", "ltx23", None)."""
    family = "2.4" if generation and PRE_RELEASE in generation else generation_family(generation)
    return GENERATION_DEFAULTS.get(family or UNKNOWN_FAMILY, GENERATION_DEFAULTS[UNKNOWN_FAMILY])
