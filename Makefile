# `make repro`: set up .venv and run the whole pipeline; `make test`: set up and run the tests.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup repro test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first, pinned to the builds on this disk (the range in pyproject allows
	# 2.11-2.14.1; a bare `torch` would download several GB of CUDA wheels).
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
