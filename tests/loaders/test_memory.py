"""Peak memory of a load: a ~1 GB transformer checkpoint loads with at most 1.15x its size in extra RSS (every
tensor is read into memory of its own: one copy, never a second); a cast load (bf16 file -> float32 module) peaks
at most 1.1x the float32 module (each bf16 tensor is freed as soon as it is converted: keeping them would make it
1.5x).

Two fresh subprocesses: one writes the checkpoint (random bf16, a transformer config sized to ~1 GB) and exits;
the other resets its peak-RSS counter (``/proc/self/clear_refs``) after imports, loads the transformer with our
loader, reads every weight once (as a forward would) and reports the peak resident set above that baseline.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_PEAK_RATIO = 1.15
MAX_CAST_PEAK_RATIO = 1.1
NUM_LAYERS = 21  # ~46 MB per layer at video 16 x 64, audio 16 x 32: ~1.02 GB in all

_PRELUDE = f"""
import json, sys, types
package = types.ModuleType("aiprod")
package.__path__ = [{str(REPO_ROOT)!r}]
sys.modules["aiprod"] = package
sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
import torch
torch.set_num_threads(1)
"""

_WRITER = _PRELUDE + textwrap.dedent("""
    from safetensors.torch import save_file
    from support import tiny_configs as tc
    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    config = tc.checkpoint_config(tc.LTX23)
    config["transformer"].update(
        num_attention_heads=16, attention_head_dim=64, cross_attention_dim=1024, audio_num_attention_heads=16,
        audio_attention_head_dim=32, audio_cross_attention_dim=512, num_layers=int(sys.argv[2]))
    meta = AVTransformer(TransformerConfig.from_metadata(config), dtype=torch.bfloat16, device="meta")
    generator = torch.Generator().manual_seed(0)
    tensors = {"model.diffusion_model." + k: torch.randn(v.shape, generator=generator, dtype=torch.bfloat16)
               for k, v in meta.state_dict().items()}
    save_file(tensors, sys.argv[1], metadata={"config": json.dumps(config), "model_version": "2.3.0"})
""")

_LOADER = _PRELUDE + textwrap.dedent("""
    from aiprod.loaders.component_loader import load_component

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current RSS
    baseline = status("VmRSS")
    module = load_component(sys.argv[1], "transformer", dtype=getattr(torch, sys.argv[2])).module
    # Read every weight once (as a forward or a move to the GPU would): memory-mapped tensors become resident.
    checksum = sum(float(t.float().sum()) for t in module.state_dict().values())
    assert checksum == checksum  # not NaN: every byte was read
    resident = status("VmRSS") - baseline
    peak = status("VmHWM")
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    print(json.dumps({"baseline": baseline, "peak": peak, "component_bytes": size, "resident": resident}))
""")


def _run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(("dtype", "layers", "max_ratio"), [("bfloat16", NUM_LAYERS, MAX_PEAK_RATIO),
                                                          ("float32", NUM_LAYERS // 2, MAX_CAST_PEAK_RATIO)])
def test_peak_rss_of_a_transformer_load(tmp_path, dtype, layers, max_ratio):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak-RSS counter")
    path = tmp_path / "transformer.safetensors"
    try:
        _run(_WRITER, str(path), str(layers))
        assert path.stat().st_size > 0.45e9
        result = json.loads(_run(_LOADER, str(path), dtype).strip().splitlines()[-1])
    finally:
        path.unlink(missing_ok=True)  # pytest keeps the last temp dirs: do not leave 1 GB behind
    extra = result["peak"] - result["baseline"]
    ratio = extra / result["component_bytes"]
    summary = (f"{dtype}: peak RSS above baseline {extra / 2**20:.0f} MiB for "
               f"{result['component_bytes'] / 2**20:.0f} MiB of tensors: ratio {ratio:.3f}")
    logger.info(summary)
    assert result["component_bytes"] > 0.95e9
    assert result["resident"] >= 0.95 * result["component_bytes"], summary  # the weights really were read
    assert ratio <= max_ratio, summary
