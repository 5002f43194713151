# The one entry point for the README, CI and developers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export K8SSO_CACHE ?= $(HOME)/.cache/k8s-step-operator
LOCAL_KUBECONFIG := $(CURDIR)/.cluster/kubeconfig
# The real node (kubelet + containerd) needs root; `make cluster REAL_NODE=0` leaves it out.
REAL_NODE ?= $(if $(filter 0,$(shell id -u)),1,0)
# `make test TEST_KUBECONFIG=path` runs the suite against another cluster (kind, a real one).
TEST_KUBECONFIG ?=

.PHONY: help venv binaries core-binaries system-deps cluster cluster-up realnode cluster-down \
	cluster-status demo test test-unit bench lint manifests wheel fmt

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create the Python environment with the project and its dev tools

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

binaries: ## Build (or reuse) every binary from Go modules: control plane, KWOK, Helm, Kueue, Karpenter
	bash e2e/build/build.sh core addons

core-binaries: ## Build (or reuse) the control plane, KWOK and Helm only (all `make demo` needs)
	bash e2e/build/build.sh core

system-deps: ## Install the Debian packages the real node and the step images need (root)
	bash e2e/realnode/setup-system.sh

cluster: venv binaries ## Start the local cluster with Kueue and Karpenter (idempotent); kubeconfig in .cluster/kubeconfig
	@$(MAKE) --no-print-directory cluster-up

# Starts whatever is built: the add-ons only when their binaries are (see e2e/README.md).
cluster-up: venv
	$(PY) e2e/cluster.py up
ifeq ($(REAL_NODE),1)
	$(MAKE) --no-print-directory realnode
else
	@echo "cluster: no real node (needs root; REAL_NODE=$(REAL_NODE)): steps run on simulated nodes only"
endif

realnode: system-deps ## Add the real node that runs containers (kubelet + containerd) and import the step images
	$(PY) e2e/realnode/node.py up

cluster-down: ## Stop every process the local cluster started and remove its state
	@if [ -x $(PY) ]; then $(PY) e2e/cluster.py down; else $(PYTHON) e2e/cluster.py down; fi

cluster-status: ## Show the local cluster's processes
	$(PY) e2e/cluster.py status

# No add-on build on a fresh machine: the demo runs on the core cluster (Kueue and Karpenter
# join it when they are built).
demo: venv core-binaries ## Run the sample two-step pipeline with a GPU training step on the local cluster
	@$(MAKE) --no-print-directory cluster-up
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) -m examples.demo

ifeq ($(TEST_KUBECONFIG),)
test: cluster ## Run the whole test suite against the local cluster (or TEST_KUBECONFIG's)
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) -m pytest
else
test: venv
	KUBECONFIG=$(TEST_KUBECONFIG) $(PY) -m pytest
endif

test-unit: venv ## Run the tests that need no cluster
	$(PY) -m pytest -m 'not cluster and not realnode'

bench: cluster ## Run the benchmarks against the local cluster; figures printed as JSON
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) bench/run.py

lint: venv ## ruff, ruff format --check, mypy --strict and the import-linter layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

manifests: venv core-binaries ## Re-render manifests/ from the chart (CI fails when they drift)
	bash e2e/check-manifests.sh --write

fmt: venv ## Format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

wheel: venv ## Build the wheel and sdist into dist/
	$(PY) -m build
