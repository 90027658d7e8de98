"""``scripts/demo_models.py`` as a module, and where the demo set is cached (no pytest here: the suite's conftest
loads it before the plugins, to register the pack package with the one implementation)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["demo_models_dir", "load_demo_models_module"]

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
