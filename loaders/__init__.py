"""Checkpoint formats -> aiprod_core modules: header inspection, key maps, config from metadata, LoRA."""
