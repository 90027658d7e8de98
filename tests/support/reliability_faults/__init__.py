"""Test-only ComfyUI custom-node package: fault injection into the AIPROD pack of the reliability host.

Installed (symlinked) into the reliability host's ``custom_nodes``; defines no nodes. Faults are armed by a JSON
file named by ``AIPROD_FAULTS_FILE`` (``{"fault": "<name>", ...}``), read when a prompt is posted (an on-prompt
handler), so a fault applies to the prompts queued while the file says so. Faults:

- ``oom_decode``: the video decoder's forward raises ``torch.OutOfMemoryError`` (as CUDA does);
- ``slow_decode`` / ``slow_sample``: the video decoder / transformer forward sleeps ``seconds`` first (room for
  an ``/interrupt`` in the middle of decoding / sampling);
- ``enospc_write``: disk full in the middle of writing an output (video: after the video stream is muxed into the
  file; tensors: half the bytes written), ``OSError(ENOSPC)``;
- ``erofs_write``: the output folder is read-only, ``OSError(EROFS)`` when an output file is opened for writing;
- ``eacces``: ``open()`` of a file whose base name is ``name`` raises ``PermissionError`` (root ignores chmod).

GET ``/aiprod_faults/state`` answers the process id, the armed fault, call counters of the patched functions and
ComfyUI's currently loaded models. GET ``/aiprod_faults/probe`` tries a pickle load, a ``torch.load``, a DNS lookup
and a connection to a non-loopback address in the server, as a positive control of the runtime guard.
"""

from __future__ import annotations

import builtins
import errno
import json
import logging
import os
import sys
import threading
import time

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

logger = logging.getLogger("aiprod_reliability_faults")

_STATE: dict = {"fault": {}, "calls": {}, "installed": []}
_LOCK = threading.Lock()
_REAL_OPEN = builtins.open


def _fault() -> dict:
    return _STATE["fault"]


def _count(name: str) -> None:
    with _LOCK:
        _STATE["calls"][name] = _STATE["calls"].get(name, 0) + 1


def _read_flag() -> dict:
    path = os.environ.get("AIPROD_FAULTS_FILE")
    if not path or not os.path.exists(path):
        return {}
    with _REAL_OPEN(path, encoding="utf-8") as handle:
        return json.load(handle)


def _module(suffix: str):
    for name, module in list(sys.modules.items()):
        if name.endswith(suffix) and module is not None:
            return module
    raise LookupError(f"no loaded module ending in {suffix!r}")


def _sleep_if(fault_name: str) -> None:
    fault = _fault()
    if fault.get("fault") == fault_name:
        time.sleep(float(fault.get("seconds", 2.0)))


def _patch_decoder() -> None:
    import torch

    cls = _module(".aiprod_core.video_vae.decoder").VideoDecoder
    forward = cls.forward

    def faulty_forward(self, *args, **kwargs):
        _count("video_decoder")
        if _fault().get("fault") == "oom_decode":
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (injected by the reliability tests)")
        _sleep_if("slow_decode")
        return forward(self, *args, **kwargs)

    cls.forward = faulty_forward


def _patch_transformer() -> None:
    cls = _module(".aiprod_core.transformer.model").AVTransformer
    forward = cls.forward

    def slow_forward(self, *args, **kwargs):
        _count("transformer")
        _sleep_if("slow_sample")
        return forward(self, *args, **kwargs)

    cls.forward = slow_forward


class _FaultyAv:
    """Stands in for the ``av`` module inside the pack's media writer: ``open`` for writing can fail."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def open(self, file, mode="r", *args, **kwargs):
        if "w" in mode and _fault().get("fault") == "erofs_write":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return self._real.open(file, mode, *args, **kwargs)


def _patch_media() -> None:
    media = _module(".aiprod_core.media")
    media.av = _FaultyAv(media.av)
    encode_video = media._encode_video

    def encode_then_fill_disk(container, *args, **kwargs):
        _count("encode_video")
        encode_video(container, *args, **kwargs)
        if _fault().get("fault") == "enospc_write":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    media._encode_video = encode_then_fill_disk


def _patch_tensor_files() -> None:
    files = _module(".nodes.files")
    save_file = files.save_file

    def faulty_save_file(tensors, filename, metadata=None):
        _count("save_file")
        fault = _fault().get("fault")
        if fault == "erofs_write":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), filename)
        if fault == "enospc_write":
            from safetensors.torch import save as to_bytes

            data = to_bytes(tensors, metadata=metadata)
            with _REAL_OPEN(filename, "wb") as handle:  # what a full disk leaves: the first half
                handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return save_file(tensors, filename, metadata=metadata)

    files.save_file = faulty_save_file


def _guarded_open(file, *args, **kwargs):
    fault = _fault()
    if fault.get("fault") == "eacces" and isinstance(file, str | os.PathLike) \
            and os.path.basename(os.fspath(file)) == fault.get("name"):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
    return _REAL_OPEN(file, *args, **kwargs)


def _install() -> None:
    for name, patch in (("decoder", _patch_decoder), ("transformer", _patch_transformer),
                        ("media", _patch_media), ("tensor_files", _patch_tensor_files)):
        if name in _STATE["installed"]:
            continue
        try:
            patch()
        except (LookupError, AttributeError) as exc:
            logger.warning("reliability faults: %s not patched yet: %s", name, exc)
            continue
        _STATE["installed"].append(name)
    if builtins.open is not _guarded_open:
        builtins.open = _guarded_open


def _on_prompt(json_data: dict) -> dict:
    _install()
    _STATE["fault"] = _read_flag()
    logger.info("reliability faults: armed %s", _STATE["fault"] or "nothing")
    return json_data


def _register() -> None:
    from aiohttp import web
    from server import PromptServer

    server = PromptServer.instance
    server.add_on_prompt_handler(_on_prompt)

    @server.routes.get("/aiprod_faults/state")
    async def state(request):
        import comfy.model_management as mm

        loaded = [type(getattr(m.model, "model", m.model)).__name__ for m in mm.current_loaded_models]
        with _LOCK:
            calls = dict(_STATE["calls"])
        return web.json_response({"pid": os.getpid(), "fault": _STATE["fault"], "calls": calls,
                                  "installed": _STATE["installed"], "loaded_models": loaded})

    @server.routes.get("/aiprod_faults/probe")
    async def probe(request):
        return web.json_response(_probe())


def _connect(address: tuple[str, int]) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        sock.connect(address)


def _probe() -> dict[str, str]:
    import io
    import pickle
    import socket

    import torch

    attempts = {
        "pickle.loads": lambda: pickle.loads(b"\x80\x04N."),
        "torch.load": lambda: torch.load(io.BytesIO(b"")),
        "getaddrinfo": lambda: socket.getaddrinfo("example.com", 443),
        "connect": lambda: _connect(("192.0.2.1", 9)),
    }
    results = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            results[name] = "allowed"
        except PermissionError as exc:
            results[name] = f"refused: {exc}"
        except Exception as exc:  # the guard is missing: whatever else happened
            results[name] = f"allowed, then {type(exc).__name__}: {exc}"
    return results


_register()
