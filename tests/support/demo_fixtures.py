"""The ``demo_models`` session fixture: the tiny LTX-2.3 demo model set that ``make demo`` runs on.

Built by ``scripts/demo_models.py`` from AIPROD's own modules (no reference needed), written once into
``$AIPROD_TEST_CACHE/demo-models`` or ``<repo>/.cache/demo-models`` and reused while it is current.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["demo_models", "demo_models_dir", "load_demo_models_module"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_MODULE_NAME = "aiprod_demo_models"


def load_demo_models_module() -> ModuleType:
    """``scripts/demo_models.py`` as a module (scripts/ is not a package)."""
    module = sys.modules.get(_MODULE_NAME)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, REPO_ROOT / "scripts" / "demo_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module  # before exec: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def demo_models_dir() -> Path:
    """``$AIPROD_TEST_CACHE/demo-models`` if set, else ``<repo>/.cache/demo-models`` (gitignored)."""
    configured = os.environ.get("AIPROD_TEST_CACHE")
    return (Path(configured) if configured else REPO_ROOT / ".cache") / "demo-models"


@pytest.fixture(scope="session")
def demo_models():
    """The demo model set (seed 0): a ``DemoModels`` with root, checkpoint, text_encoder_dir, upsampler,
    distilled_lora, ic_lora, and ``combos()`` / ``combo(name)`` giving each file's ComfyUI combo value."""
    return load_demo_models_module().write_demo_models(demo_models_dir(), seed=0)
