"""Benchmarks of aiprod_core against ltx-core / ltx-pipelines 1.0.0 (run: ``make bench``)."""
