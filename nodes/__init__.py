"""Thin ComfyUI nodes, one module per domain. Each ``execute`` calls one loader/core function."""
