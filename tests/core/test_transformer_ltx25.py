"""LTX-2.5 transformer: parity with diffusers 0.42.1 on tiny configs built with its own class and written in the
Lightricks 2.5 file layout (loaded through our loader), with and without the guiders' perturbations; the config
deltas; the text keys / values computed once per prompt (exact, invalidated when the prompt changes).

Where diffusers and the Lightricks reference differ, the Lightricks facts are used:
- the file layout and key names are Lightricks' (``patchify_proj``, ``adaln_single``, ``prompt_adaln_single``,
  ``q_norm``, ``scale_shift_table_a2v_ca_*``): what ComfyUI and ltx-core read; `support.tiny_ltx25` translates;
- the published 2.5 config sets ``ff_bias: false`` and ``use_keyframes_abs_pos_embedding: true`` and keeps the
  prompt AdaLN and the audio FF biases (no such keys; the tensors are in the shipped headers): variant ``ltx25``.
  diffusers' own 2.5 test also turns off ``audio_ff_bias`` / ``use_prompt_adaln_single`` (its "LTX-2.4"): variant
  ``ltx25_kv``, the configuration whose text keys / values do not depend on the timestep;
- ``av_ca_timestep_scale_multiplier``: read from the config (1000 in the published files) with Lightricks'
  default 1 when absent (diffusers defaults to 1000);
- the keyframe marker is applied to the tokens the caller marks: ltx-core 1.2.0 marks the first latent frame of
  every clip, diffusers' plain pipelines pass no mask (only its DFR pipelines do); the inputs here mark it.

Not followed (open): ltx-core 1.2.0 (since its 2026-05-28 sync) takes the audio<->video AdaLN scale / shift from
each stream's own per-token timesteps and only the gate from the other stream's sigma; ltx-core 1.0.0 (the LTX-2 /
2.3 oracle) and diffusers 0.42.1 take the other stream's sigma for both, and so do we for every generation. The
two agree when a stream's tokens all share the other stream's sigma (text-to-video) and differ on conditioning
tokens (timestep 0), which the inputs here include.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from support import tiny_ltx25 as t25

from aiprod.aiprod_core.transformer import ModalityInput, Perturbations, SamplePerturbation, TransformerConfig
from aiprod.loaders.component_loader import load_component
from aiprod.loaders.errors import StateDictMismatchError

BF16_BOUND = 0.05  # our bf16 forward vs diffusers' float32, relative to max(1, max|ref|) (measured ~1e-2)


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, t25.Tiny25]:
    return {variant: t25.build(tmp_path_factory.mktemp(variant), variant) for variant in t25.VARIANTS}


@pytest.fixture(params=t25.VARIANTS)
def tiny(request: pytest.FixtureRequest, tiny_sets: dict[str, t25.Tiny25]) -> t25.Tiny25:
    return tiny_sets[request.param]


def _ours(tiny: t25.Tiny25, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    return load_component(tiny.transformer_path, "transformer", dtype=dtype).module


def _inputs(video: dict, audio: dict, dtype: torch.dtype = torch.float32) -> tuple[ModalityInput, ModalityInput]:
    def cast(fields: dict) -> ModalityInput:
        return ModalityInput(**{k: v.to(dtype) if k in ("latent", "context") else v for k, v in fields.items()})

    return cast(video), cast(audio)


def _close(ours: torch.Tensor, ref: torch.Tensor, bound: float) -> None:
    error = (ours.float() - ref).abs().max().item()
    assert error <= bound * max(1.0, ref.abs().max().item()), error


# (name, our per-sample perturbations of a batch of 2, diffusers' arguments for the same batch)
PERTURBED = [
    ("none", (SamplePerturbation(), SamplePerturbation()), {}),
    # STG as the guider runs it (the positive row and the STG row in one call): diffusers skips the video and
    # audio self-attention of the given blocks in the rows whose perturbation_mask is 0
    ("stg_block1_row1", (SamplePerturbation(), SamplePerturbation.stg(video_blocks=[1], audio_blocks=[1])),
     {"spatio_temporal_guidance_blocks": [1], "perturbation_mask": torch.tensor([1.0, 0.0])}),
    ("stg_every_block", (SamplePerturbation.stg([0, 1], [0, 1]),) * 2, {"spatio_temporal_guidance_blocks": [0, 1]}),
    ("isolated_modalities", (SamplePerturbation.isolated_modalities(),) * 2, {"isolate_modalities": True}),
]


@pytest.mark.oracle
@pytest.mark.parametrize(("name", "samples", "extra"), PERTURBED, ids=[p[0] for p in PERTURBED])
def test_forward_matches_diffusers(tiny: t25.Tiny25, name: str, samples: tuple, extra: dict) -> None:
    ours = _ours(tiny)
    video, audio = t25.stream_inputs(tiny.section, batch=2, seed=3)
    with torch.no_grad():
        got = ours(*_inputs(video, audio), Perturbations(samples))
        ref = t25.diffusers_call(tiny.transformer, video, audio, **extra)
    _close(got.video, ref[0], 1e-5)
    _close(got.audio, ref[1], 1e-5)


@pytest.mark.oracle
def test_keyframe_marker_and_no_mask_match_diffusers(tiny: t25.Tiny25) -> None:
    """The marker goes exactly to the marked tokens: a mask on a generated-slot-like token set, and no mask."""
    ours = _ours(tiny)
    video, audio = t25.stream_inputs(tiny.section, batch=1, seed=4, conditioned=False)
    slots = dict(video, keyframes_mask=torch.zeros_like(video["keyframes_mask"]))
    slots["keyframes_mask"][:, -6:] = 1.0  # the last latent frame's tokens, as appended slot tokens would be
    unmarked = {k: v for k, v in video.items() if k != "keyframes_mask"}
    outputs = []
    for fields in (slots, unmarked):
        with torch.no_grad():
            got = ours(*_inputs(fields, audio))
            ref = t25.diffusers_call(tiny.transformer, fields, audio)
        _close(got.video, ref[0], 1e-5)
        _close(got.audio, ref[1], 1e-5)
        outputs.append(got.video)
    assert not torch.allclose(outputs[0], outputs[1])  # the marker is trained (non-zero) and does change things


@pytest.mark.oracle
def test_bf16_forward_within_bound(tiny: t25.Tiny25) -> None:
    ours = _ours(tiny, torch.bfloat16)
    video, audio = t25.stream_inputs(tiny.section, batch=1, seed=5)
    with torch.no_grad():
        got = ours(*_inputs(video, audio, torch.bfloat16))
        ref = t25.diffusers_call(tiny.transformer, video, audio)
    assert got.video.dtype == torch.bfloat16
    _close(got.video, ref[0], BF16_BOUND)
    _close(got.audio, ref[1], BF16_BOUND)


def test_config_deltas_and_strict_load(tiny: t25.Tiny25, tmp_path) -> None:
    config = TransformerConfig.from_metadata({"transformer": tiny.section})
    assert (config.ff_bias, config.use_keyframes_abs_pos_embedding) == (False, True)
    kv = tiny.variant == t25.LTX25_KV
    assert (config.audio_ff_bias, config.use_prompt_adaln_single, config.timestep_free_prompt_kv) == (
        not kv, not kv, kv)
    ours = _ours(tiny)
    assert ours.transformer_blocks[0].ff.net[2].bias is None
    assert (ours.transformer_blocks[0].audio_ff.net[2].bias is None) == kv
    assert hasattr(ours, "prompt_adaln_single") != kv
    # The same file read with the 2.3 config (ff biases on, no marker) is refused, naming what does not fit.
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(tiny.transformer_path, "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    section = copy.deepcopy(tiny.section)
    for key in ("ff_bias", "audio_ff_bias", "use_prompt_adaln_single", "use_keyframes_abs_pos_embedding"):
        section.pop(key, None)
    path = tmp_path / "as_23.safetensors"
    save_file(tensors, str(path), {**metadata, "config": json.dumps({"transformer": section})})
    with pytest.raises(StateDictMismatchError) as info:
        load_component(path, "transformer", dtype=torch.float32)
    assert "transformer_blocks.0.ff.net.0.proj.bias" in info.value.missing
    assert "model.diffusion_model.keyframes_abs_pos_embedding" in info.value.unexpected
    assert "keyframes_abs_pos_embedding" in str(info.value)


@pytest.mark.parametrize("key", ["ff_bias", "use_prompt_adaln_single", "use_keyframes_abs_pos_embedding"])
def test_config_flags_must_be_booleans(key: str) -> None:
    section = t25.transformer_section(t25.LTX25)
    section[key] = "false"
    with pytest.raises(ValueError, match=f"transformer.{key}='false', expected 'a bool'"):
        TransformerConfig.from_metadata({"transformer": section})


# --------------------------------------------------------------------------------------------------------
# Text keys / values once per prompt
# --------------------------------------------------------------------------------------------------------


def _count_text_projections(model: torch.nn.Module) -> list[int]:
    """A list whose length grows by one for every call of a block's text-attention key projection."""
    calls: list[int] = []
    for block in model.transformer_blocks:
        for name in ("attn2", "audio_attn2"):
            getattr(block, name).to_k.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _step(video: dict, audio: dict, seed: int) -> tuple[ModalityInput, ModalityInput]:
    """The next step of a loop: new latents and sigmas, the same prompts."""
    gen = torch.Generator().manual_seed(seed)
    fields = []
    for stream in (video, audio):
        sigma = torch.rand(stream["sigma"].shape, generator=gen) * 0.8 + 0.1
        fields.append(dict(stream, latent=torch.randn(stream["latent"].shape, generator=gen), sigma=sigma,
                           timesteps=stream["timesteps"].clamp(max=0) + sigma[:, None]))
    return _inputs(*fields)


