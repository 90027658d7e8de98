"""Request validation: one vocabulary (frames, fps, steps, ...), the rules as data (agreeing with the reference's own
checks where it has some), every problem of a request in one message, and strict parsing of index lists."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from aiprod.aiprod_core.pipelines.saved_latents import saved_latents_problems
from aiprod.aiprod_core.pipelines.validation import (
    MAX_SEED,
    PIPELINES,
    RULES,
    ImageCondition,
    PipelineKind,
    check_reference_video,
    generation_family,
    guidance_problems,
    guider_problems,
    parse_indices,
    request_problems,
    resolve_frame_indices,
    rule,
    size_problems,
    tiling_config,
    tiling_problems,
    validate_request,
    value_problem,
)
from aiprod.aiprod_core.sampling.guidance import CFG, STG, SigmaBinnedGuider, StreamGuider

KINDS = list(PipelineKind)


def _message(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


@pytest.mark.oracle
@pytest.mark.parametrize("kind", KINDS)
def test_resolution_rule_agrees_with_reference_assert(kind: PipelineKind) -> None:
    from ltx_pipelines.utils.helpers import assert_resolution

    for size in (32, 64, 96, 100, 128, 480, 512, 704, 720, 736, 768, 1080, 1088, 1920):
        try:
            assert_resolution(height=size, width=512, is_two_stage=kind.two_stage)
            ref_ok = True
        except ValueError:
            ref_ok = False
        assert (value_problem("height", size, kind) is None) == ref_ok, (kind, size)


def test_every_pipeline_declares_its_rules_as_data() -> None:
    assert set(PIPELINES) == set(PipelineKind)
    assert [k.size_multiple for k in KINDS] == [32, 64, 64, 64, 64, 64, 64, 32, 32, 32]
    assert rule("width", "two_stages").low == 64 and rule("width").low == 32
    assert rule("video_cfg") is RULES["cfg"] and rule("audio_skip_step") is RULES["skip_step"]
    with pytest.raises(KeyError, match="not a request field"):
        rule("num_frames")


def test_size_messages_name_value_rule_and_nearest() -> None:
    assert value_problem("width", 720, "two_stages") == (
        "width=720: must be a multiple of 64 in [64, 8192] (two-stage pipelines: the first stage runs at half size "
        "on the 32-pixel latent grid); nearest valid: 704 or 768"
    )
    assert "nearest valid: 480 or 512" in value_problem("height", 500, PipelineKind.ONE_STAGE)
    assert value_problem("width", 0, "distilled").endswith("nearest valid: 64")
    assert value_problem("width", -64, "one_stage").endswith("nearest valid: 32")
    assert "width=512.0: must be a multiple of 32" in value_problem("width", 512.0, "one_stage")
    assert value_problem("width", 16384).endswith("nearest valid: 8192")
    assert value_problem("width", 736, "one_stage") is None and value_problem("width", 768, "ic_lora") is None
    with pytest.raises(ValueError, match="'three_stages' is not a valid PipelineKind"):
        value_problem("width", 512, "three_stages")


def test_frames_are_8k_plus_1() -> None:
    for frames in (1, 9, 17, 97, 121, 257):
        assert value_problem("frames", frames) is None
    assert value_problem("frames", 100) == (
        "frames=100: must be 8k+1 in [1, 8193] (1, 9, 17, ..., 97, 121, ...: the video VAE codes the first frame "
        "alone and then 8 frames per latent frame); nearest valid: 97 or 105"
    )
    assert value_problem("frames", 0).endswith("nearest valid: 1")
    assert value_problem("frames", 8).endswith("nearest valid: 1 or 9")
    assert "frames=9.0: must be 8k+1" in value_problem("frames", 9.0)


def test_scalars_reject_nan_inf_and_out_of_range() -> None:
    assert value_problem("fps", 24) is None and value_problem("fps", 23.976) is None
    for bad in (0, -24.0, math.nan, math.inf, "24", True, 0.000864, 1e9):
        assert f"fps={bad!r}: must be a finite number in [1, 240]" in value_problem("fps", bad)
    assert value_problem("steps", 0) == "steps=0: must be an integer in [1, 1000]"
    assert value_problem("seed", 0) is None and value_problem("seed", MAX_SEED) is None
    assert value_problem("seed", -1) == f"seed=-1: must be an integer in [0, {MAX_SEED}]"
    assert value_problem("strength", 1) is None
    assert value_problem("strength", 1.5) == "strength=1.5: must be a finite number in [0, 1]"
    assert "strength=nan: must be a finite number" in value_problem("strength", math.nan)


def test_a_request_reports_every_problem_at_once() -> None:
    problems = request_problems("one_stage", width=100, height=64, frames=10, fps=0.0, seed=-1)
    assert [p.split("=")[0] for p in problems] == ["width", "frames", "fps", "seed"]
    message = _message(lambda: validate_request("two_stages", width=96, height=96, frames=9, fps=24.0, seed=0))
    assert message.count("\n") == 1 and message.startswith("width=96") and "height=96" in message
    assert size_problems(None, 64, None, 24.0) == []  # values linked from other nodes are not known yet
    assert "video latent tokens, more than the budget" in size_problems(8192, 8192, 257, 24.0)[0]


def test_guidance_ranges_are_checked_up_front() -> None:
    assert guidance_problems("video", cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7, skip_step=0,
                             stg_blocks=(28,), num_layers=48) == []
    assert guidance_problems("video", cfg=1e300)[0].startswith("video_cfg=1e+300: must be a finite number in [0, 100]")
    assert guidance_problems("audio", skip_step=10**9)[0].startswith("audio_skip_step=1000000000: must be an integer")
    assert "video_cfg=nan" in guidance_problems("video", cfg=math.nan)[0]
    assert "video_rescale=1.2" in guidance_problems("video", rescale=1.2)[0]
    assert guidance_problems("video", stg_blocks=(28, 48), num_layers=48) == [
        "video_stg_blocks=(28, 48): the model has 48 transformer blocks (0..47), so block 48 does not exist; set "
        "the guider's video_stg_blocks to blocks in 0..47"
    ]
    assert "block -1 is not a transformer block" in guidance_problems("audio", stg_blocks=(-1,))[0]


def test_built_guiders_one_validator() -> None:
    assert guider_problems(StreamGuider.multimodal(3.0, 1.0, [28], 0.7, 3.0), num_layers=48) == []
    assert "audio_cfg=nan" in guider_problems(StreamGuider((CFG(math.nan),)), "audio")[0]
    binned = SigmaBinnedGuider(((1.0, StreamGuider((STG(1.0, (2,)),))), (0.5, StreamGuider(rescale=2.0))))
    problems = guider_problems(binned, num_layers=2)
    assert any("video_rescale=2.0" in p for p in problems) and any("block 2 does not exist" in p for p in problems)
    assert "video_modality_scale=-2.0" in guider_problems(StreamGuider.multimodal(modality_scale=-2.0))[0]


def test_index_lists_are_parsed_strictly() -> None:
    assert parse_indices("28", "b") == (28,) and parse_indices(" 27 , 28 ", "b") == (27, 28)
    assert parse_indices("", "b") == () and parse_indices("  ", "b") == ()
    assert parse_indices("0, -1", "frame_indices") == (0, -1)
    for bad, why in (("1,,0", "an empty entry"), ("1,", "an empty entry"), ("a", "'a' is not an integer"),
                     ("1.5", "'1.5' is not an integer"), ("9" * 30, "is not an integer")):
        assert why in _message(lambda bad=bad: parse_indices(bad, "video_stg_blocks")), bad
    assert _message(lambda: parse_indices(None, "b")).startswith("b=None: expected comma-separated integers")


def test_tiling_rules_in_the_request_vocabulary() -> None:
    assert tiling_problems(512, 64, 64, 24) == [] and tiling_config(0, 0, 0, 0) is None
    assert tiling_problems(100, 0, 0, 0)[0].startswith("spatial_tile=100: must be a multiple of 32 in [64, 8192]")
    assert tiling_problems(512, 512, 0, 0) == ["spatial_overlap=512: must be less than spatial_tile=512"]
    assert tiling_problems(0, 0, 16, 16) == ["temporal_overlap=16: must be less than temporal_tile=16"]
    assert "temporal_tile=12" in _message(lambda: tiling_config(512, 64, 12, 0))
    config = tiling_config(512, 64, 64, 24)
    assert config.spatial.tile_size_in_pixels == 512 and config.temporal.tile_overlap_in_frames == 24


def test_frame_indices_python_style() -> None:
    images = [ImageCondition(0), ImageCondition(-1, 0.8), ImageCondition(40), ImageCondition(-121)]
    with pytest.raises(ValueError, match=r"images\[3\]\.frame_index=-121: frame 0 already has images\[0\]"):
        resolve_frame_indices(images, 121)
    assert resolve_frame_indices(images[:3], 121) == (0, 120, 40)
    assert resolve_frame_indices([ImageCondition(-121)], 121) == (0,)
    assert resolve_frame_indices([ImageCondition(13)], 121) == (13,)  # no multiple-of-8 rule
    assert _message(lambda: resolve_frame_indices([ImageCondition(121)], 121)) == (
        "images[0].frame_index=121: out of range for frames=121; use 0..120, or -121..-1 counted from the end "
        "(-1 = last frame)"
    )
    message = _message(lambda: resolve_frame_indices([ImageCondition(0, 2.0, crf=60, size=(1, 300))], 9))
    assert "images[0].strength=2.0" in message and "images[0].crf=60" in message and "at least 2x2" in message
    resolve_frame_indices([ImageCondition(0, size=(17, 3001))], 9)  # any size >= 2x2 is resized and cropped


def test_reference_video(caplog: pytest.LogCaptureFixture) -> None:
    plan = check_reference_video((121, 480, 640, 3), height=256, width=384, frames=121, downscale_factor=2)
    assert (plan.frames, plan.height, plan.width) == (121, 128, 192)
    with caplog.at_level(logging.WARNING):
        plan = check_reference_video((200, 33, 45, 3), height=256, width=384, frames=121)
    assert (plan.frames, plan.height, plan.width) == (121, 256, 384)
    assert "200 frames; using the first 121" in caplog.text
    assert check_reference_video((30, 64, 64, 3), height=64, width=64, frames=121).frames == 25
    assert "the conditioned height 352 / 2 must be a whole multiple of 32" in _message(
        lambda: check_reference_video((9, 64, 64, 3), height=352, width=384, frames=9, downscale_factor=2))
    assert "reference_downscale_factor=0" in _message(
        lambda: check_reference_video((9, 64, 64, 3), height=64, width=64, frames=9, downscale_factor=0))
    assert "expected (F, H, W, C) with at least one frame" in _message(
        lambda: check_reference_video((0, 64, 64, 3), height=64, width=64, frames=9))


def test_generation_family() -> None:
    assert [generation_family(g) for g in ("2.3.0", "ltx23", "LTX-2.3 (22B family)", "ltx2", "2.0", "2")] == [
        "2.3", "2.3", "2.3", "2.0", "2.0", "2.0",
    ]
    assert generation_family("") is None and generation_family("sdxl") is None and generation_family(None) is None


def test_validate_request_per_kind() -> None:
    common = {"width": 768, "height": 512, "frames": 121, "fps": 24.0, "seed": 10}
    request = validate_request("two_stages", steps=30, images=[ImageCondition(-1)], **common)
    assert request.frame_indices == (120,) and request.stage_1_size == (256, 384)
    assert validate_request("one_stage", **{**common, "width": 736}).stage_1_size == (512, 736)
    assert "width=736" in _message(lambda: validate_request("keyframe_interpolation", **{**common, "width": 736}))
    assert "reference_video=None" in _message(lambda: validate_request("ic_lora", **common))
    assert "only pipelines with a control video" in _message(
        lambda: validate_request("distilled", reference_video_shape=(9, 64, 64, 3), **common))
    ic = validate_request(PipelineKind.IC_LORA, reference_video_shape=(121, 512, 768, 3),
                          reference_downscale_factor=2, **common)
    assert ic.reference is not None and (ic.reference.height, ic.reference.width) == (128, 192)
    assert "conditioning_attention_strength=1.5" in _message(
        lambda: validate_request("ic_lora", conditioning_attention_strength=1.5, reference_video_shape=(9, 8, 8, 3),
                                 **common))
    assert "8k+1" in _message(lambda: validate_request("distilled", **{**common, "frames": 120}))
    assert "3840x2176x257: 269280 video latent tokens, more than the budget of 262144" in _message(
        lambda: validate_request("two_stages", **{**common, "width": 3840, "height": 2176, "frames": 257}))


def _latents(**change) -> dict:
    tensors = {"video": torch.zeros(1, 128, 2, 2, 2), "audio": torch.zeros(1, 8, 9, 16),
               "frames": torch.tensor(9), "fps": torch.tensor(24.0, dtype=torch.float64)}
    return {k: v for k, v in {**tensors, **change}.items() if v is not None}


def test_saved_latents_are_checked_before_anything_is_allocated() -> None:
    assert saved_latents_problems(_latents(), "f") == []
    assert saved_latents_problems(_latents(video=None), "f") == [
        "f: no video tensor; expected the video, audio, frames and fps of a saved audio+video latent"]
    assert "f: fps=0.000864: must be a finite number in [1, 240]" in saved_latents_problems(
        _latents(fps=torch.tensor(0.000864, dtype=torch.float64)), "f")[0]
    assert "fps=nan" in saved_latents_problems(_latents(fps=torch.tensor(math.nan)), "f")[0]
    assert "f: frames=10000000: must be 8k+1" in saved_latents_problems(_latents(frames=torch.tensor(10**7)), "f")[0]
    assert "expected one integer" in saved_latents_problems(_latents(frames=torch.tensor([9, 9])), "f")[0]
    assert "video latent (1, 128, 3, 2, 2)" in saved_latents_problems(_latents(video=torch.zeros(1, 128, 3, 2, 2)),
                                                                      "f")[0]
    assert "audio latent (1, 8, 500, 16)" in saved_latents_problems(_latents(audio=torch.zeros(1, 8, 500, 16)),
                                                                    "f")[0]
