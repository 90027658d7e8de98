"""Hostile model files through the real host (issue 15, items 10-13 and 16): a checkpoint truncated, rewritten or
replaced while a prompt samples; config metadata that contradicts the tensors or asks for absurd sizes; headers
that are huge, malformed or nested without end. After each: the server process is the same one, it kept answering,
the error (if any) names the file and the defect with a plain type name, and the next valid prompt runs (and reads
a changed file anew)."""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest
import requests
from safetensors.torch import load_file, save_file
from support.reliability_fixtures import choice, tiny_workflow

pytestmark = pytest.mark.host

_SEEDS = itertools.count(7000)
LOADED_TRANSFORMER = "loaded transformer from "


def _nodes(prompt: dict, class_type: str) -> list[dict]:
    return [n["inputs"] for n in prompt.values() if n["class_type"] == class_type]


def _with_checkpoint(combo: str, dtype: str = "auto", seed: int | None = None) -> dict:
    """text_to_video (tiny, a fresh seed) with every checkpoint input set to ``combo``."""
    prompt = tiny_workflow("text_to_video", seed=next(_SEEDS) if seed is None else seed)
    name = combo.rpartition("/")[2]  # the checkpoint loader lists file names; the text encoder's input spans folders
    for inputs in _nodes(prompt, "AIPRODCheckpointLoader"):
        inputs["checkpoint"] = name
    for inputs in _nodes(prompt, "AIPRODTextEncoderLoader"):
        inputs["checkpoint"] = f"{name} (checkpoints)"
    _nodes(prompt, "AIPRODCheckpointLoader")[0]["weight_dtype"] = dtype
    return prompt


def _lean(prompt: dict) -> dict:
    """Without the guider (one transformer pass per step) and the negative prompt: the cheapest full run."""
    _nodes(prompt, "AIPRODSampler")[0].pop("guider")
    _nodes(prompt, "AIPRODTextEncode")[0]["encode_negative"] = False
    return prompt


def _next_prompt_runs(rel, client) -> None:
    """The server is the same process, idle, and runs a valid prompt to the end (sampling, decoding, saving)."""
    assert rel.host.alive(), rel.host.log_tail()
    rel.wait_idle()
    result = client.run(_lean(tiny_workflow("text_to_video", seed=next(_SEEDS))), timeout=600)
    assert result.ok, result.error
    assert rel.state()["pid"] == rel.host.process.pid


def _assert_plain_error(error: dict, path: Path, *phrases: str) -> None:
    """ComfyUI shows ``exception_type`` as module.qualname: ours reads AIPROD.<Error>, never a file-system path."""
    assert error["exception_type"].startswith("AIPROD.") and "/" not in error["exception_type"], error
    message = re.sub(r"^\w+='[^']*': ", "", error["exception_message"])  # a node names its input first
    assert message.startswith(f"{path}: "), message
    for phrase in phrases:
        assert phrase in message, (phrase, message)


def _loads_of(rel, path: Path) -> int:
    return rel.host.log_tail(10**8).count(f"{LOADED_TRANSFORMER}{path}")


# ---- item 10: the checkpoint changes on disk while a prompt samples ---------------------------------------------

