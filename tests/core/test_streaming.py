"""Low-VRAM block streaming: a streamed forward equals the plain one bitwise (both generations, STG prefix
sharing, fp8 layers), blocks compute on copies and go back to their host tensors, the model is restored after
detaching (also on errors), resident blocks stay materialised, and the footprint estimate is what is held."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
import torch
from support import tiny_configs as tc

from aiprod.aiprod_core.pipelines import OffloadingHost
from aiprod.aiprod_core.transformer import (
    AVTransformer,
    ModalityInput,
    Perturbations,
    SamplePerturbation,
    TransformerConfig,
)
from aiprod.aiprod_core.transformer.sharing import SharingPlan
from aiprod.aiprod_core.transformer.streaming import (
    BlockStreamer,
    block_bytes,
    max_resident_blocks,
    streaming_footprint,
)
from aiprod.loaders.fp8 import Fp8Linear, swap_in_fp8_linears

NUM_LAYERS = 4  # enough blocks for a prefetch window that wraps and a resident prefix
VIDEO_TOKENS, AUDIO_TOKENS, CONTEXT_TOKENS = 12, 5, 7
STG_BLOCK = 2
FP8_SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model(generation: str, num_layers: int = NUM_LAYERS, seed: int = 3, **sizes: Any) -> AVTransformer:
    section = tc.transformer_config(generation)
    section.update(num_layers=num_layers, **sizes)
    model = AVTransformer(TransformerConfig.from_metadata({"transformer": section}))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            scale = param.shape[-1] ** -0.5 if param.ndim == 2 and param.shape[0] > 16 else 0.1
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return model.eval().requires_grad_(False)


def _stream(gen: torch.Generator, tokens: int, width: int, n_dims: int, batch: int) -> dict[str, torch.Tensor]:
    starts = torch.rand(1, n_dims, tokens, 1, generator=gen) * 4
    rows = {
        "latent": torch.randn(1, tokens, 128, generator=gen),
        "sigma": torch.full((1,), 0.6),
        "timesteps": torch.full((1, tokens), 0.6),
        "positions": torch.cat([starts, starts + 1], dim=-1),
        "context": torch.randn(1, CONTEXT_TOKENS, width, generator=gen),
    }
    return {k: torch.cat([v] * batch) for k, v in rows.items()}


def _inputs(model: AVTransformer, guided: bool) -> tuple[ModalityInput, ModalityInput, Perturbations]:
    """One plain sample, or a positive + STG pair (same inputs) that the forward runs with a shared prefix."""
    gen = torch.Generator().manual_seed(4)
    config = model.config
    ltx2 = config.caption_projection_in_transformer
    batch = 2 if guided else 1
    video = _stream(gen, VIDEO_TOKENS, config.caption_channels if ltx2 else config.inner_dim, 3, batch)
    audio = _stream(gen, AUDIO_TOKENS, config.caption_channels if ltx2 else config.audio_inner_dim, 1, batch)
    samples = [SamplePerturbation()]
    if guided:
        samples.append(SamplePerturbation.stg(video_blocks=[STG_BLOCK], audio_blocks=[STG_BLOCK]))
    return ModalityInput(**video), ModalityInput(**audio), Perturbations(tuple(samples))


def _homes(model: torch.nn.Module) -> dict[str, int]:
    return {name: t.data_ptr() for name, t in model.state_dict(keep_vars=True).items()}


def _probe(block: torch.nn.Module, record: Callable[[], None]) -> Any:
    """Call ``record`` in the middle of ``block``'s forward (before its first Linear-like child runs)."""
    child = next(m for m in block.modules() if isinstance(m, torch.nn.Linear | Fp8Linear))
    return child.register_forward_pre_hook(lambda *_: record())


@pytest.fixture(scope="module", params=tc.GENERATIONS)
def model(request: pytest.FixtureRequest) -> AVTransformer:
    return _model(request.param)


