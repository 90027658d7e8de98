"""The tiled decode's per-chunk callback: progress over frames, and raising there stops the decode (interrupt)."""

from __future__ import annotations

import pytest
import torch
from support import tiny_configs as tc
from support.tiny_checkpoints import init_module

from aiprod.aiprod_core.pipelines import LocalHost, decode_video
from aiprod.aiprod_core.video_vae import SpatialTiling, TemporalTiling, TilingConfig, VideoDecoder, VideoVAEConfig

TILING = TilingConfig(SpatialTiling(64, 32), TemporalTiling(16, 8))


@pytest.fixture(scope="module")
def decoder() -> VideoDecoder:
    metadata = tc.checkpoint_config(tc.LTX23)
    with torch.no_grad():
        module = VideoDecoder(VideoVAEConfig.from_metadata(metadata))
        return init_module(module, seed=0, to_file_key=lambda k: f"vae.decoder.{k}", config=metadata).float()


def latent(frames: int = 4) -> torch.Tensor:
    return torch.randn(1, 128, frames, 2, 3, generator=torch.Generator().manual_seed(0))  # (B, C, F', H', W')


def test_chunks_report_increasing_progress_to_the_last_frame(decoder):
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        frames = decode_video(decoder, latent(), LocalHost(), tiling=TILING, on_chunk=lambda d, t: calls.append((d, t)))
    total = frames.shape[1]
    assert total == 1 + 3 * 8
    assert len(calls) >= 2, calls  # several temporal chunks: a host can stop between them
    assert [t for _, t in calls] == [total] * len(calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == total and done[0] < total
    with torch.no_grad():
        plain = decode_video(decoder, latent(), LocalHost(), tiling=TILING)
    assert torch.equal(frames, plain)  # the callback changes nothing


def test_raising_in_the_callback_stops_the_decode(decoder):
    class Interrupted(Exception):
        pass

    calls = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        raise Interrupted

    with torch.no_grad(), pytest.raises(Interrupted):
        decode_video(decoder, latent(), LocalHost(), tiling=TILING, on_chunk=interrupt)
    assert len(calls) == 1
