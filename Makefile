# Every target runs in the one environment scripts/env.sh builds (.venv + ComfyUI host, idempotent).
# COMFYUI_PATH=/path/to/ComfyUI makes the tests and the demo use another ComfyUI.
SHELL := /bin/bash
PY := .venv/bin/python
ENV_STAMP := .venv/.aiprod-stamp

.PHONY: env lint test demo bench clean

env:
	@bash scripts/env.sh >/dev/null

lint: env
	$(PY) -m ruff check .

test: env
	$(PY) -m ruff check .
	$(PY) -m pytest

demo: env
	$(PY) scripts/demo.py

bench: env
	$(PY) bench/run.py

clean:
	rm -rf .cache/tiny-models out .pytest_cache .ruff_cache
