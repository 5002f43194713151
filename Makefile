# The one entry point for the README, CI and developers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export K8SSO_CACHE ?= $(HOME)/.cache/k8s-step-operator

.PHONY: help venv binaries cluster cluster-down cluster-status demo test test-unit bench lint fmt wheel

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create the Python environment with the project and its dev tools

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

binaries: ## Build (or reuse) the cluster's binaries from Go modules
	bash e2e/build/build.sh

cluster: venv binaries ## Start the local cluster (idempotent); kubeconfig in .cluster/kubeconfig
	$(PY) e2e/cluster.py up

cluster-down: ## Stop every process the local cluster started and remove its state
	@if [ -x $(PY) ]; then $(PY) e2e/cluster.py down; else $(PYTHON) e2e/cluster.py down; fi

cluster-status: ## Show the local cluster's processes
	$(PY) e2e/cluster.py status

demo: cluster ## Run the sample two-step pipeline with a GPU training step on the local cluster
	KUBECONFIG=$(CURDIR)/.cluster/kubeconfig $(PY) -m examples.demo

test: cluster ## Run the whole test suite against the local cluster
	KUBECONFIG=$(CURDIR)/.cluster/kubeconfig $(PY) -m pytest

test-unit: venv ## Run the tests that need no cluster
	$(PY) -m pytest -m 'not cluster and not realnode'

bench: cluster ## Run the benchmarks against the local cluster; figures printed as JSON
	KUBECONFIG=$(CURDIR)/.cluster/kubeconfig $(PY) bench/run.py

lint: venv ## ruff, ruff format --check and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv ## Format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

wheel: venv ## Build the wheel and sdist into dist/
	$(PY) -m build
