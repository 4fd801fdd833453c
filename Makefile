# `make repro`: set up .venv and run the whole pipeline; `make test`: set up and run the tests.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup repro test test-fast test-durations lint show seeds seed-table baseline gpu-wheels scale

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins torch/torchvision to the builds on this disk (pyproject only sets a
	# lower bound; an unpinned `torch` would download several GB of CUDA wheels).
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

# The suite over every core (pytest-xdist): a test file runs on one worker (its module fixtures
# once), the longest files first (tests/scheduling.py). `make test-fast`: tests measured under 2 s.
PARALLEL := -n auto --dist loadfile --no-loadscope-reorder
test: setup
	$(PY) -m pytest -q $(PARALLEL)

test-fast: setup
	$(PY) -m pytest -q $(PARALLEL) -m "not slow and not e2e"

# Re-measure every test's time into tests/durations.json (the scheduling and the fast tier read it).
test-durations: setup
	$(PY) -m pytest -q $(PARALLEL) --store-durations --durations=30

lint: setup
	$(VENV)/bin/ruff check .

# `dvc exp show` with the seed table's columns only: the top-level params, greedy / beam 3 BLEU-4, CIDEr-D.
show: setup
	dvc exp show --drop '.*' --keep 'Experiment|Created|^dataset$$|^encoder$$|^embeddings$$|^attention$$|^decoder$$|greedy\.bleu4$$|beam3\.bleu4$$|greedy\.cider$$|beam3\.cider$$'

# One row over several training seeds through DVC's queue (each reruns train + evaluate only),
# then one table of mean ± std of the setting ARGS runs (README, "Several seeds in one command"):
#   make seeds ARGS="-S decoder=lstm" SEEDS="0 1 2 3 4" JOBS=1
SEEDS ?= 0 1 2 3 4
JOBS ?= 1
seeds: setup
	for s in $(SEEDS); do dvc exp run --queue -S train.seed=$$s $(ARGS) || exit 1; done
	dvc queue start -j $(JOBS)
	$(PY) scripts/seed_table.py --wait $(ARGS)

# The table alone, from the experiments DVC already has.
seed-table: setup
	$(PY) scripts/seed_table.py

# The stages' time, peak RSS and bytes at 3k, 12k, 48k and 123k COCO-like images, with growth
# exponents (docs/speed.md, "COCO scale"): about 1.5 h on 2 cores. SCALE_ARGS="--sizes 3000 12000" for less.
SCALE_ARGS ?=
scale: setup
	$(PY) benchmarks/scale.py --workdir /tmp/imcap-scale $(SCALE_ARGS)

# Refresh the committed baseline after changing a stage's code or params (tests/test_baseline.py).
baseline: repro
	git add dvc.lock metrics/vocab.json metrics/train.json metrics/eval.json metrics/attention $$(git ls-files --others --exclude-standard -- '*.gitignore')
	@echo "baseline staged: commit dvc.lock and metrics/*.json"

# Wheels of what the GPU machine's image lacks (pydantic), for Python 3.12 there, into .whl/
# (git-ignored): carry ".whl" with `bash benchmarks/gpu_session.sh` (docs/speed.md).
GPU_WHEELS = pydantic pydantic-core annotated-types typing-inspection typing-extensions
gpu-wheels: setup
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl \
	  $$($(PY) -c "import importlib.metadata as m; print(*(f'{n}=={m.version(n)}' for n in '$(GPU_WHEELS)'.split()))")

# Does this machine reproduce the committed baseline exactly? A clone of HEAD runs the whole
# pipeline (a full training: minutes, not part of `make test`) and every output's md5 and every
# metric is compared with the committed dvc.lock and metrics/*.json (README, "Exact reproduction").
.PHONY: reproduce-check
reproduce-check: setup
	$(PY) scripts/reproduce_check.py
