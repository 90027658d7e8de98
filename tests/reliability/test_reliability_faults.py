"""Faults injected into the real host (support/reliability_faults): interrupts in the middle of sampling and of
decoding, out-of-memory while decoding, a full or read-only output disk. After each: a clear message, nothing
(half-)written in the output folder, models released where memory ran out, and the next prompt runs to the end."""

from __future__ import annotations

import itertools

import pytest
from support.reliability_fixtures import tiny_workflow

pytestmark = pytest.mark.host

_SEEDS = itertools.count(1000)


def _node(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)["inputs"]


def _fresh_sampling() -> dict:
    """text_to_video with a seed never used before: sampling, decoding and saving all run."""
    return tiny_workflow("text_to_video", seed=next(_SEEDS))


def _fresh_decode() -> dict:
    """text_to_video with a new decoder seed only: the sampled latents come from ComfyUI's cache, decoding and
    saving run again (cheap)."""
    prompt = tiny_workflow("text_to_video")
    _node(prompt, "AIPRODVideoDecode")["seed"] = next(_SEEDS)
    return prompt


def _events(result) -> list[str]:
    return [event for event, _ in result.messages]


def _next_prompt_completes(rel, client) -> None:
    before = rel.output_files()
    result = client.run(_fresh_sampling(), timeout=300)
    assert result.ok, result.error
    assert len(rel.output_files() - before) == 1


def _interrupt_during(rel, client, fault: str, counter: str) -> None:
    before = rel.output_files()
    calls = rel.state()["calls"].get(counter, 0)
    with rel.fault(fault, seconds=1.5):
        prompt_id = client.queue(_fresh_sampling())
    rel.wait_for_calls(counter, calls)
    client.interrupt()
    result = client.wait(prompt_id, timeout=300)
    assert result.status == "error"
    assert "execution_interrupted" in _events(result)
    assert "execution_error" not in _events(result)
    assert rel.output_files() == before
    rel.wait_idle()
    _next_prompt_completes(rel, client)


def test_interrupt_in_the_middle_of_sampling_then_next_prompt_completes(rel, rel_client):
    _interrupt_during(rel, rel_client, "slow_sample", "transformer")


def test_interrupt_in_the_middle_of_decoding_then_next_prompt_completes(rel, rel_client):
    _interrupt_during(rel, rel_client, "slow_decode", "video_decoder")


def test_interrupt_in_the_middle_of_a_pipeline_node_then_next_prompt_completes(rel, rel_client):
    before = rel.output_files()
    calls = rel.state()["calls"].get("transformer", 0)
    with rel.fault("slow_sample", seconds=1.0):
        prompt_id = rel_client.queue(tiny_workflow("distilled", seed=next(_SEEDS)))
    rel.wait_for_calls("transformer", calls)
    rel_client.interrupt()
    result = rel_client.wait(prompt_id, timeout=300)
    assert "execution_interrupted" in _events(result)
    assert rel.output_files() == before
    rel.wait_idle()
    result = rel_client.run(tiny_workflow("distilled", seed=next(_SEEDS)), timeout=300)
    assert result.ok, result.error


def test_out_of_memory_while_decoding_suggests_tiling_and_releases_models(rel, rel_client):
    rel_client.run(tiny_workflow("text_to_video"), timeout=300)  # warm
    assert rel.state()["loaded_models"], "nothing loaded: the release check below would prove nothing"
    before = rel.output_files()
    with rel.fault("oom_decode"):
        result = rel_client.run(_fresh_decode(), timeout=300)
    assert result.status == "error"
    error = result.error
    assert error["node_type"] == "AIPRODVideoDecode"
    assert error["exception_type"].endswith("OutOfMemoryError")
    message = error["exception_message"]
    assert "Out of memory while decoding the video" in message
    assert "spatial_tile" in message and "temporal_tile" in message
    assert "--lowvram" in message
    assert rel.state()["loaded_models"] == []
    assert rel.output_files() == before
    assert rel.answers()
    _next_prompt_completes(rel, rel_client)


@pytest.mark.parametrize(("fault", "phrase"), [
    ("enospc_write", "No space left on device"),
    ("erofs_write", "Read-only file system"),
])
def test_output_disk_full_or_read_only_while_saving_video(rel, rel_client, fault, phrase):
    rel_client.run(tiny_workflow("text_to_video"), timeout=300)  # warm
    before = rel.output_files()
    with rel.fault(fault):
        result = rel_client.run(_fresh_decode(), timeout=300)
    assert result.status == "error"
    assert result.error["node_type"] == "AIPRODSaveVideo"
    message = result.error["exception_message"]
    assert phrase in message and ".mp4" in message and "nothing was saved" in message
    assert rel.output_files() == before  # no partial file, no hidden temporary
    assert rel.answers()
    result = rel_client.run(_fresh_decode(), timeout=300)  # the next prompt writes its clip
    assert result.ok, result.error
    assert len(rel.output_files() - before) == 1


def _save_latent(seed: int) -> dict:
    return {
        "1": {"class_type": "AIPRODEmptyLatent", "inputs": {"width": 32, "height": 32, "frames": 9,
                                                           "fps": 24.0 + seed / 1000}},
        "2": {"class_type": "AIPRODSaveLatent", "inputs": {"latent": ["1", 0], "filename_prefix": "rel/latent"}},
    }


def test_output_disk_read_only_while_saving_latents(rel, rel_client):
    before = rel.output_files()
    with rel.fault("erofs_write"):
        result = rel_client.run(_save_latent(next(_SEEDS)), timeout=120)
    assert result.status == "error" and "Read-only file system" in result.error["exception_message"]
    assert rel.output_files() == before
    assert rel_client.run(_save_latent(next(_SEEDS)), timeout=120).ok


def test_output_disk_full_while_saving_latents_leaves_no_partial_file(rel, rel_client):
    before = rel.output_files()
    with rel.fault("enospc_write"):
        result = rel_client.run(_save_latent(next(_SEEDS)), timeout=120)
    assert result.status == "error" and "No space left on device" in result.error["exception_message"]
    leftover = rel.output_files() - before
    for name in leftover:  # the truncated file must not stay listed for loading
        (rel.output_dir / name).unlink()
    assert leftover == set()
