"""The ``demo_models`` session fixture: the tiny LTX-2.3 demo model set that ``make demo`` runs on; and
``demo25_models``, the tiny LTX-2.5 set the LTX-2.5 templates run on in the tests.

Built by ``scripts/demo_models.py`` from AIPROD's own modules (no reference needed), written once into
``$AIPROD_TEST_CACHE/demo-models`` or ``<repo>/.cache/demo-models`` and reused while it is current.
"""

from __future__ import annotations

import pytest

from .demo_module import demo25_models_dir, demo_models_dir, load_demo_models_module, load_ltx25_demo_module
from .ltx25_files import build_ltx25_files

__all__ = ["demo25_models", "demo_models", "demo_models_dir", "files25", "load_demo_models_module"]


@pytest.fixture(scope="session")
def demo_models():
    """The demo model set (seed 0): a ``DemoModels`` with root, checkpoint, text_encoder_dir, upsampler,
    distilled_lora, ic_lora, and ``combos()`` / ``combo(name)`` giving each file's ComfyUI combo value."""
    return load_demo_models_module().write_demo_models(demo_models_dir(), seed=0)


@pytest.fixture(scope="session")
def demo25_models():
    """The LTX-2.5 demo set (``scripts/demo_models_ltx25.py``, seed 0) under the official Lightricks/LTX-2.5 file
    names: an ``Ltx25Demo`` with ``paths`` and ``install_map()``; cached in ``demo-models-ltx25``."""
    return load_ltx25_demo_module().ensure_ltx25_demo_models(demo25_models_dir(), seed=0)


@pytest.fixture(scope="session")
def files25(tmp_path_factory, demo_models):
    """The tiny LTX-2.5 node-test set (`support.ltx25_files`: diffusers-built 2.5 components under the official
    names, read only), written once per session for every node test module that registers it."""
    return build_ltx25_files(tmp_path_factory.mktemp("ltx25-set"), demo_models)
