"""AIPROD model core: pure PyTorch LTX-2 / LTX-2.3 models, samplers and pipelines (no ComfyUI imports)."""
