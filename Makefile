# The one entry point for the README, CI and developers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The ZenML environment: the project with its `zenml` extra beside `zenml[server]` and the
# requirements of ZenML's kubernetes and s3 integrations (so the kubernetes client at the low end
# of the core's bounds, 25.x: the cluster tests run there too). CI keeps it in the cache, keyed by
# pyproject.toml (VENV_ZENML=...); it is re-synced whenever pyproject.toml is newer.
VENV_ZENML ?= .venv-zenml
PYZ := $(VENV_ZENML)/bin/python
export K8SSO_CACHE ?= $(HOME)/.cache/k8s-step-operator
LOCAL_KUBECONFIG := $(CURDIR)/.cluster/kubeconfig
# The real node (kubelet + containerd) needs root; `make cluster REAL_NODE=0` leaves it out.
REAL_NODE ?= $(if $(filter 0,$(shell id -u)),1,0)
# `make test TEST_KUBECONFIG=path` runs the suite against another cluster (kind, a real one).
TEST_KUBECONFIG ?=
# What the ZenML environment runs: the ZenML tests and the core's launch, logs and cancel tests,
# with the kubernetes client a ZenML install resolves to (the core's unit tests run at that
# client's version in `make test-bounds`).
ZENML_TESTS := tests/zenml_integration tests/cluster/test_launch.py
# Where `make demo-zenml` keeps its ZenML (empty: examples/zenml/demo.py's own choice).
ZENML_DEMO_DIR ?=
# Runs of the production-stack benchmark's pipeline per step operator (ours, ZenML's).
ZENML_SERVER_BENCH_RUNS ?= 2
# The unit tests at both ends of the core's dependency bounds, in environments cached by
# pyproject.toml's hash (~/.cache is kept between CI runs; a fresh machine creates them).
VENV_CACHE := $(K8SSO_CACHE)/venvs
PYPROJECT_KEY = $(shell sha256sum pyproject.toml | cut -c1-12)
LOWEST_PINS := kubernetes==25.3.0 pydantic==2.10.0 tenacity==8.2.0 pyyaml==6.0 urllib3==1.26.20
# ZenML's integrations that the production stack uses (its orchestrator and artifact store): their
# requirements are read from ZenML itself and installed beside the project's zenml extra.
ZENML_INTEGRATIONS := kubernetes s3

.PHONY: help venv venv-zenml binaries core-binaries system-deps cluster cluster-up realnode \
	stack-services cluster-down cluster-status demo demo-zenml demo-zenml-server zenml-image \
	torch-image test test-unit test-zenml test-bounds bench lint manifests wheel fmt

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create the Python environment with the project and its dev tools

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv-zenml: $(VENV_ZENML)/.installed ## Create the ZenML environment (.venv-zenml): the project's zenml extra, ZenML's server and its kubernetes and s3 integrations

$(VENV_ZENML)/.installed: pyproject.toml
	test -x $(PYZ) || $(PYTHON) -m venv $(VENV_ZENML)
	$(PYZ) -m pip install -q --upgrade pip
	$(PYZ) -m pip install -q -e '.[zenml,dev]' 'zenml[server]==0.98.*'
	@# zenml asks before overwriting the file (and aborts without a terminal): a re-sync removes it first.
	rm -f $(VENV_ZENML)/integrations.txt
	ZENML_ANALYTICS_OPT_IN=false ZENML_CONFIG_PATH=$(VENV_ZENML)/zenml-config $(VENV_ZENML)/bin/zenml integration export-requirements $(ZENML_INTEGRATIONS) --output-file $(VENV_ZENML)/integrations.txt
	$(PYZ) -m pip install -q -e '.[zenml,dev]' 'zenml[server]==0.98.*' -r $(VENV_ZENML)/integrations.txt
	$(PYZ) -m pip check
	@$(PYZ) -m pip list 2>/dev/null | grep -iE '^(zenml|kubernetes|pydantic) ' | sed 's/^/resolved: /'
	touch $@

binaries: ## Build (or reuse) every binary from Go modules: control plane, KWOK, Helm, CoreDNS, Kueue, Karpenter, SeaweedFS
	bash e2e/build/build.sh core addons stack

core-binaries: ## Build (or reuse) the control plane (with kube-proxy), KWOK, Helm and CoreDNS only (all `make demo` needs)
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

realnode: system-deps ## Add the real node (kubelet + containerd, its pod network: kube-proxy, CoreDNS) and import the step images
	$(PY) e2e/realnode/node.py up

# SeaweedFS (S3) and a ZenML server of its own, on loopback; pods reach them by Service name
# through the real node's pod network. What clients need: .cluster/stack/stack.json.
stack-services: cluster venv-zenml ## Start the object store and the ZenML server the production ZenML stack needs (idempotent)
	$(PY) e2e/stack.py up --zenml-python $(PYZ)

cluster-down: ## Stop every process the local cluster started and remove its state
	@if [ -x $(PY) ]; then $(PY) e2e/cluster.py down; else $(PYTHON) e2e/cluster.py down; fi

cluster-status: ## Show the local cluster's processes
	$(PY) e2e/cluster.py status
	@if [ -d .cluster/realnode ]; then $(PY) e2e/realnode/node.py status || true; fi
	@if [ -d .cluster/stack ]; then $(PY) e2e/stack.py status || true; fi

