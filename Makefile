# vla-isaac: everything runs from the project's .venv (Python 3.12, isaaclab==3.0.0), bootstrapped on demand.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: help venv assets test test-fast demo bench bench-gpu clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*## /\t/'

venv:  ## create/refresh .venv (idempotent)
	@bash tools/bootstrap_venv.sh

assets: venv  ## build the offline Franka USD and the tiny Qwen2.5-VL into ~/.cache/vla_isaac (cached)
	@$(PY) -m vla_isaac.assets.franka
	@$(PY) -m vla.backbone.tiny

test: assets  ## full test suite on the CPU (includes slow end-to-end tests; 16-25 min on 2 cores)
	$(PY) -m pytest -x -q -rs tests

test-fast: assets  ## skip the slow end-to-end tests
	$(PY) -m pytest -x -q -rs -m "not slow" tests

demo: assets  ## record -> train -> evaluate on the embedded default; writes outputs/demo-<time>/
	$(PY) scripts/demo.py

bench: assets  ## run bench/ and rewrite docs/benchmarks.md
	$(PY) bench/run_all.py

bench-gpu: assets  ## the 7B path on one CUDA GPU (<= 8 min, random weights): latency, LoRA training, MJWarp
	$(PY) bench/gpu_suite.py

clean:  ## remove outputs (keeps .venv and caches)
	rm -rf outputs runs
