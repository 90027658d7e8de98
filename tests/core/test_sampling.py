"""Sampling pieces vs ltx-core / ltx-pipelines 1.0.0: schedules, noise, steps and loops, patchifiers and positions,
and guiders. The batched-pass planner and a full sampler run through the tiny transformer are in
test_sampling_planner.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sampling_support import VIDEO_SHAPE, assert_close, our_noised, ref_audio_tools, ref_video_tools, reference_noised

from aiprod.aiprod_core.sampling import (
    CFG,
    DISTILLED_SIGMAS,
    STAGE_2_DISTILLED_SIGMAS,
    STG,
    AudioLatentShape,
    AudioLayout,
    CFGStar,
    EulerStep,
    GradientEstimationStep,
    Guidance,
    LatentState,
    Pass,
    Prompt,
    SigmaBinnedGuider,
    StepReport,
    StreamGuider,
    VideoLatentShape,
    VideoLayout,
    denoise,
    distilled_sigmas,
    ltx2_sigmas,
)
from aiprod.aiprod_core.sampling.patchify import (
    _video_grid,
    audio_positions,
    patchify_audio,
    patchify_video,
    unpatchify_audio,
    unpatchify_video,
)
from aiprod.aiprod_core.transformer import ModalityInput


def _assert_states_equal(ours: LatentState, ref: Any, what: str) -> None:
    for name in ("latent", "denoise_mask", "positions", "clean_latent", "attention_mask"):
        a, b = getattr(ours, name), getattr(ref, name)
        if b is None:
            assert a is None, f"{what}.{name}"
            continue
        assert a.dtype == b.dtype, f"{what}.{name}: {a.dtype} != {b.dtype}"
        assert torch.equal(a, b), f"{what}.{name}: max diff {(a.double() - b.double()).abs().max().item():.3e}"


# --------------------------------------------------------------------------------------------------------
# 1. Schedules and noise
# --------------------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("steps", [2, 4, 8, 20, 40])
@pytest.mark.parametrize("grid", [None, (1, 1, 1), (2, 4, 6), (16, 32, 48), (31, 16, 24)])
def test_ltx2_sigmas_match_reference(steps: int, grid: tuple[int, int, int] | None) -> None:
    from ltx_core.components.schedulers import LTX2Scheduler

    latent = None if grid is None else torch.empty(1, 128, *grid)
    ref = LTX2Scheduler().execute(steps=steps, latent=latent)
    ours = ltx2_sigmas(steps) if grid is None else ltx2_sigmas(steps, tokens=grid[0] * grid[1] * grid[2])
    assert ours.dtype == ref.dtype == torch.float32
    assert torch.equal(ours, ref), (ours - ref).abs().max()
    assert ours[-1] == 0.0 and (ours.diff() < 0).all()
    assert ours[0].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.oracle
def test_one_step_schedule_starts_from_noise() -> None:
    """Upstream quirk (schedulers.py:50-55): stretching the single nonzero sigma of a 1-step schedule divides
    by (1 - 1) = 0 (nan) or, after rounding, lands on the terminal 0.1; ours is [1, 0]."""
    from ltx_core.components.schedulers import LTX2Scheduler

    assert torch.isnan(LTX2Scheduler().execute(steps=1, latent=torch.empty(1, 128, 1, 1, 1))[0])
    assert LTX2Scheduler().execute(steps=1)[0].item() == pytest.approx(0.1)
    for tokens in (1, 4096, 6144):
        assert torch.equal(ltx2_sigmas(1, tokens=tokens), torch.tensor([1.0, 0.0]))


@pytest.mark.oracle
@pytest.mark.parametrize(
    "options", [{"stretch": False}, {"terminal": 0.25}, {"max_shift": 1.5, "base_shift": 0.5, "terminal": 0.0}]
)
def test_ltx2_sigmas_options_match_reference(options: dict[str, Any]) -> None:
    from ltx_core.components.schedulers import LTX2Scheduler

    ref = LTX2Scheduler().execute(steps=12, latent=torch.empty(1, 128, 5, 8, 8), **options)
    assert torch.equal(ltx2_sigmas(12, tokens=5 * 8 * 8, **options), ref)


@pytest.mark.oracle
def test_distilled_tables_match_reference() -> None:
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES

    assert list(DISTILLED_SIGMAS) == DISTILLED_SIGMA_VALUES
    assert list(STAGE_2_DISTILLED_SIGMAS) == STAGE_2_DISTILLED_SIGMA_VALUES
    assert torch.equal(distilled_sigmas(), torch.tensor(DISTILLED_SIGMA_VALUES))
    assert torch.equal(distilled_sigmas(stage_2=True), torch.tensor(STAGE_2_DISTILLED_SIGMA_VALUES))


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("noise_scale", [1.0, 0.6])
def test_noised_states_match_reference(dtype: torch.dtype, noise_scale: float) -> None:
    """Same generator seed -> bit-identical noised video (with conditioning tokens) then audio states."""
    ref_video, ref_audio = reference_noised(11, dtype, noise_scale)
    video, audio = our_noised(11, dtype, noise_scale)
    _assert_states_equal(video, ref_video, "video")
    _assert_states_equal(audio, ref_audio, "audio")
    assert video.tokens == VIDEO_SHAPE.tokens + VIDEO_SHAPE.height * VIDEO_SHAPE.width
    assert (video.denoise_mask[0, :6, 0] - 0.2).abs().max() < 1e-6  # first frame: 1 - strength


# --------------------------------------------------------------------------------------------------------
# 2. Steps and loops
# --------------------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_euler_step_matches_reference(dtype: torch.dtype) -> None:
    from ltx_core.components.diffusion_steps import EulerDiffusionStep

    gen = torch.Generator().manual_seed(0)
    sigmas = ltx2_sigmas(6, tokens=900)
    sample, x0 = (torch.randn(2, 9, 16, generator=gen).to(dtype) for _ in range(2))
    for index in range(len(sigmas) - 1):
        ref = EulerDiffusionStep().step(sample, x0, sigmas, index)
        ours, carry = EulerStep()(sample, x0, sigmas[index], sigmas[index + 1], None)
        assert carry is None and ours.dtype == dtype
        assert torch.equal(ours, ref), f"step {index}"


def _toy_x0(latent: torch.Tensor, timesteps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in denoiser: (B, T, C), (B, T, 1) -> (B, T, C)."""
    return torch.tanh(latent @ weight) * (1 - timesteps) + 0.3 * timesteps