# Built on request only: `make demo` never waits for it.
zenml-image: venv ## Build (or reuse) the ZenML step image and import it into the real node
ifeq ($(REAL_NODE),1)
	$(PY) e2e/realnode/node.py images zenml
else
	@echo "zenml-image: no real node (needs root; REAL_NODE=$(REAL_NODE)): nothing to import into"
endif

# Built on request only: the steps on several nodes that run a real torch.distributed all-reduce.
torch-image: venv ## Build (or reuse) the torch step image (ZenML and Debian's python3-torch) and import it into the real node
ifeq ($(REAL_NODE),1)
	$(PY) e2e/realnode/node.py images torch
else
	@echo "torch-image: no real node (needs root; REAL_NODE=$(REAL_NODE)): nothing to import into"
endif

# No add-on build on a fresh machine: the demo runs on the core cluster (Kueue and Karpenter
# join it when they are built).
demo: venv core-binaries ## Run the sample two-step pipeline with a GPU training step on the local cluster
	@$(MAKE) --no-print-directory cluster-up
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) -m examples.demo

demo-zenml: venv venv-zenml core-binaries ## Run a three-step ZenML pipeline (training on a GPU) on the real node; list its runs
	@$(MAKE) --no-print-directory cluster-up
	@$(MAKE) --no-print-directory zenml-image
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PYZ) examples/zenml/demo.py $(if $(ZENML_DEMO_DIR),--dir $(ZENML_DEMO_DIR))

demo-zenml-server: cluster venv-zenml ## The production ZenML stack from nothing (ZenML server, S3, ZenML's kubernetes orchestrator, our step operator): a run, its steps and their metadata
	@$(MAKE) --no-print-directory zenml-image
	@$(MAKE) --no-print-directory stack-services
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PYZ) examples/zenml/demo_server.py

ifeq ($(TEST_KUBECONFIG),)
test: cluster venv-zenml ## Run the whole test suite against the local cluster (or TEST_KUBECONFIG's), ZenML's part in the ZenML environment
	@$(MAKE) --no-print-directory zenml-image
	@$(MAKE) --no-print-directory torch-image
	@$(MAKE) --no-print-directory stack-services
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) -m pytest
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PYZ) -m pytest $(ZENML_TESTS)
else
test: venv venv-zenml
	KUBECONFIG=$(TEST_KUBECONFIG) $(PY) -m pytest
	KUBECONFIG=$(TEST_KUBECONFIG) $(PYZ) -m pytest $(ZENML_TESTS)
endif

test-unit: venv ## Run the tests that need no cluster
	$(PY) -m pytest -m 'not cluster and not realnode'

test-zenml: venv-zenml ## Run the ZenML tests and the core's launch/logs/cancel tests in the ZenML environment
	KUBECONFIG=$(or $(TEST_KUBECONFIG),$(LOCAL_KUBECONFIG)) $(PYZ) -m pytest $(ZENML_TESTS)

test-bounds: ## Run the unit tests at the lowest and at the highest versions the core's bounds allow
	@set -e; low=$(VENV_CACHE)/unit-lowest-$(PYPROJECT_KEY); high=$(VENV_CACHE)/unit-highest-$(PYPROJECT_KEY); \
	mkdir -p $(VENV_CACHE); find $(VENV_CACHE) -maxdepth 1 -name 'unit-*' ! -name '*-$(PYPROJECT_KEY)' -exec rm -rf {} +; \
	for v in $$low $$high; do test -x $$v/bin/python || $(PYTHON) -m venv $$v; done; \
	$$low/bin/python -m pip install -q -e '.[dev]' $(LOWEST_PINS); \
	$$high/bin/python -m pip install -q -U --upgrade-strategy eager -e '.[dev]'; \
	for v in $$low $$high; do \
	  echo "unit tests with: $$($$v/bin/python -m pip list 2>/dev/null | grep -iE '^(kubernetes|pydantic|tenacity|pyyaml) ' | tr -s ' ' | paste -sd, -)"; \
	  $$v/bin/python -m pytest -q -p no:cacheprovider -m 'not cluster and not realnode'; \
	done

# `make bench BENCH_ARGS=--quick` is the short form CI runs (fewer and shorter steps, the fan-in
# rounds of 1, 10, 50 and 200 processes, no fan-out, each multi-node case once); `make bench
# BENCH_ARGS="--only fanin fanout"` prints the fan-in rounds and the 5,000-step fan-out alone.
BENCH_ARGS ?=

bench: cluster venv-zenml ## Run the benchmarks against the local cluster (ZenML's too); figures printed as JSON
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) bench/run.py $(BENCH_ARGS)
	@$(MAKE) --no-print-directory zenml-image
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PYZ) bench/zenml_bench.py
	@$(MAKE) --no-print-directory stack-services
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PYZ) bench/zenml_server_bench.py --runs $(ZENML_SERVER_BENCH_RUNS)

lint: venv venv-zenml ## ruff, ruff format --check, mypy --strict (the ZenML integration in the ZenML environment), import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV_ZENML)/bin/mypy k8s_step_operator/integrations/zenml/*.py
	$(VENV)/bin/lint-imports

manifests: venv core-binaries ## Re-render manifests/ from the chart (CI fails when they drift)
	bash e2e/check-manifests.sh --write

fmt: venv ## Format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

wheel: venv ## Build the wheel and sdist into dist/
	$(PY) -m build