@pytest.mark.parametrize("guided", [False, True], ids=["plain", "stg_shared_prefix"])
@pytest.mark.parametrize(("resident", "prefetch"), [(0, 1), (1, 0), (2, 3)])
def test_streamed_forward_is_bitwise_equal(model: AVTransformer, guided: bool, resident: int, prefetch: int) -> None:
    video, audio, perturbations = _inputs(model, guided)
    if guided:
        plan = SharingPlan.find((video, audio), perturbations, NUM_LAYERS)
        assert plan is not None and plan.split_at == (0, STG_BLOCK)
    with torch.no_grad():
        plain = model(video, audio, perturbations)
        with BlockStreamer(resident_blocks=resident, prefetch=prefetch).attached(model, "cpu"):
            first = model(video, audio, perturbations)
            second = model(video, audio, perturbations)  # the window wrapped around to block 0
    for got in (first, second):
        assert torch.equal(got.video, plain.video) and torch.equal(got.audio, plain.audio)
    if guided:
        assert (plain.video[1] - plain.video[0]).abs().max() > 1e-4  # the STG row did split off


def test_blocks_compute_on_copies_and_go_home(model: AVTransformer) -> None:
    before = _homes(model)
    params = {name: id(p) for name, p in model.named_parameters()}
    blocks = model.transformer_blocks
    seen: list[tuple[int, int, int]] = []  # (block computing, its tensors on their home storage, blocks on copies)

    def record(index: int) -> None:
        now = _homes(model)
        prefixes = [f"transformer_blocks.{i}." for i in range(NUM_LAYERS)]
        own = [k for k in now if k.startswith(prefixes[index])]
        on_copies = sum(any(now[k] != before[k] for k in now if k.startswith(p)) for p in prefixes)
        seen.append((index, sum(now[k] == before[k] for k in own), on_copies))

    probes = [_probe(block, lambda i=i: record(i)) for i, block in enumerate(blocks)]
    video, audio, perturbations = _inputs(model, guided=True)
    try:
        with torch.no_grad(), BlockStreamer().attached(model, "cpu") as attached:
            assert attached is model
            outside = [k for k in before if not k.startswith("transformer_blocks.")]
            assert all(_homes(model)[k] != before[k] for k in outside)  # the non-block parts sit on copies
            assert all(_homes(model)[k] == before[k] for k in before if k not in outside)  # blocks at home
            model(video, audio, perturbations)
            assert all(_homes(model)[k] == before[k] for k in before if k not in outside)
    finally:
        for probe in probes:
            probe.remove()
    assert seen == [(i, 0, 1) for i in range(NUM_LAYERS)]  # each block on copies, alone, once, in order
    assert _homes(model) == before
    assert {name: id(p) for name, p in model.named_parameters()} == params
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in blocks)


def test_resident_blocks_stay_materialised(model: AVTransformer) -> None:
    before = _homes(model)
    resident = 2
    states: list[list[bool]] = []  # per probe: is block i on copies

    def record() -> None:
        now = _homes(model)
        states.append([any(now[k] != before[k] for k in now if k.startswith(f"transformer_blocks.{i}."))
                       for i in range(NUM_LAYERS)])

    probe = _probe(model.transformer_blocks[NUM_LAYERS - 1], record)
    video, audio, perturbations = _inputs(model, guided=False)
    try:
        with torch.no_grad(), BlockStreamer(resident_blocks=resident).attached(model, "cpu"):
            model(video, audio, perturbations)
            record()  # between forwards
    finally:
        probe.remove()
    assert states == [[True, True, False, True], [True, True, False, False]]
    assert not any(b._forward_pre_hooks for b in model.transformer_blocks[:resident])
    assert _homes(model) == before


