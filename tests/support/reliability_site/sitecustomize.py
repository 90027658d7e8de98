"""Runtime guard of the reliability host (test-only; on the server's PYTHONPATH, active when AIPROD_GUARD_LOG is set).

Python imports ``sitecustomize`` at start-up, before ComfyUI. When ``AIPROD_GUARD_LOG`` names a file, this:

- refuses every network connection / name lookup / datagram to a non-loopback address (audit hooks on
  ``socket.connect``, ``socket.getaddrinfo``, ``socket.gethostbyname``, ``socket.sendto``) and records it;
- makes ``pickle.load``, ``pickle.loads`` and ``torch.load`` raise (and records the call): the pack must load
  safetensors only;
- records ``eval`` / ``exec`` / ``compile`` called directly from a file under ``AIPROD_GUARD_PACK_DIRS``
  (``os.pathsep``-separated): the audit event's Python caller is a pack line that calls one of them (library code
  such as dataclasses that uses exec internally, or PyAV compiling from C, is not the pack's).

Each record is one JSON line ``{"kind", "detail", "where"}`` appended to the log; the tests read it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import ipaddress
import json
import linecache
import os
import re
import sys
import threading
import traceback

_LOG = os.environ.get("AIPROD_GUARD_LOG")
_PACK_DIRS = tuple(os.path.join(os.path.realpath(p), "") if os.path.isdir(p) else os.path.realpath(p)
                   for p in os.environ.get("AIPROD_GUARD_PACK_DIRS", "").split(os.pathsep) if p)
_LOCK = threading.Lock()
_EVAL_CALL = re.compile(r"\b(eval|exec|compile|__import__)\s*\(")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class GuardRefused(PermissionError):
    """Raised in the server for a call the reliability guard forbids."""


def _where() -> str:
    frames = traceback.extract_stack()[:-3]
    return " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(frames[-6:]))


def _record(kind: str, detail: str) -> None:
    line = json.dumps({"kind": kind, "detail": detail, "where": _where()})
    with _LOCK, open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _is_loopback(host: object) -> bool:
    if host is None or host in ("", b""):
        return True  # passive / local use (bind to all, AI_PASSIVE)
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _address_host(address: object) -> object:
    """The host of a socket address; None for AF_UNIX paths (always local)."""
    if isinstance(address, tuple) and address:
        return address[0]
    return None


def _audit(event: str, args: tuple) -> None:
    if event in ("socket.connect", "socket.sendto"):
        host = _address_host(args[1])
        if not _is_loopback(host):
            _record("network", f"{event} {args[1]!r}")
            raise GuardRefused(f"reliability guard: {event} to {args[1]!r} refused (no network at runtime)")
    elif event in ("socket.getaddrinfo", "socket.gethostbyname"):
        if not _is_loopback(args[0]):
            _record("network", f"{event} {args[0]!r}")
            raise GuardRefused(f"reliability guard: {event} {args[0]!r} refused (no network at runtime)")
    elif event in ("exec", "compile") and _PACK_DIRS:
        try:
            caller = sys._getframe(1)
        except ValueError:  # exec of the main script: no Python caller
            return
        filename = caller.f_code.co_filename or "<unknown>"
        if filename.startswith("<") or not os.path.realpath(filename).startswith(_PACK_DIRS):
            return
        line = linecache.getline(filename, caller.f_lineno)
        if _EVAL_CALL.search(line):  # not a C extension compiling on its own (PyAV's encoder does)
            _record("exec", f"{event} from {filename}:{caller.f_lineno}: {line.strip()}")


def _refusing(kind: str, name: str, original):
    def refuse(*args, **kwargs):
        _record(kind, name)
        raise GuardRefused(f"reliability guard: {name} refused (safetensors only)")

    refuse.__wrapped__ = original
    return refuse


def _patch_torch(torch_module) -> None:
    torch_module.load = _refusing("pickle", "torch.load", torch_module.load)
    serialization = sys.modules.get("torch.serialization")
    if serialization is not None:
        serialization.load = torch_module.load


class _PatchTorchOnImport(importlib.abc.MetaPathFinder):
    """Patches ``torch.load`` as soon as ``torch`` finishes importing (importing torch here would be slow).

    Stays on ``sys.meta_path`` until torch is really executed: a bare ``find_spec("torch")`` (availability checks)
    must not use it up."""

    def __init__(self) -> None:
        self._busy = False

    def find_spec(self, name, path, target=None):
        if name != "torch" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        finder = self

        def exec_and_patch(module):
            exec_module(module)
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            _patch_torch(module)

        spec.loader = _Loader(spec.loader, exec_and_patch)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, exec_module) -> None:
        self._loader = loader
        self.exec_module = exec_module

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def _install() -> None:
    import pickle

    pickle.load = _refusing("pickle", "pickle.load", pickle.load)
    pickle.loads = _refusing("pickle", "pickle.loads", pickle.loads)
    if "torch" in sys.modules:
        _patch_torch(sys.modules["torch"])
    else:
        sys.meta_path.insert(0, _PatchTorchOnImport())
    sys.addaudithook(_audit)


if _LOG:
    _install()
