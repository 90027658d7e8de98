"""Benchmark cases: each module exposes ``prepare(side, variant) -> run`` (untimed setup, then the timed call)."""
