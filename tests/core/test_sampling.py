"""Sampling pieces vs ltx-core / ltx-pipelines 1.0.0: schedules, noise, steps and loops, patchifiers and positions,
guiders, the batched-pass planner (through the real tiny transformer of both generations) and a full sampler run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from support import tiny_configs as tc
from support.tiny_checkpoints import build_reference_module, init_module

from aiprod.aiprod_core.conditioning import ImageAtLatentIndex, Keyframe, apply_conditionings
from aiprod.aiprod_core.sampling import (
    CFG,
    DISTILLED_SIGMAS,
    STAGE_2_DISTILLED_SIGMAS,
    STG,
    AudioLatentShape,
    AudioLayout,
    CFGStar,
    EulerStep,
    GaussianNoiser,
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
    X0Denoiser,
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
from aiprod.aiprod_core.transformer import AVTransformer, ModalityInput, TransformerConfig

PREFIX = "model.diffusion_model."
FPS = 24.0
VIDEO_SHAPE = VideoLatentShape(1, 128, 3, 2, 3)  # 18 generated video tokens
AUDIO_SHAPE = AudioLatentShape(1, 8, 5, 16)  # 5 audio tokens of 128 channels
CONTEXT_TOKENS = 6


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    """max|ours - ref| <= 1e-5 max(1, max|ref|); returns the difference."""
    assert ours.shape == ref.shape, f"{what}: {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(ref).all(), what
    diff = (ours.double() - ref.double()).abs().max().item()
    bound = 1e-5 * max(1.0, ref.abs().max().item())
    assert diff <= bound, f"{what}: max|ours - ref| = {diff:.3e} > {bound:.3e}"
    return diff


def _assert_states_equal(ours: LatentState, ref: Any, what: str) -> None:
    for name in ("latent", "denoise_mask", "positions", "clean_latent", "attention_mask"):
        a, b = getattr(ours, name), getattr(ref, name)
        if b is None:
            assert a is None, f"{what}.{name}"
            continue
        assert a.dtype == b.dtype, f"{what}.{name}: {a.dtype} != {b.dtype}"
        assert torch.equal(a, b), f"{what}.{name}: max diff {(a.double() - b.double()).abs().max().item():.3e}"


def _ours_state(ref: Any) -> LatentState:
    return LatentState(ref.latent, ref.denoise_mask, ref.positions, ref.clean_latent, ref.attention_mask)


def _ref_state(ours: LatentState) -> Any:
    from ltx_core.types import LatentState as RefLatentState

    return RefLatentState(ours.latent, ours.denoise_mask, ours.positions, ours.clean_latent, ours.attention_mask)


def _ref_video_tools(shape: VideoLatentShape = VIDEO_SHAPE, fps: float = FPS, causal: bool = True) -> Any:
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.tools import VideoLatentTools
    from ltx_core.types import VideoLatentShape as RefShape

    return VideoLatentTools(VideoLatentPatchifier(patch_size=1), RefShape(*shape), fps, causal_fix=causal)


def _ref_audio_tools(shape: AudioLatentShape = AUDIO_SHAPE) -> Any:
    from ltx_core.components.patchifiers import AudioPatchifier
    from ltx_core.tools import AudioLatentTools
    from ltx_core.types import AudioLatentShape as RefShape

    return AudioLatentTools(AudioPatchifier(patch_size=1), RefShape(*shape))


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


def _conditionings(dtype: torch.dtype, seed: int = 3) -> tuple[list[Any], list[Any]]:
    """(ours, reference): the first latent frame replaced (strength 0.8) + a keyframe at pixel frame 16."""
    from ltx_core.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex

    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 128, 1, VIDEO_SHAPE.height, VIDEO_SHAPE.width, generator=gen).to(dtype)
    key = torch.randn(1, 128, 1, VIDEO_SHAPE.height, VIDEO_SHAPE.width, generator=gen).to(dtype)
    ours = [ImageAtLatentIndex(image, strength=0.8, latent_index=0), Keyframe(key, frame_index=16, strength=0.9)]
    ref = [
        VideoConditionByLatentIndex(latent=image, strength=0.8, latent_idx=0),
        VideoConditionByKeyframeIndex(keyframes=key, frame_idx=16, strength=0.9),
    ]
    return ours, ref


def _reference_noised(seed: int, dtype: torch.dtype, noise_scale: float) -> tuple[Any, Any]:
    from ltx_core.components.noisers import GaussianNoiser as RefNoiser
    from ltx_pipelines.utils.helpers import create_noised_state

    noiser = RefNoiser(torch.Generator().manual_seed(seed))
    _, ref_items = _conditionings(dtype)
    cpu = torch.device("cpu")
    video = create_noised_state(_ref_video_tools(), ref_items, noiser, dtype, cpu, noise_scale)
    audio = create_noised_state(_ref_audio_tools(), [], noiser, dtype, cpu, noise_scale)
    return video, audio


def _our_noised(seed: int, dtype: torch.dtype, noise_scale: float) -> tuple[LatentState, LatentState]:
    noiser = GaussianNoiser(torch.Generator().manual_seed(seed))
    items, _ = _conditionings(dtype)
    layout = VideoLayout(VIDEO_SHAPE, FPS)
    video = noiser(apply_conditionings(layout.initial_state("cpu", dtype), items, layout), noise_scale)
    audio = noiser(AudioLayout(AUDIO_SHAPE).initial_state("cpu", dtype), noise_scale)
    return video, audio


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("noise_scale", [1.0, 0.6])
def test_noised_states_match_reference(dtype: torch.dtype, noise_scale: float) -> None:
    """Same generator seed -> bit-identical noised video (with conditioning tokens) then audio states."""
    ref_video, ref_audio = _reference_noised(11, dtype, noise_scale)
    video, audio = _our_noised(11, dtype, noise_scale)
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

    ref_video, ref_audio = _reference_noised(5, torch.float32, 1.0)
    video, audio = _our_noised(5, torch.float32, 1.0)
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
        _assert_close(ours.latent, ref.latent, f"{sampler} {name}")
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

    video, audio = _our_noised(0, torch.float32, 1.0)
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
    tools = _ref_video_tools(shape, fps, causal)
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
    ref = _ref_audio_tools(shape).create_initial_state(torch.device("cpu"), torch.float32, latent)
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
    _assert_close(guider.combine(cond, outputs), ref, name)
    expected = {
        Pass.NEGATIVE: ref_guider.do_unconditional_generation(),
        Pass.PERTURBED: ref_guider.do_perturbed_generation(),
        Pass.ISOLATED: ref_guider.do_isolated_modality_generation(),
    }
    assert guider.needs() == {p for p, needed in expected.items() if needed}
    # Only the passes the guider needs are read.
    needed_only = {p: outputs[p] for p in (*guider.needs(), Pass.POSITIVE)}
    _assert_close(guider.combine(cond, needed_only), ref, f"{name} (needed passes only)")


@pytest.mark.oracle
def test_single_guiders_match_reference() -> None:
    from ltx_core.components.guiders import CFGGuider, CFGStarRescalingGuider, STGGuider

    cond, other, _, _ = _pass_outputs(2)
    for ours, ref in (
        (CFG(3.5), CFGGuider(3.5)),
        (CFGStar(2.5), CFGStarRescalingGuider(2.5)),
        (STG(1.3), STGGuider(1.3)),
    ):
        _assert_close(ours.delta(cond, other), ref.delta(cond, other), type(ours).__name__)
        assert ours.enabled() == ref.enabled()
    assert not CFG(1.0).enabled() and not STG(0.0).enabled()
    # Composition: CFG* and STG summed in one stream guider equals the reference deltas summed.
    guider = StreamGuider(terms=(CFGStar(2.5), STG(1.3, (0,))))
    ref = cond + CFGStarRescalingGuider(2.5).delta(cond, other) + STGGuider(1.3).delta(cond, other)
    _assert_close(guider.combine(cond, {Pass.NEGATIVE: other, Pass.PERTURBED: other}), ref, "composed")


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
        _assert_close(got[i : i + 1], ref, f"sample {i}")
        _assert_close(star[i : i + 1], CFGStarRescalingGuider(3.0).delta(rows[0], rows[1]), f"cfg* sample {i}")


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


# --------------------------------------------------------------------------------------------------------
# Planner and full sampler through the tiny transformer of both generations
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=tc.GENERATIONS)
def models(request: pytest.FixtureRequest) -> tuple[str, Any, AVTransformer]:
    """(generation, reference X0Model, our AVTransformer) with the same seeded honest weights."""
    from ltx_core.model.transformer import X0Model
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    metadata = {"transformer": tc.transformer_config(request.param)}
    reference = build_reference_module(LTXModelConfigurator, metadata)
    with torch.no_grad():
        init_module(reference, seed=7, to_file_key=lambda k: PREFIX + k, config=metadata)
    reference = reference.float().eval()
    ours = AVTransformer(TransformerConfig.from_metadata(metadata), device="meta")
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return request.param, X0Model(reference).eval(), ours.eval()


def _contexts(generation: str, seed: int = 9) -> tuple[Prompt, Prompt]:
    gen = torch.Generator().manual_seed(seed)
    ltx2 = generation == tc.LTX2
    video_dim = tc.CAPTION_CHANNELS if ltx2 else tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM
    audio_dim = tc.CAPTION_CHANNELS if ltx2 else tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM

    def prompt() -> Prompt:
        return Prompt(
            torch.randn(1, CONTEXT_TOKENS, video_dim, generator=gen),
            torch.randn(1, CONTEXT_TOKENS, audio_dim, generator=gen),
        )

    return prompt(), prompt()


def _guiders(generation: str, video_skip: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    block = 1 if generation == tc.LTX2 else 0
    video = {"cfg_scale": 3.0, "stg_scale": 1.0, "rescale_scale": 0.7, "modality_scale": 3.0, "stg_blocks": [block]}
    audio = {"cfg_scale": 7.0, "stg_scale": 1.0, "rescale_scale": 0.7, "modality_scale": 3.0, "stg_blocks": [1 - block]}
    video["skip_step"] = video_skip
    return video, audio


def _reference_denoise_fn(reference: Any, generation: str, video_skip: int = 0) -> Any:
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func

    positive, negative = _contexts(generation)
    video_params, audio_params = _guiders(generation, video_skip)
    return multi_modal_guider_denoising_func(
        MultiModalGuider(MultiModalGuiderParams(**video_params), negative_context=negative.video),
        MultiModalGuider(MultiModalGuiderParams(**audio_params), negative_context=negative.audio),
        positive.video,
        positive.audio,
        reference,
    )


def _our_guidance(generation: str, video_skip: int = 0) -> Guidance:
    positive, negative = _contexts(generation)
    video_params, audio_params = _guiders(generation, video_skip)
    return Guidance(
        positive, negative, StreamGuider.multimodal(**video_params), StreamGuider.multimodal(**audio_params)
    )


class _CountingModel:
    def __init__(self, model: Any) -> None:
        self.model, self.batches = model, []

    def __call__(self, video: ModalityInput | None, audio: ModalityInput | None, perturbations: Any) -> Any:
        self.batches.append(video.latent.shape[0])
        return self.model(video, audio, perturbations)


@pytest.mark.oracle
def test_planner_matches_reference_guided_passes(models) -> None:
    """One batched call (positive, negative, STG, isolated) == the reference's four separate guided passes."""
    generation, reference, ours = models
    ref_video, ref_audio = _reference_noised(21, torch.float32, 1.0)
    sigmas = ltx2_sigmas(4, tokens=VIDEO_SHAPE.tokens)
    with torch.no_grad():
        ref = _reference_denoise_fn(reference, generation)(ref_video, ref_audio, sigmas, 1)
        counting = _CountingModel(X0Denoiser(ours))
        got = _our_guidance(generation).predict(
            counting, _ours_state(ref_video), _ours_state(ref_audio), sigmas[1], step_index=1
        )
    assert counting.batches == [4]
    for o, r, name in zip(got, ref, ("video", "audio"), strict=True):
        _assert_close(o, r, f"{generation} {name}")