def test_restored_when_the_body_or_a_block_raises(model: AVTransformer) -> None:
    before = _homes(model)
    streamer = BlockStreamer(resident_blocks=1)
    video, audio, perturbations = _inputs(model, guided=False)
    with pytest.raises(KeyError, match="body"), torch.no_grad(), streamer.attached(model, "cpu"):
        model(video, audio, perturbations)
        raise KeyError("body")
    assert _homes(model) == before and streamer.device_bytes == 0

    def fail(*_: Any) -> None:
        raise ArithmeticError("inside block 2")

    probe = _probe(model.transformer_blocks[2], fail)
    try:
        with pytest.raises(ArithmeticError, match="block 2"), torch.no_grad(), streamer.attached(model, "cpu"):
            model(video, audio, perturbations)
    finally:
        probe.remove()
    assert _homes(model) == before
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in model.transformer_blocks)
    with torch.no_grad(), streamer.attached(model, "cpu"):  # attachable again
        assert streamer.attached_device == torch.device("cpu")
    assert streamer.attached_device is None


def test_footprint_estimate_counts_the_weights(model: AVTransformer) -> None:
    state = model.state_dict()
    per_block = [sum(v.numel() * v.element_size() for k, v in state.items()
                     if k.startswith(f"transformer_blocks.{i}.")) for i in range(NUM_LAYERS)]
    total = sum(v.numel() * v.element_size() for v in state.values())
    assert block_bytes(model) == per_block
    outside = total - sum(per_block)
    assert streaming_footprint(model, 0, 1) == outside + 2 * max(per_block)
    assert streaming_footprint(model, 1, 0) == outside + per_block[0] + max(per_block[1:])
    assert streaming_footprint(model, NUM_LAYERS, 1) == total


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_footprint_bounds_the_bytes_held_while_streaming(model: AVTransformer, prefetch: int) -> None:
    per_block = block_bytes(model)
    outside = streaming_footprint(model, NUM_LAYERS, 0) - sum(per_block)
    streamer = BlockStreamer(resident_blocks=1, prefetch=prefetch)
    held: list[int] = []
    probes = [_probe(block, lambda: held.append(streamer.device_bytes)) for block in model.transformer_blocks]
    video, audio, perturbations = _inputs(model, guided=False)
    try:
        with torch.no_grad(), streamer.attached(model, "cpu"):
            model(video, audio, perturbations)
    finally:
        for probe in probes:
            probe.remove()
    # On the CPU a finished block's copies are free at once: the computing block plus up to ``prefetch`` issued
    # ones. On CUDA the block whose kernels may still run counts too: the footprint's 1 + prefetch.
    assert max(held) == outside + per_block[0] + max(1, prefetch) * per_block[1]
    assert max(held) <= streaming_footprint(model, 1, prefetch)
    assert held[0] == outside + per_block[0]  # the resident block alone: nothing streamed yet


def test_max_resident_blocks_fills_the_budget(model: AVTransformer) -> None:
    size = block_bytes(model)[0]
    streaming = streaming_footprint(model, 0, 1)  # outside + 2 blocks
    assert max_resident_blocks(model, streaming - 1) == 0
    assert max_resident_blocks(model, streaming + size - 1) == 0
    assert max_resident_blocks(model, streaming + size) == 1
    assert max_resident_blocks(model, streaming_footprint(model, NUM_LAYERS, 1)) == NUM_LAYERS
    assert max_resident_blocks(model, streaming + size, prefetch=0) == 2  # a smaller window leaves room for more


@pytest.mark.parametrize(("stream_blocks", "hooked"), [(True, [False, True, True, True]), (False, [False] * 4)])
def test_offloading_host_streams_only_when_asked(model: AVTransformer, stream_blocks: bool, hooked: list) -> None:
    host = OffloadingHost("cpu", stream_blocks=stream_blocks, resident_blocks=1)
    before = _homes(model)
    video, audio, perturbations = _inputs(model, guided=True)
    with torch.no_grad():
        plain = model(video, audio, perturbations)
        with host.use(model) as ready:
            assert [bool(b._forward_pre_hooks) for b in ready.transformer_blocks] == hooked
            got = ready(video, audio, perturbations)
        layer = torch.nn.Linear(2, 2)
        with host.use(layer) as moved:  # no block list: moved whole as before
            assert moved(torch.ones(1, 2)).shape == (1, 2)
    assert torch.equal(got.video, plain.video) and torch.equal(got.audio, plain.audio)
    assert _homes(model) == before
    assert not any(b._forward_pre_hooks or b._forward_hooks for b in model.transformer_blocks)


