"""LTX-2.5 duration head: parity with diffusers 0.42.1's ``LTX2DurationHead`` (tiny config, Lightricks file layout),
and the seconds -> frame count rule against diffusers' ``predict_num_frames`` and ltx-pipelines 1.2.0's.

Lightricks facts used where diffusers differs: the file keeps ``duration_head.*`` with the pooler in
``nn.MultiheadAttention``'s layout (``attention_pooler.cross_attn.in_proj_weight`` = [q; k; v], ``out_proj``;
diffusers: ``attention_pooler.to_q/to_k/to_v/to_out``), and the head's own sizes come from the metadata's
``duration_head`` section under the reference's names (``mlp_hidden``; diffusers' argument: ``mlp_hidden_dim``).
"""

from __future__ import annotations

import math

import pytest
import torch
from support import tiny_ltx25 as t25

from aiprod.aiprod_core.duration_head import DurationHeadConfig, frames_for_seconds
from aiprod.loaders.component_loader import load_component


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> t25.Tiny25:
    return t25.build(tmp_path_factory.mktemp("ltx25"), t25.LTX25)


def _tokens(section: dict, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, t25.CONTEXT_TOKENS, section["cross_attention_dim"], generator=gen)
    audio = torch.randn(batch, t25.CONTEXT_TOKENS, section["audio_cross_attention_dim"], generator=gen)
    return video, audio


@pytest.mark.oracle
@pytest.mark.parametrize(("dtype", "bound"), [(torch.float32, 1e-5), (torch.bfloat16, 0.02)])
def test_prediction_matches_diffusers(tiny: t25.Tiny25, dtype: torch.dtype, bound: float) -> None:
    head = load_component(tiny.duration_head_path, "duration_head", dtype=dtype).module
    video, audio = _tokens(tiny.section, batch=3, seed=1)
    for streams in ((video, audio), (video, None), (None, audio)):
        with torch.no_grad():
            ours = head(*streams)  # float32 connector outputs into a bf16 head: cast, as the reference does
            ref = tiny.duration_head(*streams)
        assert ours.shape == (3,)
        assert (ours.float() - ref).abs().max().item() <= bound * max(1.0, ref.abs().max().item())
    assert 2.0 < float(ref.min()) and float(ref.max()) < 12.0  # seconds, around the 5 s the tiny head is set to


@pytest.mark.oracle
def test_frames_for_seconds_matches_diffusers_and_the_reference_rule() -> None:
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    class Fixed(LTX2DurationHead):  # diffusers' frame rule on a given prediction
        def forward(self, video_tokens=None, audio_tokens=None):
            return torch.tensor([self.seconds])

    fixed = Fixed(video_cross_attention_dim=4, audio_cross_attention_dim=4, pooler_hidden_dim=4, num_pooler_heads=1,
                  mlp_hidden_dim=4)
    for seconds in (0.05, 0.5, 1.0, 1.3, 2.71, 4.99, 5.0, 7.77, 19.9, 20.0, 33.0):
        for frame_rate, low, high in ((24.0, 1.0, 20.0), (25.0, 0.0, 10.0), (30.0, 2.5, 3.0), (12.0, 1.0, 4.0)):
            fixed.seconds = seconds
            theirs = fixed.predict_num_frames(torch.zeros(1, 1, 4), frame_rate=frame_rate,
                                              temporal_compression_ratio=8, min_seconds=low, max_seconds=high)
            ours = frames_for_seconds(seconds, frame_rate, low, high)
            assert ours == theirs and (ours - 1) % 8 == 0, (seconds, frame_rate, low, high, ours, theirs)


def test_frames_for_seconds_refuses_what_has_no_answer() -> None:
    with pytest.raises(ValueError, match="frames 24..24 hold no 8 k \\+ 1 frame count"):
        frames_for_seconds(1.0, 24.0, 1.0, 1.01)  # diffusers logs a warning and leaves the window; we refuse
    with pytest.raises(ValueError, match="expected 0 <= min < max"):
        frames_for_seconds(3.0, 24.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="seconds=nan, expected 'a positive duration'"):
        frames_for_seconds(math.nan, 24.0)


def test_config_defaults_and_checks() -> None:
    config = DurationHeadConfig.from_metadata({"transformer": {"cross_attention_dim": 4096,
                                                               "audio_cross_attention_dim": 2048}})
    assert (config.pooler_dim, config.num_queries, config.num_heads, config.mlp_hidden) == (256, 1, 4, 256)
    with pytest.raises(ValueError, match="num_pooler_heads=3, expected 'a divisor of pooler_hidden_dim 16'"):
        DurationHeadConfig.from_metadata({"duration_head": {"pooler_hidden_dim": 16, "num_pooler_heads": 3}})