@pytest.mark.oracle
def test_planner_batched_equals_separate_passes(models) -> None:
    """The batched call splits back into exactly what each pass gives through our transformer on its own."""
    generation, _, ours = models
    video, audio = _our_noised(22, torch.float32, 1.0)
    guidance = _our_guidance(generation)
    sigma = torch.tensor(0.8)
    model = X0Denoiser(ours)
    captured: dict[str, Any] = {}

    def keep(video_in, audio_in, perturbations):
        captured.update(video=video_in, audio=audio_in, perturbations=perturbations)
        return model(video_in, audio_in, perturbations)

    with torch.no_grad():
        guidance.predict(keep, video, audio, sigma, 0)
        batched = model(captured["video"], captured["audio"], captured["perturbations"])
        for index, sample in enumerate(captured["perturbations"].samples):
            rows = [replace(captured[k], **_rows(captured[k], index)) for k in ("video", "audio")]
            single = model(*rows, type(captured["perturbations"])((sample,)))
            for b, s, name in zip(batched, single, ("video", "audio"), strict=True):
                _assert_close(b[index : index + 1], s, f"{generation} pass {index} {name}")


@pytest.mark.oracle
def test_planner_can_cap_passes_per_call(models) -> None:
    generation, _, ours = models
    video, audio = _our_noised(23, torch.float32, 1.0)
    with torch.no_grad():
        batched = _our_guidance(generation).predict(X0Denoiser(ours), video, audio, torch.tensor(0.6), 0)
        counting = _CountingModel(X0Denoiser(ours))
        capped = replace(_our_guidance(generation), max_passes_per_call=3)
        got = capped.predict(counting, video, audio, torch.tensor(0.6), 0)
    assert counting.batches == [3, 1]
    for o, r, name in zip(got, batched, ("video", "audio"), strict=True):
        _assert_close(o, r, f"{generation} {name}")
    with pytest.raises(ValueError, match="max_passes_per_call"):
        replace(capped, max_passes_per_call=0)


