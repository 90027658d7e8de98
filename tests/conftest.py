"""Shared pytest setup.

The repository root is a Python package (ComfyUI imports ``custom_nodes/<folder>`` as one). Tests import
it the same way under the name ``aiprod`` without running its ``__init__`` (which needs ComfyUI), so
``import aiprod.aiprod_core`` and ``import aiprod.loaders`` work in plain pytest.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

pytest_plugins = ["support.fixtures", "support.host_fixtures", "support.demo_fixtures", "support.e2e_fixtures",
                  "support.reliability_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _register_pack_package(name: str = "aiprod") -> None:
    if name in sys.modules:
        return
    package = types.ModuleType(name)
    package.__path__ = [str(REPO_ROOT)]
    package.__file__ = str(REPO_ROOT / "__init__.py")
    sys.modules[name] = package


_register_pack_package()


@pytest.fixture(autouse=True)
def _pin_torch_threads():
    """Parity numbers move by ~6e-5 with the thread count: pin it for every test."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