def test_prompt_kv_kept_across_steps_is_exact_and_follows_the_prompt(tiny_sets: dict[str, t25.Tiny25]) -> None:
    tiny = tiny_sets[t25.LTX25_KV]
    model = _ours(tiny)
    calls = _count_text_projections(model)
    per_call = 2 * len(model.transformer_blocks)  # video + audio text attention of every block
    video, audio = t25.stream_inputs(tiny.section, batch=2, seed=6)
    with torch.inference_mode():
        model(*_step(video, audio, 1))
        assert len(calls) == per_call and len(model._prompt_cache) == 2  # video + audio prompt sets
        kept = model(*_step(video, audio, 2))
        assert len(calls) == per_call  # the second step computed no text keys / values
        model.clear_prompt_kv()
        recomputed = model(*_step(video, audio, 2))
        assert len(calls) == 2 * per_call
        assert torch.equal(kept.video, recomputed.video) and torch.equal(kept.audio, recomputed.audio)
        reference = t25.diffusers_call(tiny.transformer, *[
            {k: getattr(s, k) for k in ("latent", "sigma", "timesteps", "positions", "context", "keyframes_mask")
             if getattr(s, k) is not None} for s in _step(video, audio, 2)])
        _close(kept.video, reference[0], 1e-5)
        # A changed prompt (the same tensor object edited in place) is a new prompt: computed again, right values.
        changed = dict(video)
        changed["context"] = video["context"].clone()
        step = _step(changed, audio, 3)
        step[0].context[1].normal_(generator=torch.Generator().manual_seed(9))
        before = len(calls)
        edited = model(*step)
        assert len(calls) == before + len(model.transformer_blocks)  # only the video prompts are new
        model.clear_prompt_kv()
        assert torch.equal(edited.video, model(*step).video)
        model.to(torch.float32)  # moving / casting the weights drops what is kept
        assert len(model._prompt_cache) == 0