@pytest.mark.parametrize(("option", "value", "match"), [
    ("prefetch", -1, "prefetch=-1"), ("resident_blocks", 1.5, "resident_blocks=1.5"),
    ("resident_blocks", NUM_LAYERS + 1, f"resident_blocks={NUM_LAYERS + 1}, expected 0..{NUM_LAYERS}"),
])
def test_bad_options_are_named(model: AVTransformer, option: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        with BlockStreamer(**{option: value}).attached(model, "cpu"):
            pass
    with pytest.raises(ValueError, match="Linear.transformer_blocks"):
        streaming_footprint(torch.nn.Linear(2, 2))


def _fp8_copy(generation: str) -> tuple[AVTransformer, AVTransformer]:
    """A tiny model and its copy with the blocks' Linears as fp8 `Fp8Linear`s holding the fp8-cast weights."""
    source = _model(generation, seed=9)
    kept = _model(generation, seed=9)
    layers = {name: {"weight_dtype": torch.float8_e4m3fn, "weight_scale": (), "input_scale": ()}
              for name, m in kept.named_modules()
              if name.startswith("transformer_blocks.") and name.endswith(FP8_SUFFIXES)}
    assert not swap_in_fp8_linears(kept, layers)
    with torch.no_grad():
        for name in layers:
            linear, fp8 = source.get_submodule(name), kept.get_submodule(name)
            fp8.weight.copy_((linear.weight * 4).to(torch.float8_e4m3fn))
            fp8.weight_scale.fill_(0.25)
            fp8.input_scale.fill_(1.0)
            fp8.bias.copy_(linear.bias)
    return source, kept.eval()


@pytest.mark.parametrize("generation", tc.GENERATIONS)
def test_fp8_blocks_stream_their_fp8_bytes(generation: str) -> None:
    _, kept = _fp8_copy(generation)
    layer = kept.get_submodule("transformer_blocks.1.ff.net.2")
    dtypes: list[torch.dtype] = []
    probe = layer.register_forward_pre_hook(lambda module, _: dtypes.append(module.weight.dtype))
    video, audio, perturbations = _inputs(kept, guided=True)
    try:
        with torch.no_grad():
            plain = kept(video, audio, perturbations)
            with BlockStreamer().attached(kept, "cpu"):
                streamed = kept(video, audio, perturbations)
    finally:
        probe.remove()
    assert dtypes == [torch.float8_e4m3fn] * 2
    assert torch.equal(streamed.video, plain.video) and torch.equal(streamed.audio, plain.audio)
    fp8_bytes = sum(m.weight.numel() for m in kept.transformer_blocks[0].modules() if isinstance(m, Fp8Linear))
    assert fp8_bytes > 0
    full = block_bytes(_model(generation))[0]
    assert block_bytes(kept)[0] == full - 3 * fp8_bytes + 8 * sum(  # float32 -> fp8 weights, + 2 scalar scales
        isinstance(m, Fp8Linear) for m in kept.transformer_blocks[0].modules())


# ---------------------------------------------------------------------------------------------------------------
# CUDA (pinned host memory, side-stream prefetch, peak memory)
# ---------------------------------------------------------------------------------------------------------------


def _cuda_model() -> AVTransformer:
    """Wider than the CPU tests' model so weights, not activations, dominate device memory (~6 MB a block)."""
    return _model(tc.LTX23, num_layers=8, num_attention_heads=4, attention_head_dim=64,
                  audio_num_attention_heads=4, audio_attention_head_dim=32, cross_attention_dim=256,
                  audio_cross_attention_dim=128, connector_attention_head_dim=64, audio_connector_attention_head_dim=32)


def _to(value: ModalityInput, device: str) -> ModalityInput:
    return ModalityInput(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in value.__dict__.items()})


