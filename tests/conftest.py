"""Shared pytest setup.

The repository root is a Python package (ComfyUI imports ``custom_nodes/<folder>`` as one). Tests import
it the same way under the name ``aiprod`` without running its ``__init__`` (which needs ComfyUI), so
``import aiprod.aiprod_core`` and ``import aiprod.loaders`` work in plain pytest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.demo_module import load_demo_models_module

pytest_plugins = ["support.fixtures", "support.host_fixtures", "support.demo_fixtures", "support.e2e_fixtures",
                  "support.reliability_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]


load_demo_models_module().register_pack()  # the one implementation (scripts/demo_models.py uses it too)


@pytest.fixture(autouse=True)
def _pin_torch_threads():
    """Parity numbers move by ~6e-5 with the thread count: pin it for every test."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
