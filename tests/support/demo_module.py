"""``scripts/demo_models.py`` as a module, and where the demo set is cached (no pytest here: the suite's conftest
loads it before the plugins, to register the pack package with the one implementation)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["demo25_models_dir", "demo_models_dir", "load_demo_models_module", "load_ltx25_demo_module"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_MODULE_NAME = "aiprod_demo_models"
_LTX25_MODULE_NAME = "aiprod_demo_models_ltx25"


def _script_module(name: str, script: str) -> ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_demo_models_module() -> ModuleType:
    """``scripts/demo_models.py`` as a module (scripts/ is not a package)."""
    return _script_module(_MODULE_NAME, "demo_models.py")


def load_ltx25_demo_module() -> ModuleType:
    """``scripts/demo_models_ltx25.py`` (the LTX-2.5 demo set) as a module."""
    return _script_module(_LTX25_MODULE_NAME, "demo_models_ltx25.py")


def demo_models_dir() -> Path:
    """``$AIPROD_TEST_CACHE/demo-models`` if set, else ``<repo>/.cache/demo-models`` (gitignored)."""
    configured = os.environ.get("AIPROD_TEST_CACHE")
    return (Path(configured) if configured else REPO_ROOT / ".cache") / "demo-models"


def demo25_models_dir() -> Path:
    """Where the LTX-2.5 demo set is cached: ``demo-models-ltx25`` beside `demo_models_dir`."""
    return demo_models_dir().with_name("demo-models-ltx25")
