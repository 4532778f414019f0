# Two commands do everything on a fresh machine:
#   make run    set up (if needed), fetch assets, execute every chapter notebook (QUICK mode)
#   make test   set up (if needed), unit tests, then every notebook and lab solution executed
#   (make test-fast: lint and unit tests only, the developer's loop; CI runs make test)
# Both are idempotent: a second call skips the set-up that is already done.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JOBS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup assets run test test-fast lint lab bench gpu-check constraints clean

setup: $(STAMP)

# Reinstall only when the dependency declarations change. torch first, in the build this machine
# needs (CPU on Linux without an NVIDIA driver; TORCH_VARIANT=cpu|cuda|auto overrides): see
# tools/install_torch.py. constraints.txt pins torch without a build label, so it fits both.
$(STAMP): pyproject.toml constraints.txt tools/install_torch.py
	@test -x $(PY) || { echo "setup: creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV) || { \
		echo "error: could not create a virtual environment; on Debian/Ubuntu: sudo apt install python3-venv"; exit 1; }; }
	@echo "setup: upgrading pip"
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) tools/install_torch.py
	@echo "setup: installing the course and its pinned dependencies (a few minutes the first time)"
	@set -o pipefail; $(PY) -m pip install --progress-bar on -c constraints.txt -e '.[dev]' \
		| { grep -v '^Requirement already satisfied' || true; }
	@$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" > /dev/null
	@touch $@
	@echo "setup: done"

assets: setup
	$(VENV)/bin/llm-course fetch

run: assets
	$(VENV)/bin/llm-course run

lint: setup
	$(VENV)/bin/ruff check course_utils tests benchmarks tools

# --dist worksteal: a worker that runs out of tests takes half of the other's queue. With the default
# (load) one worker drew every chapter notebook in a row and ran 388 s after the other had finished.
test: assets
	@start=$$(date +%s); status=0; \
	$(VENV)/bin/ruff check course_utils tests benchmarks tools || status=$$?; \
	[ $$status -ne 0 ] || $(VENV)/bin/pytest -n $(JOBS) --dist worksteal --timeout 900 --durations=30 tests || status=$$?; \
	echo "make test: $$(( $$(date +%s) - start ))s, exit $$status"; exit $$status

# The developer's loop: lint and every test that does not execute a whole notebook or lab.
test-fast: assets
	@start=$$(date +%s); status=0; \
	$(VENV)/bin/ruff check course_utils tests benchmarks tools || status=$$?; \
	[ $$status -ne 0 ] || $(VENV)/bin/pytest -n $(JOBS) --dist worksteal -m "not notebook" --timeout 300 --durations=10 tests \
		|| status=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start ))s, exit $$status"; exit $$status

lab: assets
	$(VENV)/bin/llm-course lab

bench: assets
	@for b in benchmarks/*_bench.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The GPU path checked and measured in one command (benchmarks/gpu_check.py): on a CUDA machine it
# writes benchmarks/results/gpu.json; elsewhere it runs the same checks on the CPU in about a minute.
# It needs only torch and transformers, so a bare CUDA image's Python runs it without `make setup`.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py

# Refresh the pins after a deliberate upgrade (then run make test before committing). The +cpu label
# is stripped: the build is chosen by tools/install_torch.py on each machine, not by the pins.
constraints: setup
	$(PY) -m pip freeze --exclude-editable | grep -v '^llm-course' | sed 's/+cpu$$//' > constraints.txt

clean:
	rm -rf build .pytest_cache