@CUDA
@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_cuda_streamed_forward_is_bitwise_equal_under_a_slow_compute_stream(prefetch: int) -> None:
    model = _cuda_model()
    video, audio, perturbations = _inputs(model, guided=True)
    video, audio = _to(video, "cuda"), _to(audio, "cuda")
    with torch.no_grad():
        plain = model.to("cuda")(video, audio, perturbations)
        model.to("cpu")
        # A slow compute stream lets the side-stream copies run ahead: only the events keep the reads in order.
        probes = [_probe(block, lambda: torch.cuda._sleep(2_000_000)) for block in model.transformer_blocks]
        streamer = BlockStreamer(prefetch=prefetch)
        try:
            with streamer.attached(model, "cuda"):
                homes = [t.data for t in model.transformer_blocks[3].parameters()]
                assert all(t.is_pinned() for t in homes)
                streamed = [model(video, audio, perturbations) for _ in range(2)]
        finally:
            for probe in probes:
                probe.remove()
    for got in streamed:
        assert torch.equal(got.video, plain.video) and torch.equal(got.audio, plain.audio)
    assert all(t.device.type == "cpu" for t in model.state_dict().values())


@CUDA
def test_cuda_peak_memory_of_a_streamed_forward() -> None:
    model = _cuda_model()
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    video, audio, perturbations = _inputs(model, guided=False)
    video, audio = _to(video, "cuda"), _to(audio, "cuda")
    streamer = BlockStreamer(prefetch=1)
    with torch.no_grad(), streamer.attached(model, "cuda"):  # warm-up: the rotary tables stay cached on the device
        model(video, audio, perturbations)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    held: list[int] = []
    probes = [_probe(block, lambda: held.append(streamer.device_bytes)) for block in model.transformer_blocks]
    try:
        with torch.no_grad(), streamer.attached(model, "cuda"):
            model(video, audio, perturbations)
            model(video, audio, perturbations)
    finally:
        for probe in probes:
            probe.remove()
    footprint = streaming_footprint(model, 0, 1)
    peak = torch.cuda.max_memory_allocated() - base
    assert max(held) <= footprint
    assert peak < footprint + max(block_bytes(model)) < total  # 1 + prefetch blocks (+ activations), not all
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == base  # every copy dropped after detaching


@CUDA
def test_cuda_pinned_memory_is_returned_when_the_model_is_freed() -> None:
    model = _cuda_model()
    video, audio, perturbations = _inputs(model, guided=False)
    video, audio = _to(video, "cuda"), _to(audio, "cuda")
    with torch.no_grad(), BlockStreamer().attached(model, "cuda"):
        model(video, audio, perturbations)
    pinned = torch.cuda.host_memory_stats().get("allocated_bytes.current", 0)
    assert pinned >= sum(block_bytes(model)[1:])  # the streamed blocks live in pinned host memory
    del model
    gc.collect()
    assert torch.cuda.host_memory_stats().get("allocated_bytes.current", 0) < pinned


def test_unfused_lora_adapters_stream_with_their_block(tiny_set) -> None:
    """Run-time LoRA adapters (the fp8-kept path) live inside the blocks: their A / B stream with them."""
    from aiprod.loaders.lora_apply import LoraAdapter, load_component_with_loras

    model = load_component_with_loras(tiny_set.ltx2, "transformer", [(tiny_set.lora, 0.9)], dtype=torch.float32,
                                      mode="unfused").module
    adapters = [m for m in model.transformer_blocks.modules() if isinstance(m, LoraAdapter)]
    assert adapters
    seen: list[bool] = []
    probe = adapters[0].register_forward_pre_hook(
        lambda module, _: seen.append(module.down.data_ptr() != homes[0]))
    homes = [adapters[0].down.data_ptr()]
    video, audio, perturbations = _inputs(model, guided=True)
    try:
        with torch.no_grad():
            plain = model(video, audio, perturbations)
            seen.clear()
            with BlockStreamer().attached(model, "cpu"):
                streamed = model(video, audio, perturbations)
    finally:
        probe.remove()
    assert seen and all(seen)  # the adapter computed on the streamed copy of its A
    assert adapters[0].down.data_ptr() == homes[0]
    assert torch.equal(streamed.video, plain.video) and torch.equal(streamed.audio, plain.audio)
