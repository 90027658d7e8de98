"""LTX-2.5's keyframe marker outside DFR: which video tokens get ``keyframes_abs_pos_embedding``, in every pipeline.

The facts (Lightricks/LTX-2 release 1.2.0, ``packages/ltx-core/src/ltx_core``), which win where diffusers differs:
- ``tools.py`` ``VideoLatentTools.create_initial_state`` (l. 176-196) marks the target's first latent frame of
  every video state ("unconditionally -- independently of whether any keyframe slots exist"); every pipeline and
  both stages build their states through it (ltx-pipelines ``utils/blocks.py`` ``_build_state`` l. 212-235,
  ``DiffusionStage.__call__`` l. 539-563; ``utils/helpers.py`` ``create_noised_state`` l. 441), and
  ``modality_from_latent_state`` (helpers.py l. 490) hands the mask to the transformer, which adds the marker
  only when it has one (``model/transformer/transformer_args.py`` l. 23-42, 269).
- images: frame 0 replaces the first latent frame, the others are appended keyframes (ltx-pipelines
  ``utils/helpers.py`` ``combined_image_conditionings`` l. 272-309; keyframe interpolation appends all of them,
  ``image_conditionings_by_adding_guiding_latent`` l. 343-365);
- image replacement (``conditioning/types/latent_cond.py`` l. 38-43) leaves the mask as it is: frame 0 stays
  marked whatever its strength; appended keyframes (``keyframe_cond.py`` l. 84-86, frame 0 of keyframe
  interpolation included) and IC-LoRA references (``reference_video_cond.py`` l. 104) extend it unmarked
  (``conditioning/mask_utils.py`` ``extend_keyframes_mask`` l. 76-107); only generated slots are marked
  (``keyframe_slots.py`` l. 121).
- diffusers 0.42.1 agrees in its DFR pipelines (``pipelines/ltx2/pipeline_ltx2_dfr.py`` ``prepare_latents``
  l. 1045-1058: first latent frame marked, guidance keyframes and references not), used below as the oracle of
  the mask; its plain pipelines (``pipeline_ltx2.py``, ``pipeline_ltx2_image2video.py``,
  ``pipeline_ltx2_condition.py``, ``modular_pipelines/ltx2/modular_blocks_ltx25.py``) never pass
  ``video_keyframes_mask``, so on a 2.5 transformer they mark nothing: that is not followed (Lightricks wins).

Ours: `stages.sample` (the one place every pipeline and the sampler node build their video state) marks the
first latent frame when the transformer has the marker (`has_keyframe_marker`); LTX-2 / LTX-2.3 states carry no
mask at all, so their transformer inputs are what they were (and the ltx-pipelines 1.0.0 parity tests of each
pipeline still hold).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from edit_oracle import models as edit_models
from edit_oracle import source, tone
from pipeline_oracle import contexts, diffusers_dfr_layout, guided, tiny_25_transformer
from support import tiny_configs as tc
from support import tiny_ltx25 as t25

from aiprod.aiprod_core import pipelines as core
from aiprod.aiprod_core.conditioning import ImageAtLatentIndex, Keyframe, ReferenceVideo
from aiprod.aiprod_core.pipelines import (
    ExtendRequest,
    GenerationRequest,
    ImageCondition,
    LocalHost,
    PipelineModels,
    PromptContexts,
    ReferenceCondition,
    RetakeRequest,
    empty_latents,
    sample,
)
from aiprod.aiprod_core.sampling import Guidance, Prompt
from aiprod.loaders.component_loader import load_component

FPS = 24.0


class _Spy(torch.nn.Module):
    """The transformer, recording each call's video input and velocity."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []
        self.config = model.config

    def forward(self, video, audio, perturbations=None):
        out = self.model(video, audio, perturbations)
        self.calls.append(SimpleNamespace(video=video, audio=audio, out=out))
        return out


@functools.cache
def _models(generation: str) -> PipelineModels:
    """The tiny set (with an audio encoder); on "2.5" the LTX-2.3 sizes with a 2.5 transformer and refiner."""
    base = edit_models(tc.LTX23 if generation == "2.5" else generation)
    if generation != "2.5":
        return base
    return replace(base, transformer=tiny_25_transformer(0), refiner=tiny_25_transformer(1))


def _ctx(generation: str) -> PromptContexts:
    return contexts(tc.LTX23 if generation == "2.5" else generation)


def _spied(generation: str) -> tuple[PipelineModels, _Spy, _Spy]:
    m = _models(generation)
    first, second = _Spy(m.transformer), _Spy(m.stage_2_transformer())
    return replace(m, transformer=first, refiner=second), first, second


