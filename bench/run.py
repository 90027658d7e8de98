"""Run every benchmark case, ours and the reference interleaved, each measurement in a fresh subprocess.

Writes ``bench/results.json``: per case ``{"ours_s", "ref_s", "ratio", "ours_peak_mb", "ref_peak_mb"}`` (medians
over ``--repeats`` runs; ``ratio`` = ours_s / ref_s, or for the ``*_memory_growth`` cases our peak at 4x the
frames over our peak at 1x). See bench/README.md for the method and sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
logger = logging.getLogger("bench")

TIMED_CASES = ("transformer_forward", "transformer_forward_ltx25", "transformer_quant_keep", "vae_decode_tiled",
               "checkpoint_load", "pipeline_one_stage_guided", "pipeline_distilled",
               "pipeline_distilled_ltx25")
# Cases measured once per variant, reported as "case/variant" ("" is reported under the case name).
CASE_VARIANTS = {"transformer_forward_ltx25": ("", "kv_on", "kv_off"),
                 "pipeline_distilled_ltx25": ("", "kv_on", "kv_off")}
GROWTH_CASE = "vae_decode_memory_growth"
GROWTH_CASES = (GROWTH_CASE, "diffusion_decode_memory_growth")  # variants 1x / 4x the frames; ratio = peak 4x / 1x
QUANT_CASE, QUANT_VARIANTS = "transformer_quant_keep", ("int8", "fp8")  # ours: kept quantized; ref: dense bf16
# Cases of a few seconds per measurement get more repeats by default: single runs on the shared 2-core machine
# swing by +-15 %, and their bars sit closest to the measured ratios.
QUICK_CASES = ("transformer_forward", "transformer_quant_keep", "vae_decode_tiled", "checkpoint_load")
QUICK_REPEATS = 9


# Same environment for every worker: 2 threads, tqdm off, and one malloc arena: with glibc's per-thread arenas the
# peak RSS of identical runs varies by ~100 MB (which thread allocated what, heap fragmentation); with one arena it
# repeats within a few MB. (A fixed mmap threshold would make it exact but slows both sides ~40 % in page faults.)
WORKER_ENV = {"OMP_NUM_THREADS": "2", "MALLOC_ARENA_MAX": "1", "TQDM_DISABLE": "1"}


def _measure(case: str, side: str, variant: str = "") -> dict[str, float]:
    command = [PYTHON, "-m", "bench.worker", case, side, variant]
    env = {**os.environ, **WORKER_ENV}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _timed_case(case: str, repeats: int, variant: str = "") -> dict[str, object]:
    samples: dict[str, list[dict[str, float]]] = {"ours": [], "ref": []}
    for index in range(repeats):
        order = ("ours", "ref") if index % 2 == 0 else ("ref", "ours")  # interleaved, alternating first
        for side in order:
            samples[side].append(_measure(case, side, variant))
    extra = {f"{side}_{key}": samples[side][0][key] for side in samples for key in ("weights_mb", "bf16_weights_mb")
             if key in samples[side][0]}
    ours_s = statistics.median(s["seconds"] for s in samples["ours"])
    ref_s = statistics.median(s["seconds"] for s in samples["ref"])
    return {
        "ours_s": round(ours_s, 4),
        "ref_s": round(ref_s, 4),
        "ratio": round(ours_s / ref_s, 4),
        "ours_peak_mb": round(statistics.median(s["peak_mb"] for s in samples["ours"]), 1),
        "ref_peak_mb": round(statistics.median(s["peak_mb"] for s in samples["ref"]), 1),
        "ours_runs_s": [round(s["seconds"], 4) for s in samples["ours"]],
        "ref_runs_s": [round(s["seconds"], 4) for s in samples["ref"]],
        # Ours / ref of each back-to-back pair: a drift of the machine's speed cancels within a pair (information
        # only; ``ratio`` stays the ratio of the medians).
        "pair_ratio_median": round(statistics.median(
            o["seconds"] / r["seconds"] for o, r in zip(samples["ours"], samples["ref"], strict=True)), 4),
        **extra,
    }


def _growth_case(repeats: int, case: str = GROWTH_CASE) -> dict[str, object]:
    runs: dict[str, list[dict[str, float]]] = {"1x": [], "4x": []}
    ref_runs: dict[str, list[dict[str, float]]] = {"1x": [], "4x": []}
    for _ in range(repeats):
        for variant in ("1x", "4x"):
            runs[variant].append(_measure(case, "ours", variant))
            ref_runs[variant].append(_measure(case, "ref", variant))

    def peak(samples: list[dict[str, float]]) -> float:
        return statistics.median(s["peak_mb"] for s in samples)

    def net(samples: list[dict[str, float]]) -> float:
        return statistics.median(s["peak_mb"] - s["start_mb"] for s in samples)

    ours_1x, ours_4x = peak(runs["1x"]), peak(runs["4x"])
    ref_1x, ref_4x = peak(ref_runs["1x"]), peak(ref_runs["4x"])
    return {
        "ours_s": round(statistics.median(s["seconds"] for s in runs["4x"]), 4),
        "ref_s": round(statistics.median(s["seconds"] for s in ref_runs["4x"]), 4),
        "ratio": round(ours_4x / ours_1x, 4),
        "ours_peak_mb": round(ours_4x, 1),
        "ref_peak_mb": round(ref_4x, 1),
        "ours_peak_1x_mb": round(ours_1x, 1),
        "ref_peak_1x_mb": round(ref_1x, 1),
        "ref_ratio": round(ref_4x / ref_1x, 4),
        "ours_decode_working_mb_1x_4x": [round(net(runs["1x"]), 1), round(net(runs["4x"]), 1)],
        "ref_decode_working_mb_1x_4x": [round(net(ref_runs["1x"]), 1), round(net(ref_runs["4x"]), 1)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"repeats per case (default: {QUICK_REPEATS} for {', '.join(QUICK_CASES)}, else 5)")
    parser.add_argument("--cases", nargs="*", choices=[*TIMED_CASES, *GROWTH_CASES], help="only these cases")
    parser.add_argument("--out", default=str(BENCH / "results.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results: dict[str, object] = {}
    started = time.perf_counter()
    wanted = [*TIMED_CASES, *GROWTH_CASES]
    order = [c for c in wanted if not args.cases or c in args.cases]
    # The pipeline cases depend on the most code still in flux: they run last.
    order.sort(key=lambda c: c.startswith("pipeline_"))
    for case in order:
        t0 = time.perf_counter()
        try:
            repeats = args.repeats or (QUICK_REPEATS if case in QUICK_CASES else 5)
            if case in GROWTH_CASES:
                results[case] = {**_growth_case(repeats, case), "repeats": repeats}
            elif case == QUANT_CASE:  # one entry per quantized format
                for variant in QUANT_VARIANTS:
                    results[f"{case}_{variant}"] = {**_timed_case(case, repeats, variant), "repeats": repeats}
                logger.info("%s: %s", case, json.dumps({v: results[f"{case}_{v}"] for v in QUANT_VARIANTS}))
                continue
            else:
                for variant in CASE_VARIANTS.get(case, ("",)):
                    name = f"{case}/{variant}" if variant else case
                    results[name] = {**_timed_case(case, repeats, variant), "repeats": repeats}
                    logger.info("%s: %s", name, json.dumps(results[name]))
                continue
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
            logger.error("%s: failed: %s", case, error)
            results[case] = {"error": str(error)[-2000:]}
        logger.info("%s: %s (%.0f s)", case, json.dumps(results[case]), time.perf_counter() - t0)
    results["_meta"] = {
        "repeats": args.repeats or f"{QUICK_REPEATS} for {', '.join(QUICK_CASES)}, else 5",
        "threads": 2,
        "total_s": round(time.perf_counter() - started, 1),
        "peak_method": "VmHWM of the worker process over the timed call (reset via /proc/self/clear_refs)",
        "worker_env": WORKER_ENV,
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    return 0 if all("error" not in v for v in results.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
