"""Request validation: the rules (agreeing with the reference's own checks where it has some) and the messages."""

from __future__ import annotations

import logging
import math

import pytest

from aiprod.aiprod_core.pipelines.validation import (
    MAX_SEED,
    ImageCondition,
    PipelineKind,
    check_frame_rate,
    check_guidance,
    check_lora_generation,
    check_num_frames,
    check_prompt,
    check_reference_video,
    check_resolution,
    check_seed,
    check_steps,
    check_stream_guider,
    check_strength,
    generation_family,
    resolve_frame_indices,
    validate_request,
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
        try:
            check_resolution(512, size, kind)
            ours_ok = True
        except ValueError:
            ours_ok = False
        assert ours_ok == ref_ok, (kind, size)


def test_resolution_messages_name_value_rule_and_nearest() -> None:
    assert _message(lambda: check_resolution(720, 512, "two_stages")) == (
        "width=720: must be a positive multiple of 64 for two-stage pipelines (the first stage runs at half "
        "resolution on a 32-pixel latent grid); nearest valid: 704 or 768"
    )
    assert "height=500: must be a positive multiple of 32 (the video VAE's latent grid is 32 pixels); " \
        "nearest valid: 480 or 512" in _message(lambda: check_resolution(512, 500, PipelineKind.ONE_STAGE))
    assert _message(lambda: check_resolution(0, 512, "distilled")).endswith("nearest valid: 64")
    assert _message(lambda: check_resolution(-64, 512, "one_stage")).endswith("nearest valid: 32")
    assert "width=512.0: must be an integer" in _message(lambda: check_resolution(512.0, 512, "one_stage"))
    assert "width=16384: must be at most 8192" in _message(lambda: check_resolution(16384, 512, "one_stage"))
    with pytest.raises(ValueError, match="'three_stages' is not a valid PipelineKind"):
        check_resolution(512, 512, "three_stages")
    check_resolution(736, 480, "one_stage")
    check_resolution(768, 512, "ic_lora")


def test_frames_are_8k_plus_1() -> None:
    for frames in (1, 9, 17, 97, 121, 257):
        check_num_frames(frames)
    assert _message(lambda: check_num_frames(100)) == (
        "num_frames=100: must be 8k+1 (1, 9, 17, ..., 97, 121, ...) because the video VAE codes the first frame "
        "alone and then 8 frames per latent frame; nearest valid: 97 or 105"
    )
    assert _message(lambda: check_num_frames(0)).endswith("nearest valid: 1")
    assert _message(lambda: check_num_frames(8)).endswith("nearest valid: 1 or 9")
    assert "must be an integer" in _message(lambda: check_num_frames(9.0))


def test_scalars_reject_nan_inf_and_out_of_range() -> None:
    check_frame_rate(24)
    check_frame_rate(23.976)
    for bad in (0, -24.0, math.nan, math.inf, "24", True):
        assert f"frame_rate={bad!r}: must be a finite number > 0" in _message(lambda bad=bad: check_frame_rate(bad))
    check_steps(1)
    assert "num_inference_steps=0: must be an integer in [1, 1000]" in _message(lambda: check_steps(0))
    check_seed(0)
    check_seed(MAX_SEED)
    assert "seed=-1: must be an integer in [0, 2**64 - 1]" in _message(lambda: check_seed(-1))
    assert "seed=18446744073709551616" in _message(lambda: check_seed(MAX_SEED + 1))
    check_strength(0.0)
    check_strength(1)
    assert "strength=1.5: must be in [0, 1]" in _message(lambda: check_strength(1.5))
    assert "strength=nan: must be a finite number" in _message(lambda: check_strength(math.nan))


def test_guidance_settings() -> None:
    check_guidance(cfg=3.0, stg=1.0, modality=3.0, rescale=0.7, skip_step=0, stg_blocks=[28], num_layers=48)
    assert "video_cfg_scale=nan: must be a finite number" in _message(lambda: check_guidance(cfg=math.nan))
    assert "audio_stg_scale=inf" in _message(lambda: check_guidance(stg=math.inf, stream="audio"))
    assert "video_modality_scale=-1.0: must be >= 0" in _message(lambda: check_guidance(modality=-1.0))
    assert "video_rescale_scale=1.2: must be in [0, 1]" in _message(lambda: check_guidance(rescale=1.2))
    assert "video_skip_step=-1" in _message(lambda: check_guidance(skip_step=-1))
    assert "video_stg_blocks contains 48: blocks must be integers in 0..47" in _message(
        lambda: check_guidance(stg_blocks=[28, 48], num_layers=48)
    )


def test_built_guiders() -> None:
    check_stream_guider(StreamGuider.multimodal(3.0, 1.0, [28], 0.7, 3.0), num_layers=48)
    assert "audio_cfg_scale=nan" in _message(
        lambda: check_stream_guider(StreamGuider((CFG(math.nan),)), stream="audio")
    )
    binned = SigmaBinnedGuider(((1.0, StreamGuider((STG(1.0, (2,)),))), (0.5, StreamGuider(rescale=2.0))))
    assert "video_rescale_scale=2.0: must be in [0, 1]" in _message(lambda: check_stream_guider(binned))
    assert "video_stg_blocks contains 2: blocks must be integers in 0..1" in _message(
        lambda: check_stream_guider(binned, num_layers=2)
    )
    assert "video_modality_scale=-2.0" in _message(
        lambda: check_stream_guider(StreamGuider.multimodal(modality_scale=-2.0))
    )


def test_frame_indices_python_style() -> None:
    images = [ImageCondition(0), ImageCondition(-1, 0.8), ImageCondition(40), ImageCondition(-121)]
    with pytest.raises(ValueError, match=r"images\[3\]\.frame_index=-121: frame 0 already has images\[0\]"):
        resolve_frame_indices(images, 121)
    assert resolve_frame_indices(images[:3], 121) == (0, 120, 40)
    assert resolve_frame_indices([ImageCondition(-121)], 121) == (0,)
    assert resolve_frame_indices([ImageCondition(13)], 121) == (13,)  # no multiple-of-8 rule
    assert _message(lambda: resolve_frame_indices([ImageCondition(121)], 121)) == (
        "images[0].frame_index=121: out of range for num_frames=121; use 0..120, or -121..-1 counted from the end "
        "(-1 = last frame)"
    )
    assert "images[0].frame_index=-122" in _message(lambda: resolve_frame_indices([ImageCondition(-122)], 121))
    assert "images[0].strength=2.0: must be in [0, 1]" in _message(
        lambda: resolve_frame_indices([ImageCondition(0, 2.0)], 9)
    )
    assert "images[0].crf=60: must be a number in [0, 51]" in _message(
        lambda: resolve_frame_indices([ImageCondition(0, crf=60)], 9)
    )
    assert "images[0].size=(1, 300): an image needs at least 2x2" in _message(
        lambda: resolve_frame_indices([ImageCondition(0, size=(1, 300))], 9)
    )
    resolve_frame_indices([ImageCondition(0, size=(17, 3001))], 9)  # any size >= 2x2 is resized and cropped


def test_reference_video(caplog: pytest.LogCaptureFixture) -> None:
    plan = check_reference_video((121, 480, 640, 3), height=256, width=384, num_frames=121, downscale_factor=2)
    assert (plan.frames, plan.height, plan.width) == (121, 128, 192)
    with caplog.at_level(logging.WARNING):
        plan = check_reference_video((200, 33, 45, 3), height=256, width=384, num_frames=121)
    assert (plan.frames, plan.height, plan.width) == (121, 256, 384)
    assert "200 frames; using the first 121" in caplog.text
    assert check_reference_video((30, 64, 64, 3), height=64, width=64, num_frames=121).frames == 25
    assert "the conditioned height 352 / 2 must be a whole multiple of 32" in _message(
        lambda: check_reference_video((9, 64, 64, 3), height=352, width=384, num_frames=9, downscale_factor=2)
    )
    assert "reference_downscale_factor=0" in _message(
        lambda: check_reference_video((9, 64, 64, 3), height=64, width=64, num_frames=9, downscale_factor=0)
    )
    assert "expected (F, H, W, C) with at least one frame" in _message(
        lambda: check_reference_video((0, 64, 64, 3), height=64, width=64, num_frames=9)
    )


def test_lora_generation() -> None:
    assert [generation_family(g) for g in ("2.3.0", "ltx23", "LTX-2.3 (22B family)", "ltx2", "2.0", "2")] == [
        "2.3", "2.3", "2.3", "2.0", "2.0", "2.0",
    ]
    assert generation_family("") is None and generation_family("sdxl") is None and generation_family(None) is None
    check_lora_generation("ltx23", "2.3.0")
    assert _message(lambda: check_lora_generation("2.0", "LTX-2.3 (22B family)", "camera.safetensors")) == (
        "camera.safetensors: generation='2.0' (LTX-2.0) does not match the model's 'LTX-2.3 (22B family)' "
        "(LTX-2.3); use a LoRA trained for LTX-2.3"
    )
    check_lora_generation(None, "2.3")  # unknown: warns, loads


def test_prompts(caplog: pytest.LogCaptureFixture) -> None:
    assert check_prompt("") == ""
    assert "negative_prompt=None: must be a string" in _message(lambda: check_prompt(None, "negative_prompt"))
    with caplog.at_level(logging.WARNING):
        check_prompt("word " * 2000, token_count=2001)
    assert "2001 tokens; only the first 1024 reach the model" in caplog.text


def test_validate_request_per_kind() -> None:
    common = {"width": 768, "height": 512, "num_frames": 121, "frame_rate": 24.0, "seed": 10}
    request = validate_request("two_stages", steps=30, images=[ImageCondition(-1)], **common)
    assert request.frame_indices == (120,) and request.stage_1_size == (256, 384)
    assert validate_request("one_stage", **{**common, "width": 736}).stage_1_size == (512, 736)
    assert "width=736" in _message(lambda: validate_request("keyframe_interpolation", **{**common, "width": 736}))
    assert "reference_video=None" in _message(lambda: validate_request("ic_lora", **common))
    assert "only the IC-LoRA pipeline" in _message(
        lambda: validate_request("distilled", reference_video_shape=(9, 64, 64, 3), **common)
    )
    ic = validate_request(
        PipelineKind.IC_LORA, reference_video_shape=(121, 512, 768, 3), reference_downscale_factor=2, **common
    )
    assert ic.reference is not None and (ic.reference.height, ic.reference.width) == (128, 192)
    assert "conditioning_attention_strength=1.5" in _message(
        lambda: validate_request("ic_lora", conditioning_attention_strength=1.5, **common)
    )
    assert "8k+1" in _message(lambda: validate_request("distilled", **{**common, "num_frames": 120}))
    assert "3840x2176x257: 269280 video latent tokens, more than the budget of 262144" in _message(
        lambda: validate_request("two_stages", **{**common, "width": 3840, "height": 2176, "num_frames": 257})
    )
