# bev_deform's entry points. `make demo` and `make test` are the README's two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-slow lint format demo bench clean-venv

setup:  ## install everything into .venv (idempotent; ~25 min the first time, mmcv's build)
	bash tools/setup_env.sh

test: setup  ## the fast test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: setup  ## the slow tests only (distributed training, overfitting, the demo on tiny data)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup  ## synthetic data -> train -> evaluate -> visualise (see README)
	$(PY) tools/demo.py

bench: setup  ## MSDA CPU kernel vs mmcv's fallback; the CPU and 800x450 R50 models, visible pairs vs dense
	$(PY) tools/benchmarks/msda.py
	$(PY) tools/benchmarks/model.py configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py --train --batch 2
	$(PY) tools/benchmarks/model.py configs/deform_detr3d/deform_detr3d_r50_fpn_8xb1-24e_nus-800x450.py --train --runs 2

clean-venv:
	rm -rf $(VENV)
