# lstm-mnist: every target is a thin wrapper over `python -m lstm_mnist ...`; `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# The install stamp is named by the content of pyproject.toml and constraints.txt, not their modification
# time: a fresh clone or a copied checkout that was installed once never reinstalls (nor reaches the network).
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | (sha256sum 2>/dev/null || shasum -a 256) | cut -c1-16)
# Offline install: WHEELS= a folder `make wheelhouse` made; FOR= another Python (3.12); SKIP= what the target has.
WHEELS ?=
FOR ?=
SKIP ?=
PROFILE ?= full
OUT ?= gpu-accept
PART ?= all
CPU ?=
EXP ?= experiments/full.toml
ARGS ?=
PORT ?= 5000
STUDY ?= studies/full.toml
TRIALS ?=
WORKERS ?= 1
MPS ?=
STORAGE ?=
RAY ?=
TEST_PROCS ?= 4
# Which torch build a fresh .venv gets: empty, the package index's default (on Linux x86_64 a CUDA 13.0 build,
# about 5.5 GB, which needs an NVIDIA driver 580 or newer to use a GPU and runs on a CPU as well); cpu, the
# CPU-only wheels from TORCH_INDEX (under 1 GB).
TORCH ?=
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
ifneq ($(filter-out cpu,$(TORCH)),)
$(error TORCH=$(TORCH): give TORCH=cpu for the CPU-only wheels, or leave it out for the default build)
endif
# MNIST: LSTM_MNIST_DATA when set; else the verified copy beside a development checkout; else data/
# (where torchvision downloads it on a machine with internet).
SHARED_MNIST := $(abspath $(CURDIR)/../shared/mnist)
export LSTM_MNIST_DATA ?= $(if $(wildcard $(SHARED_MNIST)/train-images-idx3-ubyte.gz),$(SHARED_MNIST),$(CURDIR)/data)

.DEFAULT_GOAL := help
.PHONY: help install run test bench ui clean-venv tune

help:  ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ "$(TORCH)" = cpu ]; then echo "$(PY) -m pip install -c constraints.txt torch torchvision --index-url $(TORCH_INDEX)"; \
	  $(PY) -m pip install -q -c constraints.txt torch torchvision --index-url $(TORCH_INDEX) >$(VENV)/torch-install.log 2>&1 \
	  || { echo "error: the CPU-only torch wheels could not be installed from $(TORCH_INDEX) (pip's words in $(VENV)/torch-install.log): leave out TORCH=cpu for the package index's default build, or install from a wheel folder (make install WHEELS=dir, docs/offline.md)" >&2; exit 2; }; fi
	$(PY) -m pip install -q -c constraints.txt -e '.[ui,ray,postgres,test,dashboard,digits]'
	rm -f $(VENV)/.installed*
	touch $@

# With WHEELS=dir: pip --no-index from that folder only (checked against its lock first), never the network.
install: $(if $(WHEELS),wheel-install,$(STAMP))  ## create .venv and install the project [TORCH=cpu: CPU-only torch] [WHEELS=dir: offline, from a wheel folder] [PYTHON=python3.12]

.PHONY: wheel-install wheelhouse
wheel-install:
	$(PYTHON) -m lstm_mnist.tools.wheels install $(WHEELS) --venv $(VENV) --stamp $(STAMP)

wheelhouse:  ## on a connected machine: every wheel the project needs -> WHEELS=dir, with a lock [FOR=3.12] [SKIP="torch torchvision lightning"] [PROFILE=slim]
	@test -n "$(WHEELS)" || { echo "error: give the folder to fill: make wheelhouse WHEELS=wheels/ [FOR=3.12] [SKIP=...]" >&2; exit 2; }
	$(PYTHON) -m lstm_mnist.tools.wheels build $(WHEELS) $(if $(FOR),--for $(FOR)) $(if $(SKIP),--skip "$(SKIP)") --profile $(PROFILE) $(ARGS)

run: install  ## train one run: make run EXP=experiments/full.toml ARGS="max_epochs=3 seed=1"
	$(PY) -m lstm_mnist run $(EXP) $(ARGS)

test: install  ## the test suite: every test but the long scenarios (CPU, 5-8 minutes on 2 cores; tests in parallel)
	$(PY) -m pytest -q -n $(TEST_PROCS) --dist loadgroup -m "not scenario" $(ARGS)

