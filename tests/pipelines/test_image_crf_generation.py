"""The conditioning-image H.264 CRF per model generation (ltx-pipelines 1.2.0): an image whose ``crf`` is unset
(None) is re-compressed at its generation's value, an explicit one (0 included) is kept on every model.

Facts (Lightricks/LTX-2 1.2.0, ``packages/ltx-pipelines/src/ltx_pipelines``): ``utils/constants.py`` l. 36-37
``DEFAULT_IMAGE_CRF = 33`` / ``LTX_2_4_IMAGE_CRF = 18``, l. 124 ``LTX_2_4_PARAMS`` (2.3's knobs with CRF 18), l. 130-132
the params of the newest generation a checkpoint is at or above (2.5 >= 2.4: 18; 2.3 and 2.0: 33);
``utils/args.py`` l. 55-65 ``ImageConditioningInput.crf = None`` means "what matches the model";
``utils/blocks.py`` l. 966-983 ``ImageConditioner.resolve_crf`` fills only the unset ones.
"""

from __future__ import annotations

import pytest
import torch
from pipeline_oracle import tiny_pair
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import ImageCondition, LocalHost, empty_latents, image_conditionings
from aiprod.aiprod_core.pipelines import validation as rules


def _encoded(crf: float | None, generation: str | None) -> torch.Tensor:
    image = torch.rand(48, 80, 3, generator=torch.Generator().manual_seed(4))
    latents = empty_latents(64, 64, 9, 24.0)
    (item,) = image_conditionings(tiny_pair(tc.LTX23).ours.video_encoder, [ImageCondition(image, 0, 1.0, crf)],
                                  latents, LocalHost(), generation=generation)  # fmt: skip
    return item.latent


@torch.no_grad()
def test_unset_crf_follows_the_generation_and_explicit_crf_is_kept() -> None:
    at_18, at_33 = _encoded(18, None), _encoded(33, None)
    assert not torch.equal(at_18, at_33)  # the two round trips do differ on this image
    for generation in ("2.5.0", "LTX-2.5 (22B family)", "LTX-2.5 (22B family, pre-release model_version 2.4)"):
        assert torch.equal(_encoded(None, generation), at_18)
        assert torch.equal(_encoded(33, generation), at_33)  # an explicit choice stays
    for generation in ("2.3.0", "LTX-2 (19B)", None):  # unknown: the 22B defaults, 33 like LTX-2.3
        assert torch.equal(_encoded(None, generation), at_33)
        assert torch.equal(_encoded(18, generation), at_18)
    assert not torch.equal(_encoded(0, "2.5.0"), at_18)  # 0: no round trip, also on 2.5


def test_request_rules_take_an_unset_crf_and_refuse_out_of_range_ones() -> None:
    assert rules.image_problems([rules.ImageCondition(0, 1.0, None, (48, 80))], 9) == []
    (problem,) = rules.image_problems([rules.ImageCondition(0, 1.0, -1, (48, 80))], 9)
    assert problem.startswith("images[0].crf=-1: must be a finite number in [0, 51]")
    with pytest.raises(ValueError, match="crf=52"):
        rules.check_problems(rules.image_problems([rules.ImageCondition(0, 1.0, 52)], 9))
