"""The Image / Keyframe Condition node's ``crf``: left at its default (-1, "auto") the sampler re-compresses the image
at the model generation's CRF (LTX-2.5: 18, LTX-2 / LTX-2.3: 33; ltx-pipelines 1.2.0 ``ImageConditioner.
resolve_crf``); an explicit value (0 and the former default 33 included, as saved workflows hold it) is kept."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from support import tiny_configs as tc
from support.ltx25_files import register_folders

from aiprod.aiprod_core.pipelines import PromptContexts

SEED = 3


@pytest.fixture
def n(demo_folders, files25):
    register_folders(demo_folders, files25)
    from aiprod.nodes import latent_nodes, loader_nodes, sampling_nodes, text_nodes

    return SimpleNamespace(latents=latent_nodes, loaders=loader_nodes, sampling=sampling_nodes, text=text_nodes)


def _image() -> torch.Tensor:
    return torch.rand(1, 48, 80, 3, generator=torch.Generator().manual_seed(1))


def test_crf_widget_defaults_to_auto_and_takes_every_saved_value(n) -> None:
    node = n.latents.AIPRODImageCondition
    (crf,) = [i for i in node.define_schema().inputs if i.id == "crf"]
    assert (crf.default, crf.min, crf.max) == (-1, -1, 51)
    assert "-1 = auto" in crf.tooltip and "LTX-2.5: 18" in crf.tooltip and "33" in crf.tooltip
    (latent,) = n.latents.AIPRODEmptyLatent.execute(64, 64, 9, 24.0).args
    for value, stored in ((-1, None), (-1.0, None), (33.0, 33.0), (18, 18), (0, 0), (51, 51)):
        (bundle,) = node.execute(latent, _image(), 0, 1.0, value, False).args
        assert bundle.images[0].crf == stored if stored is not None else bundle.images[0].crf is None
    for bad in (-0.5, -2, 52, float("nan")):
        with pytest.raises(ValueError, match=r"crf=.*in \[0, 51\].*; or -1 = auto"):
            node.execute(latent, _image(), 0, 1.0, bad, False)


def _sampled(n, model, video_vae, contexts: PromptContexts, crf: float) -> torch.Tensor:
    (latent,) = n.latents.AIPRODEmptyLatent.execute(64, 64, 9, 24.0).args
    (bundle,) = n.latents.AIPRODImageCondition.execute(latent, _image(), 0, 1.0, crf, False).args
    (out,) = n.sampling.AIPRODSampler.execute(model, bundle, contexts, "ltx2", 1, SEED, video_vae=video_vae).args
    return out.latents.video


@torch.no_grad()
def test_auto_crf_is_18_on_ltx25_and_33_on_ltx23(n, files25, demo_models) -> None:
    (model,) = n.loaders.AIPRODDiffusionModelLoader.execute(files25.combo("distilled"), "fp32", "upcast").args
    (video_vae,) = n.loaders.AIPRODVideoVAELoader.execute(f"{files25.combo('diffusion_vae')} (vae)", "fp32",
                                                          "auto").args  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    contexts = PromptContexts.from_tensors(torch.randn(1, 32, tc.VIDEO_HEADS * tc.VIDEO_HEAD_DIM, generator=gen),
                                           torch.randn(1, 32, tc.AUDIO_HEADS * tc.AUDIO_HEAD_DIM, generator=gen))
    assert model.generation == "LTX-2.5 (22B family)"
    auto = _sampled(n, model, video_vae, contexts, -1)
    assert torch.equal(auto, _sampled(n, model, video_vae, contexts, 18))
    assert not torch.equal(auto, _sampled(n, model, video_vae, contexts, 33))  # an explicit 33 stays 33

    c = demo_models.combos()
    model, video_vae, _ = n.loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    (encoder,) = n.loaders.AIPRODTextEncoderLoader.execute(c["text_encoder"], c["checkpoint"], "fp32").args
    (contexts,) = n.text.AIPRODTextEncode.execute(encoder, "a fox in the snow", "", False).args
    assert "2.5" not in (model.generation or "")
    auto = _sampled(n, model, video_vae, contexts, -1)
    assert torch.equal(auto, _sampled(n, model, video_vae, contexts, 33))
    assert not torch.equal(auto, _sampled(n, model, video_vae, contexts, 18))