def _truncate(path: Path, good: bytes) -> None:
    os.truncate(path, len(good) // 3)


def _rewrite_in_place(path: Path, good: bytes) -> None:
    """``cp new old``: the same inode truncated and written again."""
    with open(path, "wb") as handle:
        handle.write(good)


def _replace(path: Path, good: bytes) -> None:
    """A download tool's atomic replacement: a new file renamed over the old one."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(good)
    os.replace(partial, path)


CHANGES = {"truncate": _truncate, "rewrite_in_place": _rewrite_in_place, "replace": _replace}


@pytest.fixture
def mutable_checkpoint(rel):
    """A private copy of the demo checkpoint (not the shared symlinked file): ``(path, combo, good bytes)``."""
    source = (rel.host.models_dir("checkpoints") / Path(rel.combos["checkpoint"]).name).resolve()
    path = rel.host.models_dir("checkpoints") / "rel_mutable_checkpoint.safetensors"
    good = source.read_bytes()
    path.write_bytes(good)
    yield path, choice(f"checkpoints/{path.name}"), good
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])  # bf16: stored dtype (no cast); fp32: a cast load
def test_checkpoint_changed_while_sampling_never_kills_the_server_and_the_next_prompt_reloads_it(
        rel, rel_client, mutable_checkpoint, dtype, change):
    path, combo, good = mutable_checkpoint
    loads = _loads_of(rel, path)
    calls = rel.state()["calls"].get("transformer", 0)
    with rel.fault("slow_sample", seconds=1.0):
        prompt_id = rel_client.queue(_with_checkpoint(combo, dtype))
    rel.wait_for_calls("transformer", calls)  # sampling: the transformer is loaded and running
    assert _loads_of(rel, path) == loads + 1
    CHANGES[change](path, good)
    result = rel_client.wait(prompt_id, timeout=600)
    assert rel.host.alive(), f"ComfyUI died:\n{rel.host.log_tail()}"
    # Sampling finished on the loaded copy; the decoder, loaded after the change, refuses the changed file by name.
    assert result.status == "error", "the decoder loaded a file that changed during the prompt"
    assert result.error["node_type"] in ("AIPRODVideoDecode", "AIPRODAudioDecode"), result.error
    _assert_plain_error(result.error, path, "changed on disk after its loader node ran", "Queue the prompt again")
    if change == "truncate":
        _rewrite_in_place(path, good)
    rel.wait_idle()
    result = rel_client.run(_with_checkpoint(combo, dtype), timeout=600)
    assert result.ok, result.error
    assert _loads_of(rel, path) == loads + 2  # the loader saw the new version and loaded it again
    assert rel.state()["pid"] == rel.host.process.pid


# ---- items 11 and 13: config metadata and headers that lie or are malformed -------------------------------------

def _raw_file(path: Path, header: object, data: bytes = b"\0" * 16, raw: bytes | None = None) -> Path:
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


ENTRY = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
META = {"config": json.dumps({"transformer": {}}), "model_version": "2.3.0"}
MALFORMED: dict[str, tuple[dict | bytes, str]] = {
    "float_offsets": ({"__metadata__": META, "w": {**ENTRY, "data_offsets": [0.0, 16.0]}},
                      "invalid data offsets [0.0, 16.0] for tensor 'w'"),
    "string_offsets": ({"__metadata__": META, "w": {**ENTRY, "data_offsets": ["0", "16"]}},
                       "invalid data offsets ['0', '16']"),
    "three_offsets": ({"__metadata__": META, "w": {**ENTRY, "data_offsets": [0, 8, 16]}},
                      "invalid data offsets [0, 8, 16]"),
    "negative_shape": ({"__metadata__": META, "w": {**ENTRY, "shape": [-4]}}, "invalid shape [-4]"),
    "float_shape": ({"__metadata__": META, "w": {**ENTRY, "shape": [4.0]}}, "invalid shape [4.0]"),
    "huge_shape": ({"__metadata__": META, "w": {**ENTRY, "shape": [2**62, 2**62]}}, "needs"),
    "unknown_dtype": ({"__metadata__": META, "w": {**ENTRY, "dtype": "Q4_K"}}, "as dtype 'Q4_K'"),
    "metadata_not_strings": ({"__metadata__": {"config": {"transformer": {}}}, "w": ENTRY},
                             "`__metadata__` value for 'config' that is a dict"),
    "deep_header": (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels deep"),
    "config_a_number": ({"__metadata__": {"config": "7"}, "model.diffusion_model.patchify_proj.weight": ENTRY},
                        "`config` metadata entry that is a int"),
    "config_a_list": ({"__metadata__": {"config": "[1, 2]"}, "model.diffusion_model.patchify_proj.weight": ENTRY},
                      "`config` metadata entry that is a list"),
    "config_deep": ({"__metadata__": {"config": "[" * 100_000 + "]" * 100_000},
                     "model.diffusion_model.patchify_proj.weight": ENTRY}, "nested more than 64 levels deep"),
}


def _edited_checkpoint(rel, name: str, change) -> Path:
    """The demo checkpoint's tensors with its config metadata edited by ``change``."""
    source = (rel.host.models_dir("checkpoints") / Path(rel.combos["checkpoint"]).name).resolve()
    tensors = load_file(str(source))
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
    config = json.loads(metadata["config"])
    change(config)
    path = rel.host.models_dir("checkpoints") / name
    save_file(tensors, str(path), metadata={**metadata, "config": json.dumps(config)})
    return path


HOSTILE_CONFIGS = {
    "layers_1e9": (lambda c: c["transformer"].update(num_layers=10**9),
                   "transformer.num_layers=1000000000, expected 'an int in [1, 1024]'"),
    "layers_vs_blocks": (lambda c: c["transformer"].update(num_layers=40),
                         "transformer.num_layers=40, expected 30 (the file has model.diffusion_model.transformer_"),
    "bwe_n_fft": (lambda c: c["vocoder"]["bwe"].update(n_fft=65536), "vocoder.bwe.n_fft=65536"),
    "vae_section_a_list": (lambda c: c.update(vae=[1, 2]), "vae=[1, 2], expected \"a dict (the video VAE section"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_header_fails_the_loader_naming_the_file_and_the_defect(rel, rel_client, name):
    header, phrase = MALFORMED[name]
    path = rel.host.models_dir("checkpoints") / f"rel_malformed_{name}.safetensors"
    if isinstance(header, bytes):
        _raw_file(path, None, raw=header)
    else:
        _raw_file(path, header)
    try:
        result = rel_client.run(_with_checkpoint(choice(f"checkpoints/{path.name}")), timeout=300)
        assert result.status == "error" and result.error["node_type"] == "AIPRODCheckpointLoader", result.error
        _assert_plain_error(result.error, path, phrase)
        assert result.error["exception_type"] == "AIPROD.CheckpointFormatError"
    finally:
        path.unlink(missing_ok=True)
    _next_prompt_runs(rel, rel_client)


@pytest.mark.parametrize("name", sorted(HOSTILE_CONFIGS))
def test_config_that_lies_about_the_tensors_fails_the_loader_before_any_build(rel, rel_client, name):
    change, phrase = HOSTILE_CONFIGS[name]
    path = _edited_checkpoint(rel, f"rel_config_{name}.safetensors", change)
    try:
        started = time.monotonic()
        result = rel_client.run(_with_checkpoint(choice(f"checkpoints/{path.name}")), timeout=300)
        assert result.status == "error" and result.error["node_type"] == "AIPRODCheckpointLoader", result.error
        _assert_plain_error(result.error, path, phrase, "metadata was edited or copied from another model")
        assert time.monotonic() - started < 120  # no block list of 10**9 entries was built
    finally:
        path.unlink(missing_ok=True)
    _next_prompt_runs(rel, rel_client)


def test_gemma_config_that_lies_about_its_weights_fails_the_text_encoder_loader(rel, rel_client):
    source = rel.host.models_dir("text_encoders") / Path(rel.combos["text_encoder"]).name
    folder = rel.host.models_dir("text_encoders") / "rel-gemma-hostile-config"
    folder.mkdir(exist_ok=True)
    for item in source.resolve().iterdir():
        if item.name == "config.json":
            config = json.loads(item.read_text())
            config.get("text_config", config)["num_hidden_layers"] = 10**8
            (folder / item.name).write_text(json.dumps(config))
        elif not (folder / item.name).exists():
            (folder / item.name).symlink_to(item.resolve())
    prompt = tiny_workflow("text_to_video", seed=next(_SEEDS))
    _nodes(prompt, "AIPRODTextEncoderLoader")[0]["gemma"] = choice(f"text_encoders/{folder.name}")
    try:
        result = rel_client.run(prompt, timeout=300)
        assert result.status == "error" and result.error["node_type"] == "AIPRODTextEncoderLoader", result.error
        _assert_plain_error(result.error, folder / "config.json", "num_hidden_layers=100000000")
    finally:
        shutil.rmtree(folder)
    _next_prompt_runs(rel, rel_client)


# ---- item 12: huge headers are refused fast, and the HTTP API answers meanwhile ---------------------------------

def _many_tensors(path: Path, count: int) -> Path:
    table = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}
    table["__metadata__"] = META
    return _raw_file(path, None, data=b"", raw=json.dumps(table, separators=(",", ":")).encode())


class _Poller:
    """Times GET /system_stats and /object_info/<node> in a loop until stopped (the event loop's health)."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies, self.failures, self._stop = url, [], [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in ("/system_stats", "/object_info/AIPRODCheckpointLoader"):
                started = time.monotonic()
                try:
                    status = requests.get(self.url + path, timeout=60).status_code
                except requests.RequestException as exc:
                    status = repr(exc)
                self.latencies.append(time.monotonic() - started)
                if status != 200:
                    self.failures.append((path, status))
            time.sleep(0.05)

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


@pytest.mark.parametrize(("count", "phrase"), [
    (900_000, "declares about 900000 tensors; at most 65536 are accepted"),  # the 53 MB header of the report
    (65_000, "does not contain a transformer"),  # just under the bound: parsed once, then refused by content
])
def test_huge_header_is_refused_fast_while_the_server_keeps_answering(rel, rel_client, count, phrase):
    path = _many_tensors(rel.host.models_dir("checkpoints") / f"rel_huge_header_{count}.safetensors", count)
    try:
        with _Poller(rel.host.url) as poller:
            started = time.monotonic()
            prompt_id = rel_client.queue(_with_checkpoint(choice(f"checkpoints/{path.name}")))
            queued = time.monotonic() - started
            result = rel_client.wait(prompt_id, timeout=300)
            elapsed = time.monotonic() - started
        assert result.status == "error" and result.error["node_type"] == "AIPRODCheckpointLoader", result.error
        _assert_plain_error(result.error, path, phrase)
        assert queued < 10, queued  # POST /prompt (validate_inputs on the event loop) never parses the header
        assert elapsed < 120, elapsed  # was ~20 minutes of a stalled server
        assert poller.latencies and not poller.failures, poller.failures
        assert max(poller.latencies) < 10, max(poller.latencies)
    finally:
        path.unlink(missing_ok=True)
    _next_prompt_runs(rel, rel_client)


# ---- item 16: the type users see --------------------------------------------------------------------------------

def test_wrong_file_error_type_is_a_plain_name(rel, rel_client):
    from support.reliability_fixtures import BAD

    path = rel.host.models_dir("checkpoints") / Path(BAD["lora_as_checkpoint"]).name
    prompt = copy.deepcopy(_with_checkpoint(BAD["lora_as_checkpoint"]))
    result = rel_client.run(prompt, timeout=300)
    assert result.status == "error"
    assert result.error["exception_type"] == "AIPROD.WrongComponentError"
    _assert_plain_error(result.error, path, "is a LoRA, not a transformer", "LoRA loader")
    assert "custom_nodes" not in result.error["exception_type"]