class _ToyModel:
    """Our x0-model interface over ``_toy_x0`` (ignores contexts and perturbations)."""

    def __init__(self, weights: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.weights = weights

    def __call__(self, video: ModalityInput | None, audio: ModalityInput | None, perturbations: Any) -> Any:
        return tuple(
            None if s is None else _toy_x0(s.latent, s.timesteps.unsqueeze(-1), w)
            for s, w in zip((video, audio), self.weights, strict=True)
        )


@pytest.mark.oracle
@pytest.mark.parametrize("sampler", ["euler", "gradient_estimation"])
def test_loop_matches_reference_loop(sampler: str) -> None:
    """Our loop (clean-token blend, per-stream step carries) vs the reference loops, same toy denoiser."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils.helpers import timesteps_from_mask
    from ltx_pipelines.utils.samplers import euler_denoising_loop, gradient_estimating_euler_denoising_loop

    gen = torch.Generator().manual_seed(4)
    weights = (torch.randn(128, 128, generator=gen) / 12, torch.randn(128, 128, generator=gen) / 12)
    sigmas = ltx2_sigmas(5, tokens=VIDEO_SHAPE.tokens)

    def ref_denoise(video_state, audio_state, sigmas, step_index):
        sigma = sigmas[step_index]
        return tuple(
            _toy_x0(s.latent, timesteps_from_mask(s.denoise_mask, sigma), w)
            for s, w in zip((video_state, audio_state), weights, strict=True)
        )

    ref_video, ref_audio = reference_noised(5, torch.float32, 1.0)
    video, audio = our_noised(5, torch.float32, 1.0)
    if sampler == "euler":
        ref_out = euler_denoising_loop(sigmas, ref_video, ref_audio, EulerDiffusionStep(), ref_denoise)
        step = EulerStep()
    else:
        ref_out = gradient_estimating_euler_denoising_loop(
            sigmas, ref_video, ref_audio, EulerDiffusionStep(), ref_denoise, ge_gamma=2.5
        )
        step = GradientEstimationStep(gamma=2.5)
    reports: list[StepReport] = []
    guidance = Guidance(Prompt(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)))
    out = denoise(_ToyModel(weights), sigmas, video, audio, guidance=guidance, step=step, callback=reports.append)
    for ours, ref, name in zip(out, ref_out, ("video", "audio"), strict=True):
        assert_close(ours.latent, ref.latent, f"{sampler} {name}")
        assert torch.equal(ours.clean_latent, ref.clean_latent)
    assert [r.index for r in reports] == list(range(5)) and reports[-1].sigma_next == 0.0
    # The conditioning tokens of the replaced first frame moved only by their 1 - strength share.
    assert not torch.equal(out[0].latent[:, :6], video.latent[:, :6])


def test_callback_can_interrupt() -> None:
    class Stop(RuntimeError):
        pass

    def hook(report: StepReport) -> None:
        if report.index == 1:
            raise Stop

    video, audio = our_noised(0, torch.float32, 1.0)
    model = _ToyModel((torch.eye(128), torch.eye(128)))
    with pytest.raises(Stop):
        denoise(
            model, ltx2_sigmas(4), video, audio, guidance=Guidance(Prompt(video.latent, audio.latent)), callback=hook
        )


# --------------------------------------------------------------------------------------------------------
# 3. Patchifiers and positions
# --------------------------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("fps", [24.0, 25.0, 30000 / 1001])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_video_layout_matches_reference(fps: float, causal: bool, dtype: torch.dtype) -> None:
    shape = VideoLatentShape(2, 128, 4, 3, 5)
    latent = torch.randn(shape.torch_shape()).to(dtype)
    tools = ref_video_tools(shape, fps, causal)
    ref = tools.create_initial_state(torch.device("cpu"), dtype, latent)
    layout = VideoLayout(shape, fps, causal_first_frame=causal)
    ours = layout.initial_state("cpu", dtype, latent)
    _assert_states_equal(ours, ref, "video state")
    assert torch.equal(patchify_video(latent), tools.patchifier.patchify(latent))
    assert torch.equal(unpatchify_video(ours.latent, shape), latent)
    assert torch.equal(layout.unpatchify(ours.latent), tools.unpatchify(ref).latent)
    # Cached: a second state of the same shape reuses the grid (and gets its own copy).
    hits = _video_grid.cache_info().hits
    again = layout.initial_state("cpu", dtype, latent)
    assert _video_grid.cache_info().hits == hits + 1
    assert again.positions.data_ptr() != ours.positions.data_ptr()


@pytest.mark.oracle
@pytest.mark.parametrize("shift", [0, 3])
def test_audio_layout_matches_reference(shift: int) -> None:
    from ltx_core.components.patchifiers import AudioPatchifier
    from ltx_core.types import AudioLatentShape as RefShape

    shape = AudioLatentShape(2, 8, 7, 16)
    latent = torch.randn(shape.torch_shape())
    patchifier = AudioPatchifier(patch_size=1, shift=shift)
    assert torch.equal(audio_positions(shape, shift=shift), patchifier.get_patch_grid_bounds(RefShape(*shape)))
    assert torch.equal(patchify_audio(latent), patchifier.patchify(latent))
    assert torch.equal(unpatchify_audio(patchify_audio(latent), shape), latent)
    ref = ref_audio_tools(shape).create_initial_state(torch.device("cpu"), torch.float32, latent)
    _assert_states_equal(AudioLayout(shape).initial_state("cpu", torch.float32, latent), ref, "audio state")


@pytest.mark.oracle
@pytest.mark.parametrize(("frames", "height", "width", "fps"), [(121, 512, 768, 24.0), (97, 704, 1216, 25.0)])
def test_latent_shapes_match_reference(frames: int, height: int, width: int, fps: float) -> None:
    from ltx_core.types import AudioLatentShape as RefAudio
    from ltx_core.types import VideoLatentShape as RefVideo
    from ltx_core.types import VideoPixelShape

    pixels = VideoPixelShape(batch=1, frames=frames, height=height, width=width, fps=fps)
    assert tuple(VideoLatentShape.from_pixels(1, frames, height, width)) == tuple(RefVideo.from_pixel_shape(pixels))
    assert tuple(AudioLatentShape.for_video(1, frames, fps)) == tuple(RefAudio.from_video_pixel_shape(pixels))


# --------------------------------------------------------------------------------------------------------
# 4. Guiders
# --------------------------------------------------------------------------------------------------------

GUIDER_PARAMS = {
    "ltx2_video_default": {"cfg_scale": 3.0, "stg_scale": 1.0, "rescale_scale": 0.7, "modality_scale": 3.0},
    "ltx2_audio_default": {"cfg_scale": 7.0, "stg_scale": 1.0, "rescale_scale": 0.7, "modality_scale": 3.0},
    "hq_audio": {"cfg_scale": 7.0, "stg_scale": 0.0, "rescale_scale": 1.0, "modality_scale": 3.0},
    "cfg_only": {"cfg_scale": 4.5},
    "stg_only": {"stg_scale": 1.5},
    "modality_only": {"modality_scale": 2.0, "rescale_scale": 0.3},
    "off": {},
}


def _pass_outputs(seed: int, batch: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, 11, 16, generator=gen)
    return (cond, *(cond + 0.5 * torch.randn(batch, 11, 16, generator=gen) for _ in range(3)))


@pytest.mark.oracle
@pytest.mark.parametrize("name", GUIDER_PARAMS)
def test_multimodal_guider_matches_reference(name: str) -> None:
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams

    params = GUIDER_PARAMS[name]
    cond, negative, perturbed, isolated = _pass_outputs(1)
    ref_guider = MultiModalGuider(MultiModalGuiderParams(**params, stg_blocks=[1]))
    ref = ref_guider.calculate(cond, negative, perturbed, isolated)
    guider = StreamGuider.multimodal(**params, stg_blocks=[1])
    outputs = {Pass.POSITIVE: cond, Pass.NEGATIVE: negative, Pass.PERTURBED: perturbed, Pass.ISOLATED: isolated}
    assert_close(guider.combine(cond, outputs), ref, name)
    expected = {
        Pass.NEGATIVE: ref_guider.do_unconditional_generation(),
        Pass.PERTURBED: ref_guider.do_perturbed_generation(),
        Pass.ISOLATED: ref_guider.do_isolated_modality_generation(),
    }
    assert guider.needs() == {p for p, needed in expected.items() if needed}
    # Only the passes the guider needs are read.
    needed_only = {p: outputs[p] for p in (*guider.needs(), Pass.POSITIVE)}
    assert_close(guider.combine(cond, needed_only), ref, f"{name} (needed passes only)")


@pytest.mark.oracle
def test_single_guiders_match_reference() -> None:
    from ltx_core.components.guiders import CFGGuider, CFGStarRescalingGuider, STGGuider

    cond, other, _, _ = _pass_outputs(2)
    for ours, ref in (
        (CFG(3.5), CFGGuider(3.5)),
        (CFGStar(2.5), CFGStarRescalingGuider(2.5)),
        (STG(1.3), STGGuider(1.3)),
    ):
        assert_close(ours.delta(cond, other), ref.delta(cond, other), type(ours).__name__)
        assert ours.enabled() == ref.enabled()
    assert not CFG(1.0).enabled() and not STG(0.0).enabled()
    # Composition: CFG* and STG summed in one stream guider equals the reference deltas summed.
    guider = StreamGuider(terms=(CFGStar(2.5), STG(1.3, (0,))))
    ref = cond + CFGStarRescalingGuider(2.5).delta(cond, other) + STGGuider(1.3).delta(cond, other)
    assert_close(guider.combine(cond, {Pass.NEGATIVE: other, Pass.PERTURBED: other}), ref, "composed")


@pytest.mark.oracle
def test_batched_guidance_is_per_sample() -> None:
    """Upstream's rescale std and CFG* projection mix or break across a batch (guiders.py:264 global std;
    guiders.py:48 multiplies a (B, 1) coefficient into (B, T, C), which only broadcasts for B = 1):
    ours treats each sample alone and equals the reference run one sample at a time."""
    from ltx_core.components.guiders import CFGStarRescalingGuider, MultiModalGuider, MultiModalGuiderParams

    cond, negative, perturbed, isolated = _pass_outputs(3, batch=2)
    params = GUIDER_PARAMS["ltx2_video_default"]
    guider = StreamGuider.multimodal(**params, stg_blocks=[0])
    outputs = {Pass.NEGATIVE: negative, Pass.PERTURBED: perturbed, Pass.ISOLATED: isolated}
    got = guider.combine(cond, outputs)
    star = CFGStar(3.0).delta(cond, negative)
    for i in range(2):
        rows = [t[i : i + 1] for t in (cond, negative, perturbed, isolated)]
        ref = MultiModalGuider(MultiModalGuiderParams(**params, stg_blocks=[0])).calculate(*rows)
        assert_close(got[i : i + 1], ref, f"sample {i}")
        assert_close(star[i : i + 1], CFGStarRescalingGuider(3.0).delta(rows[0], rows[1]), f"cfg* sample {i}")


@pytest.mark.oracle
def test_skip_steps_and_sigma_bins_match_reference() -> None:
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderFactory, MultiModalGuiderParams

    for skip in (0, 1, 3):
        ref = MultiModalGuider(MultiModalGuiderParams(skip_step=skip))
        ours = StreamGuider.multimodal(skip_step=skip)
        assert [ours.skips(i) for i in range(12)] == [ref.should_skip_step(i) for i in range(12)]
    bounds = {1.0: 3.0, 0.7: 2.0, 0.2: 1.5}
    factory = MultiModalGuiderFactory.from_dict({b: MultiModalGuiderParams(cfg_scale=s) for b, s in bounds.items()})
    binned = SigmaBinnedGuider(tuple((b, StreamGuider.multimodal(cfg_scale=s)) for b, s in bounds.items()))
    for sigma in (1.5, 1.0, 0.9, 0.7, 0.5, 0.2, 0.1, 0.0):
        assert binned.for_sigma(sigma).terms[0].scale == factory.params(sigma).cfg_scale, sigma