def _rows(stream: ModalityInput, index: int) -> dict[str, Any]:
    fields = ("latent", "sigma", "timesteps", "positions", "context", "attention_mask")
    return {f: getattr(stream, f)[index : index + 1] for f in fields if getattr(stream, f) is not None}


@pytest.mark.oracle
@pytest.mark.parametrize("sampler", ["euler", "gradient_estimation"])
def test_full_sampler_matches_reference(models, sampler: str) -> None:
    """Noise -> conditioning -> 3 guided steps (video guider skipping every other step) -> strip guide tokens."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils.samplers import euler_denoising_loop, gradient_estimating_euler_denoising_loop

    generation, reference, ours = models
    sigmas = ltx2_sigmas(3, tokens=VIDEO_SHAPE.tokens)
    ref_loop = euler_denoising_loop if sampler == "euler" else gradient_estimating_euler_denoising_loop
    with torch.no_grad():
        ref_video, ref_audio = _reference_noised(31, torch.float32, 1.0)
        ref_denoise = _reference_denoise_fn(reference, generation, video_skip=1)
        ref_video, ref_audio = ref_loop(sigmas, ref_video, ref_audio, EulerDiffusionStep(), ref_denoise)
        tools = _ref_video_tools()
        ref_pixels = tools.unpatchify(tools.clear_conditioning(ref_video)).latent

        video, audio = _our_noised(31, torch.float32, 1.0)
        step = EulerStep() if sampler == "euler" else GradientEstimationStep()
        counting = _CountingModel(X0Denoiser(ours))
        guidance = _our_guidance(generation, video_skip=1)
        video, audio = denoise(counting, sigmas, video, audio, guidance=guidance, step=step)
        layout = VideoLayout(VIDEO_SHAPE, FPS)
    # Step 1 (video skipped): negative pass runs with video enabled upstream, so it gets its own call.
    assert counting.batches == [4, 3, 1, 4]
    _assert_close(layout.unpatchify(layout.strip_conditioning(video).latent), ref_pixels, f"{generation} video")
    _assert_close(audio.latent, ref_audio.latent, f"{generation} audio")


@pytest.mark.oracle
@pytest.mark.parametrize("guided", [False, True])
def test_planner_bf16_close_to_float32(models, guided: bool) -> None:
    """bf16 weights and latents vs float32: the single positive pass within 3e-2 relative; the guided prediction
    (cond + 6 (cond - neg) + (cond - ptb) + 2 (cond - iso) for audio) amplifies each pass's bf16 rounding by the
    guidance coefficients, so it gets 6e-2."""
    generation, _, ours = models
    video, audio = _our_noised(41, torch.float32, 1.0)
    guidance = _our_guidance(generation)
    if not guided:
        guidance = Guidance(guidance.positive)
    with torch.no_grad():
        f32 = guidance.predict(X0Denoiser(ours), video, audio, torch.tensor(0.7), 0)
        bf16_model = X0Denoiser(AVTransformer(ours.config, dtype=torch.bfloat16, device="meta"))
        bf16_model.velocity_model.load_state_dict(
            {k: v.to(torch.bfloat16) for k, v in ours.state_dict().items()}, strict=True, assign=True
        )

        def to_bf16(x: Any) -> Any:
            names = ("latent", "clean_latent") if isinstance(x, LatentState) else ("video", "audio")
            return None if x is None else replace(x, **{k: getattr(x, k).to(torch.bfloat16) for k in names})

        bf16_guidance = replace(guidance, positive=to_bf16(guidance.positive), negative=to_bf16(guidance.negative))
        bf16 = bf16_guidance.predict(bf16_model, to_bf16(video), to_bf16(audio), torch.tensor(0.7), 0)
    for lo, hi, name in zip(bf16, f32, ("video", "audio"), strict=True):
        assert lo.dtype == torch.bfloat16 and torch.isfinite(lo).all()
        rel = ((lo.float() - hi).norm() / hi.norm()).item()
        assert rel < (6e-2 if guided else 3e-2), f"{generation} {name}: bf16 relative error {rel:.3e}"
