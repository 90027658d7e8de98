"""Pytest fixtures shared by the suite (registered from tests/conftest.py via ``pytest_plugins``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.tiny_checkpoints import TinySet, build_tiny_set

REPO_ROOT = Path(__file__).resolve().parents[2]


def tiny_cache_dir() -> Path:
    """``$AIPROD_TEST_CACHE`` if set, else ``<repo>/.cache/tiny-models`` (gitignored)."""
    configured = os.environ.get("AIPROD_TEST_CACHE")
    return Path(configured) if configured else REPO_ROOT / ".cache" / "tiny-models"


@pytest.fixture(scope="session")
def tiny_set() -> TinySet:
    """Tiny LTX-2 / LTX-2.3 checkpoints, upsamplers and LoRAs (seed 0), built once and cached on disk."""
    return build_tiny_set(tiny_cache_dir(), seed=0)
