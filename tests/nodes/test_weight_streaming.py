"""The loaders' weight_streaming choice through ComfyUI's model management (in-process, CPU): the handle carries
it to the loaded module, "auto" streams only when ComfyUI reports too little free memory, a streamed stage frees
ComfyUI memory for the footprint instead of loading the model whole, and a CPU-only ComfyUI runs plainly."""

from __future__ import annotations

import logging

import pytest
import torch


@pytest.fixture
def loaders(demo_folders):
    from aiprod.nodes import loader_nodes

    return loader_nodes


@pytest.fixture
def runtime(comfy_cpu):
    from aiprod.nodes import runtime

    return runtime


def test_loaders_offer_the_choice_and_mark_the_module(loaders, runtime, demo_models):
    for node in (loaders.AIPRODCheckpointLoader, loaders.AIPRODDiffusionModelLoader):
        (option,) = [i for i in node.GET_SCHEMA().inputs if i.id == "weight_streaming"]
        assert option.options == ["auto", "off", "on"] and option.default == "auto"
        assert "auto: stream the transformer's blocks from CPU memory only when it does not fit in VRAM" in (
            option.tooltip)
    c = demo_models.combos()
    model, _, _ = loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast", "on").args
    assert model.weight_streaming == "on"
    (with_lora,) = loaders.AIPRODLoraLoader.execute(model, c["distilled_lora"], 0.5).args
    assert with_lora.weight_streaming == "on"
    assert with_lora.module().__dict__[runtime._STREAMING_ATTR] == "on"
    default, _, _ = loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast").args
    assert default.weight_streaming == "auto" and default != model  # ComfyUI's cache tells them apart
    listed = loaders.AIPRODCheckpointLoader.INPUT_TYPES()["optional"]["weight_streaming"][0]
    assert listed == ["auto", "off", "on"]  # the option list is the type: ComfyUI refuses other values itself
    with pytest.raises(ValueError, match="weight_streaming='sometimes'"):
        loaders.AIPRODCheckpointLoader.execute(c["checkpoint"], "fp32", "upcast", "sometimes")


def _tiny_transformer() -> torch.nn.Module:
    from support import tiny_configs as tc

    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    section = {**tc.transformer_config(tc.LTX23), "num_layers": 4}  # more blocks than the streaming window
    model = AVTransformer(TransformerConfig.from_metadata({"transformer": section}))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.05)
    return model.eval()


def _fake_accelerator(monkeypatch, runtime, free: int) -> list:
    """Let the CPU stand in for an accelerator with ``free`` bytes free; returns the recorded ComfyUI calls."""
    mm = runtime.mm
    calls: list = []
    monkeypatch.setattr(runtime, "_HOST_MEMORY_DEVICES", ())
    monkeypatch.setattr(mm, "get_free_memory", lambda *_, **__: free)
    monkeypatch.setattr(mm, "free_memory", lambda needed, device, *_, **__: calls.append(("free", needed)) or [])
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **_: calls.append(("load", len(models))))
    return calls


@pytest.mark.parametrize(("choice", "spare_blocks", "streams"), [("auto", 0, True), ("on", 1, True),
                                                                  ("auto", 1000, False), ("off", 0, False)])
def test_a_marked_module_streams_when_it_does_not_fit(runtime, monkeypatch, choice, spare_blocks, streams):
    from aiprod.aiprod_core.transformer.streaming import block_bytes, streaming_footprint

    model = runtime.mark_weight_streaming(_tiny_transformer(), choice)
    footprint, size = streaming_footprint(model, 0, 1), block_bytes(model)[0]
    calls = _fake_accelerator(monkeypatch, runtime, footprint + runtime.WORKING_RESERVE_BYTES + spare_blocks * size)
    host = runtime.ComfyModelHost(device=torch.device("cpu"), offload_device=torch.device("cpu"))
    homes = {k: v.data_ptr() for k, v in model.state_dict().items()}
    with host.use(model):
        hooked = [bool(b._forward_pre_hooks) for b in model.transformer_blocks]
    assert not any(b._forward_pre_hooks for b in model.transformer_blocks)
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == homes
    if not streams:
        assert calls[-1] == ("load", 1) and not any(hooked)
        return
    assert ("load", 1) not in calls
    assert ("free", footprint + runtime.WORKING_RESERVE_BYTES) in calls
    assert hooked == [i >= spare_blocks for i in range(len(hooked))]  # spare memory keeps leading blocks resident


def test_on_runs_plainly_on_a_cpu_comfyui(runtime, monkeypatch, caplog):
    model = runtime.mark_weight_streaming(_tiny_transformer(), "on")
    monkeypatch.setattr(runtime, "_NOTICES", set())
    host = runtime.ComfyModelHost(device=torch.device("cpu"), offload_device=torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger=runtime.__name__):
        for _ in range(2):
            with host.use(model):
                assert not any(b._forward_pre_hooks for b in model.transformer_blocks)
    assert sum("weight_streaming='on' has no effect" in r.message for r in caplog.records) == 1
    assert any(lm.model.model is model for lm in runtime.mm.current_loaded_models)  # loaded plainly
    runtime.release(model)