def test_guided_batch_computes_each_prompt_once(tiny: t25.Tiny25) -> None:
    """positive / negative / STG / isolated rows: two distinct prompt rows (at one sigma), as many projections."""
    model = _ours(tiny)
    calls = _count_text_projections(model)
    video, audio = t25.stream_inputs(tiny.section, batch=1, seed=7)
    negative = torch.randn_like(video["context"])

    def batch(fields: dict, contexts: list[torch.Tensor]) -> dict:
        rows = len(contexts)
        out = {k: v.expand(rows, *v.shape[1:]) for k, v in fields.items() if k != "context"}
        return dict(out, context=torch.cat(contexts))

    guided_video = batch(video, [video["context"], negative, video["context"], video["context"]])
    guided_audio = batch(audio, [audio["context"], torch.randn_like(audio["context"])] + [audio["context"]] * 2)
    samples = (SamplePerturbation(), SamplePerturbation(), SamplePerturbation.stg([1], [1]),
               SamplePerturbation.isolated_modalities())
    with torch.no_grad():
        shared = model(*_inputs(guided_video, guided_audio), Perturbations(samples))
        projections = len(calls)
        model.reuse_prompt_kv = False
        each_row = model(*_inputs(guided_video, guided_audio), Perturbations(samples))
    # 2 distinct rows per stream -> one key projection per block and stream, each of 2 rows (not 4)
    assert projections == 2 * len(model.transformer_blocks)
    for ours, theirs in ((shared.video, each_row.video), (shared.audio, each_row.audio)):
        assert torch.equal(ours, theirs)  # the shared keys / values are the rows' own, bit for bit
    if tiny.variant == t25.LTX25:
        assert len(model._prompt_cache) == 0  # sigma-dependent keys / values are never kept between calls


def test_block_streaming_frees_the_kept_keys_values(tiny_sets: dict[str, t25.Tiny25]) -> None:
    from aiprod.aiprod_core.transformer.streaming import BlockStreamer

    tiny = tiny_sets[t25.LTX25_KV]
    model = _ours(tiny)
    video, audio = t25.stream_inputs(tiny.section, batch=1, seed=8)
    with torch.no_grad(), BlockStreamer(pin_memory=False).attached(model, "cpu"):
        model(*_step(video, audio, 1))
        assert len(model._prompt_cache) == 2
    assert len(model._prompt_cache) == 0