def _image(seed: int, size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    return torch.rand(*size, 3, generator=torch.Generator().manual_seed(seed))


def _first_frame(tokens: int, per_frame: int) -> torch.Tensor:
    """(T,): the reference's marker of a state whose first ``per_frame`` tokens are the target's first frame."""
    marker = torch.zeros(tokens)
    marker[:per_frame] = 1.0
    return marker


W2, H2 = 128, 128  # two-stage: stage 1 at 64 x 64 (2 x 2 latent cells), stage 2 at 128 x 128 (4 x 4)
REQUEST = GenerationRequest(W2, H2, 9, FPS, 5)


def _run(name: str, generation: str) -> tuple[list[_Spy], list[tuple[int, int]]]:
    """Runs pipeline ``name`` on the tiny set; returns the spies and each stage's (target tokens, tokens per latent
    frame), in the order the stages run."""
    m, first, second = _spied(generation)
    ctx, g = _ctx(generation), guided(tc.LTX23 if generation == "2.5" else generation)
    two = [(2 * 4, 4), (2 * 16, 16)]  # 9 frames: 2 latent frames at each stage's size
    images = (ImageCondition(_image(1), 0, 0.9), ImageCondition(_image(2), 8, 1.0))
    if name == "one_stage":
        core.text_to_video(m, ctx, GenerationRequest(64, 64, 9, FPS, 5, images=images[:1]), g)
        return [first], [(2 * 4, 4)]
    if name == "two_stage":
        core.two_stage(m, ctx, replace(REQUEST, images=images), g)
    elif name == "distilled":
        core.distilled(m, PromptContexts(ctx.positive), replace(REQUEST, images=images[:1]))
    elif name == "keyframe_interpolation":
        core.keyframe_interpolation(m, ctx, replace(REQUEST, images=images), g)
    elif name == "hq":
        core.two_stage_hq(m, ctx, replace(REQUEST, images=images[:1]), g)
    elif name == "ic_lora":
        reference = ReferenceCondition(torch.rand(9, 64, 64, 3, generator=torch.Generator().manual_seed(3)))
        core.ic_lora(m, PromptContexts(ctx.positive), REQUEST, [reference], downscale_factor=1)
    elif name == "a2v":
        core.audio_to_video(m, ctx, replace(REQUEST, images=images[:1]), tone(9 / FPS), g)
    elif name in ("retake", "extend"):
        clip = source(17)
        if name == "retake":
            core.retake(m, ctx, RetakeRequest(source=clip, seed=5, start_time=9 / FPS, end_time=17 / FPS), g)
        else:
            core.extend(m, ctx, ExtendRequest(source=clip, seed=5, extend_frames=8, context_frames=9), g)
        return [first], [(3 * 4, 4)]  # 17 frames (the extension canvas: 9 + 8): 3 latent frames of 2 x 2
    return [first, second], two


PIPELINES = ["one_stage", "two_stage", "distilled", "keyframe_interpolation", "hq", "ic_lora", "a2v", "retake",
             "extend"]


@pytest.mark.parametrize("name", PIPELINES)
@torch.no_grad()
def test_every_pipeline_marks_the_first_latent_frame_on_25(name: str) -> None:
    """Each transformer call of each stage: the target's first latent frame marked (image-replaced or not), every
    other target token and every appended keyframe / reference token unmarked, in every guided pass's row."""
    spies, stages = _run(name, "2.5")
    for spy, (target, per_frame) in zip(spies, stages, strict=True):
        assert spy.calls, f"{name}: the stage never called its transformer"
        for call in spy.calls:
            mask, tokens = call.video.keyframes_mask, call.video.latent.shape[1]
            assert mask is not None and mask.shape == (call.video.latent.shape[0], tokens, 1)
            assert tokens >= target
            for row in mask:
                torch.testing.assert_close(row[:, 0], _first_frame(tokens, per_frame), rtol=0, atol=0)
    if name in ("two_stage", "keyframe_interpolation", "ic_lora"):  # appended tokens were there and stay unmarked
        assert spies[0].calls[0].video.latent.shape[1] > stages[0][0]


@pytest.mark.parametrize("generation", [tc.LTX2, tc.LTX23])
@pytest.mark.parametrize("name", ["one_stage", "two_stage", "keyframe_interpolation", "ic_lora", "retake"])
@torch.no_grad()
def test_ltx2_and_ltx23_states_carry_no_marker(generation: str, name: str) -> None:
    """Without the learned marker no keyframes mask is built: every transformer input is exactly what it was before
    the marker existed (bit-identical runs; the per-pipeline ltx-pipelines 1.0.0 parity tests show the same)."""
    spies, _ = _run(name, generation)
    assert all(not s.model.config.use_keyframes_abs_pos_embedding for s in spies)
    calls = [call for spy in spies for call in spy.calls]
    assert calls and all(call.video.keyframes_mask is None for call in calls)


# ------------------------------------------------------------------------------- the mask vs diffusers' DFR layout


def _diffusers_marker(base: torch.Tensor, conditions: list, keyframes: list, reference: torch.Tensor | None,
                      frames: int) -> torch.Tensor:  # fmt: skip
    """diffusers' ``LTX2DFRPipeline.prepare_latents`` keyframes mask (B, T, 1) for these conditions, no slots:
    ``conditions`` (pixel frame, latent, strength) replace frame 0 or are appended; ``keyframes`` (pixel frame,
    latent, strength) are appended; ``reference`` after them."""
    out = diffusers_dfr_layout(
        base, frames, FPS, condition_latents=[(f, latent, s, 1) for f, latent, s in conditions],
        keyframe_latents=keyframes, slot_frame_indices=None, reference_latents=reference, reference_downscale_factor=1)
    return out[4]


def _latents(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(1, 128, *shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    # (our conditioning items, diffusers' conditions, diffusers' keyframes, reference) on a 17-frame 2 x 3 grid
    "text_to_video": lambda: ([], [], [], None),
    "image_replaced_keyframe_reference": lambda: (
        [ImageAtLatentIndex(_latents(1, 1, 2, 3), 0.8), Keyframe(_latents(2, 1, 2, 3), 16, 1.0),
         ReferenceVideo(_latents(3, 3, 2, 3))],
        [(0, _latents(1, 1, 2, 3), 0.8), (16, _latents(2, 1, 2, 3), 1.0)], [], _latents(3, 3, 2, 3)),
    "keyframes_only": lambda: (  # keyframe interpolation: frame 0 appended too
        [Keyframe(_latents(1, 1, 2, 3), 0, 1.0), Keyframe(_latents(2, 1, 2, 3), 16, 0.7)],
        [], [(0, _latents(1, 1, 2, 3), 1.0), (16, _latents(2, 1, 2, 3), 0.7)], None),
}


@pytest.mark.oracle
@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_marker_reaching_the_transformer_matches_diffusers_dfr_layout(case: str) -> None:
    items, conditions, keyframes, reference = CASES[case]()
    latents = empty_latents(96, 64, 17, FPS)  # (1, 128, 3, 2, 3)
    spy = _Spy(_models("2.5").transformer)
    ctx = _ctx("2.5").positive
    sample(spy, latents, items, torch.tensor([1.0, 0.0]), Guidance(ctx), 0, LocalHost(), dtype=torch.float32)
    expected = _diffusers_marker(latents.video, conditions, keyframes, reference, 17)
    got = spy.calls[0].video.keyframes_mask
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ------------------------------------------------------------------ one denoising step with the marker vs diffusers


@pytest.fixture(scope="module")
def tiny25(tmp_path_factory: pytest.TempPathFactory) -> t25.Tiny25:
    return t25.build(tmp_path_factory.mktemp("marker25"), t25.LTX25)


def _fields(stream) -> dict[str, torch.Tensor]:
    return {"latent": stream.latent, "sigma": stream.sigma, "timesteps": stream.timesteps,
            "positions": stream.positions.float(), "context": stream.context}


def _close(ours: torch.Tensor, ref: torch.Tensor, bound: float = 1e-5) -> None:
    error = (ours.float() - ref).abs().max().item()
    assert error <= bound * max(1.0, ref.abs().max().item()), error


@pytest.mark.oracle
@pytest.mark.parametrize("case", ["text_to_video", "image_replaced_keyframe_reference"])
@torch.no_grad()
def test_one_step_with_the_marker_matches_diffusers(tiny25: t25.Tiny25, case: str) -> None:
    """`sample` on the tiny 2.5 weights (diffusers-built, loaded from the Lightricks layout): the transformer call
    of one step equals diffusers' forward on the same inputs with the marker its DFR layout builds; for text-to-
    video the Euler step too. The marker changes the result (so the mask is what matters here)."""
    items, conditions, keyframes, reference = CASES[case]()
    section = tiny25.section
    gen = torch.Generator().manual_seed(7)
    prompt = Prompt(torch.randn(1, 16, section["num_attention_heads"] * section["attention_head_dim"], generator=gen),
                    torch.randn(1, 16, section["audio_num_attention_heads"] * section["audio_attention_head_dim"],
                                generator=gen))  # fmt: skip
    spy = _Spy(load_component(tiny25.transformer_path, "transformer", dtype=torch.float32).module)
    latents = empty_latents(96, 64, 17, FPS)
    sigmas = torch.tensor([1.0, 0.6])
    out = sample(spy, latents, items, sigmas, Guidance(prompt), 3, LocalHost(), dtype=torch.float32)
    (call,) = spy.calls
    marker = _diffusers_marker(latents.video, conditions, keyframes, reference, 17)
    video, audio = _fields(call.video), _fields(call.audio)
    ref_v, ref_a = t25.diffusers_call(tiny25.transformer, {**video, "keyframes_mask": marker[..., 0]}, audio)
    _close(call.out.video, ref_v)
    _close(call.out.audio, ref_a)
    unmarked, _ = t25.diffusers_call(tiny25.transformer, video, audio)
    assert (unmarked - ref_v).abs().max() > 1e-3
    if case == "text_to_video":  # every token at sigma 1: x_next = x + v (sigma_next - sigma)
        x = call.video.latent
        step = x + ref_v * (sigmas[1] - sigmas[0])
        layout = latents.video_layout()
        _close(out.video, layout.unpatchify(step))