.PHONY: scenarios
scenarios: install  ## the long scenarios: faults, Ray clusters, basic-auth, gpu-accept's CPU mode (about 8 minutes on 2 cores; CI runs it after make test)
	mkdir -p reports && rm -f reports/chaos.jsonl
	CHAOS_REPORT=$(CURDIR)/reports/chaos.jsonl $(PY) -m pytest -q -n $(TEST_PROCS) --dist loadgroup -m scenario $(ARGS)

.PHONY: test-fast
test-fast: install  ## the tests that start no subprocess (the edit loop, under a minute on 2 cores)
	$(PY) -m pytest -q -n 2 -m "not subprocess" $(ARGS)

.PHONY: lint
lint: install  ## ruff over the code and the tests, as pyproject.toml's [tool.ruff] configures it (CI runs it)
	$(VENV)/bin/ruff check lstm_mnist tests examples docs

.PHONY: docs
$(VENV)/.docs-installed: $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed  ## build the documentation site into site/ (mkdocs build --strict: broken links fail)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict $(ARGS)

.PHONY: chaos
chaos: install  ## fault scenarios only (kills, duplicate starts, server outage, read-only artifacts) -> reports/chaos.jsonl
	mkdir -p reports && rm -f reports/chaos.jsonl
	CHAOS_REPORT=$(CURDIR)/reports/chaos.jsonl $(PY) -m pytest -q -m chaos $(ARGS)

bench: install  ## throughput: harness vs torchvision DataLoader vs bare loop, every arm shape at every precision -> reports/bench.json [ARGS="--threads 1"]
	$(PY) -m lstm_mnist bench $(ARGS)

.PHONY: ablation
# EXP defaults to full.toml for `run`; the grid's own default applies unless EXP is given (on the command line
# or in the environment, as in an sbatch script: `EXP=experiments/ablation-quick.toml make ablation`).
ABLATION = $(if $(filter file,$(origin EXP)),experiments/ablation.toml,$(EXP))
ablation: install  ## ablation grid: make ablation [EXP=experiments/ablation-quick.toml] [WORKERS=2|auto] [MPS=1] [RAY=auto|ADDRESS] [ARGS="--dry-run" | "--until-decided --max-seeds 6"]
	$(PY) -m lstm_mnist ablate $(ABLATION) --workers $(WORKERS) $(if $(MPS),--mps) $(if $(RAY),--ray $(RAY)) $(ARGS)

tune: install  ## Optuna study: make tune STUDY=studies/quick.toml TRIALS=8 WORKERS=2 [STORAGE=postgresql://...] [RAY=auto]
	$(PY) -m lstm_mnist tune $(STUDY) $(if $(TRIALS),--trials $(TRIALS)) --workers $(WORKERS) $(if $(MPS),--mps) \
		$(if $(STORAGE),--storage $(STORAGE)) $(if $(RAY),--ray $(RAY)) $(ARGS)

.PHONY: gpu-check
gpu-check: install  ## measure this GPU (epoch time, workers per GPU, MPS) -> reports/gpu-check.json [MPS=1] [WORKERS=8,12,16]
	$(PY) -m lstm_mnist gpu-check $(if $(MPS),--mps) $(if $(filter-out file,$(origin WORKERS)),--workers $(WORKERS)) $(ARGS)

.PHONY: report
report: install  ## results tables + figures of the latest ablation grid -> reports/<grid>/ (ARGS="--grid NAME --metric test_f1 --against OTHER")
	$(PY) -m lstm_mnist report $(ARGS)

ui: install  ## MLflow UI on this project's store; prints the link to the latest grid's runs table (PORT=...)
	$(PY) -m lstm_mnist ui --port $(PORT) $(ARGS)

.PHONY: dashboard screenshots
dashboard: install  ## optuna-dashboard on a study's storage: STUDY=studies/quick.toml [STORAGE=url|journal] [PORT=8080]
	$(PY) -m lstm_mnist dashboard $(STUDY) $(if $(STORAGE),--storage $(STORAGE)) --port $(if $(filter command line environment,$(origin PORT)),$(PORT),8080) $(ARGS)

screenshots: install  ## retake docs/ui/*.png: MLflow's UI on a grid run and reported here, in headless Chromium [GRID=ablation-quick]
	$(PY) docs/ui/screenshots.py --grid $(or $(GRID),ablation-quick)

clean-venv:  ## remove the virtual environment
	rm -rf $(VENV)

.PHONY: gpu-accept
gpu-accept: install  ## every GPU-specific check and the GPU answer -> OUT=gpu-accept/ [PART=answer|checks] [CPU=1: CPU mode]
	$(PY) -m lstm_mnist gpu-accept --out $(OUT) --part $(PART) $(if $(CPU),--cpu) $(ARGS)
