"""The ``demo_models`` session fixture: the tiny LTX-2.3 demo model set that ``make demo`` runs on.

Built by ``scripts/demo_models.py`` from AIPROD's own modules (no reference needed), written once into
``$AIPROD_TEST_CACHE/demo-models`` or ``<repo>/.cache/demo-models`` and reused while it is current.
"""

from __future__ import annotations

import pytest

from .demo_module import demo_models_dir, load_demo_models_module

__all__ = ["demo_models", "demo_models_dir", "load_demo_models_module"]


@pytest.fixture(scope="session")
def demo_models():
    """The demo model set (seed 0): a ``DemoModels`` with root, checkpoint, text_encoder_dir, upsampler,
    distilled_lora, ic_lora, and ``combos()`` / ``combo(name)`` giving each file's ComfyUI combo value."""
    return load_demo_models_module().write_demo_models(demo_models_dir(), seed=0)
