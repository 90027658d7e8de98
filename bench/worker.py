"""One measurement in a fresh process: ``python -m bench.worker CASE SIDE [VARIANT]`` prints one JSON line.

Setup (imports, weights, inputs) is untimed. Then the peak-RSS mark is reset (/proc/self/clear_refs), the
case runs once under ``torch.inference_mode`` and the wall time and the process's peak RSS (VmHWM: everything
resident during the timed call, weights and imports included) are reported.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import sys
import time

THREADS = 2


def main(argv: list[str]) -> int:
    case, side = argv[0], argv[1]
    variant = argv[2] if len(argv) > 2 else ""
    from .common import peak_rss_mb, register_pack, reset_peak_rss, rss_mb

    register_pack()
    import torch

    torch.set_num_threads(THREADS)
    logging.basicConfig(level=logging.WARNING)
    # Both sides import both libraries, so that import overhead is the same in every measurement.
    import ltx_core.model.transformer  # noqa: F401

    import aiprod.aiprod_core.transformer  # noqa: F401

    module = importlib.import_module(f".cases.{case}", package=__package__)
    with torch.inference_mode():
        run = module.prepare(side, variant)
    gc.collect()
    before = rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    with torch.inference_mode():
        result = run()
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    del result
    line = {"case": case, "side": side, "variant": variant, "seconds": seconds, "peak_mb": peak, "start_mb": before,
            **getattr(run, "report", {})}  # a case may add figures of its own (e.g. weights_mb)
    sys.stdout.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
