# lstm-mnist: every target is a thin wrapper over `python -m lstm_mnist ...`; `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXP ?= experiments/full.toml
ARGS ?=
PORT ?= 5000
export LSTM_MNIST_DATA ?= $(CURDIR)/data

.DEFAULT_GOAL := help
.PHONY: help install run test bench ui clean-venv

help:  ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project (torch from this machine's disk)

run: install  ## train one run: make run EXP=experiments/full.toml ARGS="max_epochs=3 seed=1"
	$(PY) -m lstm_mnist run $(EXP) $(ARGS)

test: install  ## the test suite (CPU, a few minutes)
	$(PY) -m pytest -q $(ARGS)

bench: install  ## throughput: harness vs torchvision DataLoader vs bare loop -> reports/bench.json
	$(PY) -m lstm_mnist bench $(ARGS)

ui: install  ## MLflow UI on this project's store, http://127.0.0.1:5000 (PORT=...)
	@mkdir -p mlruns
	$(VENV)/bin/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}" \
		--default-artifact-root "$(CURDIR)/mlruns/artifacts" --host 127.0.0.1 --port $(PORT)

clean-venv:  ## remove the virtual environment
	rm -rf $(VENV)
