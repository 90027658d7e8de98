"""Shared helpers of the benchmark workers: package registration, seeded weights, memory probes, configs."""

from __future__ import annotations

import hashlib
import math
import sys
import types
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK = "aiprod"


def register_pack() -> None:
    """Import the repository as package ``aiprod`` without its ComfyUI ``__init__`` (as tests/conftest.py does);
    also make ``tests/support`` importable (the official metadata layouts live in support.tiny_configs)."""
    if PACK not in sys.modules:
        package = types.ModuleType(PACK)
        package.__path__ = [str(REPO_ROOT)]
        package.__file__ = str(REPO_ROOT / "__init__.py")
        sys.modules[PACK] = package
    support = str(REPO_ROOT / "tests")
    if support not in sys.path:
        sys.path.insert(0, support)


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024.0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024.0


def _generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


_FIXED = {
    "std-of-means": lambda shape, gen: torch.rand(shape, generator=gen) + 0.5,
    "mean-of-means": lambda shape, gen: torch.randn(shape, generator=gen) * 0.2,
    "timestep_scale_multiplier": lambda shape, gen: torch.full(shape, 1000.0),
    "learnable_registers": lambda shape, gen: torch.rand(shape, generator=gen) * 2 - 1,
}


def _value(key: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Honest random weights: normal(0, 1/fan_in) for matrices / convs, 1 + N(0, .1) for norm weights,
    small nonzero biases, N(0, .1) AdaLN tables, positive std statistics."""
    name = key.rsplit(".", 1)[-1]
    if name in _FIXED:
        return _FIXED[name](shape, gen)
    if name == "weight" and len(shape) >= 2:
        return torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    if name == "weight" and "norm" in key:
        return 1 + torch.randn(shape, generator=gen) * 0.1
    std = 0.1 if "scale_shift_table" in key or "per_channel_scale" in key else 0.02
    return torch.randn(shape, generator=gen) * std


def random_state_dict(meta_module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded float32 tensors for every key of ``meta_module``'s state dict (shapes from the meta module)."""
    return {k: _value(k, v.shape, _generator(seed, k)) for k, v in meta_module.state_dict().items()}


def build_reference(configurator: type, config: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """ltx-core's module built on the meta device by its own configurator, then strictly assigned ``state``."""
    with torch.device("meta"):
        module = configurator.from_config(config)
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()
