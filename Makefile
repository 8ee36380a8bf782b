# optiinfra-coordinator — the make targets. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Everything runs in a virtual environment of the repository's own (.venv): the package and
# its tools never meet the machine's other Python packages. BASE_PYTHON creates it.
BASE_PYTHON ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
CLUSTER ?= local
LOCALCLUSTER := $(PYTHON) hack/cluster/localcluster.py
# The directory of the pinned kubectl, kube-apiserver, ... (built once, cached outside the repo).
# Recursively expanded: only the targets that use it trigger the build.
KUBE_BIN = $(shell bash hack/cluster/build.sh)
KUBECONFIG_LOCAL := $(CURDIR)/.cluster/kubeconfig
PYTEST := $(PYTHON) -m pytest -p no:cacheprovider

.PHONY: help install lint fmt test test-unit test-cluster test-gitops cluster cluster-down \
        cluster-build manifests docs demo gitops-demo bench bench-gateway bench-shards chaos fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(PYTHON):
	$(BASE_PYTHON) -m venv $(VENV)

install: $(PYTHON) ## install the package with its test tools (editable) into .venv
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@mkdir -p build && touch build/.installed

# Install once, and again whenever the dependencies change.
build/.installed: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@mkdir -p build && touch $@

lint: build/.installed ## ruff, mypy --strict (the package and tests/support), import-linter layer contracts
	$(VENV)/bin/ruff check operator tests bench hack
	$(VENV)/bin/ruff format --check operator tests bench hack
	$(VENV)/bin/mypy operator/coordinator tests/support
	$(VENV)/bin/lint-imports

fmt: build/.installed ## format the code
	$(VENV)/bin/ruff check --fix operator tests bench hack
	$(VENV)/bin/ruff format operator tests bench hack

test: lint ## the whole suite: lint, unit tests, tests on the real local control plane
	@$(PYTEST) tests || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests: the test setup is broken" >&2; exit $$rc; }

test-unit: build/.installed ## the pure tests only (no cluster, seconds)
	$(PYTEST) tests -m "not cluster"

test-cluster: build/.installed ## the tests that use the real local control plane
	$(PYTEST) tests -m cluster

manifests: build/.installed ## generate crds/, manifests/webhooks.yaml, docs/reference/ and the Helm chart (commit the result)
	$(PYTHON) -m coordinator.crdgen crds
	$(PYTHON) -m coordinator.k8s.webhooks manifests/webhooks.yaml
	$(PYTHON) -m coordinator.refdocs docs/reference
	$(PYTHON) hack/chartgen.py charts/optiinfra-coordinator

docs: build/.installed ## build the documentation site into site/ (mkdocs, strict: broken links fail)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test-gitops: build/.installed ## the GitOps tests: Flux applies recommendations from Git (also in `test`)
	$(PYTEST) tests -m gitops

cluster-build: ## build the control plane binaries (cached in ~/.cache/optiinfra)
	@echo $(KUBE_BIN)

cluster: build/.installed ## start the local control plane (or, with CLUSTER=kind, a kind cluster); safe to repeat
	@$(LOCALCLUSTER) up $(if $(filter kind,$(CLUSTER)),--kind,)

cluster-down: build/.installed ## stop the local control plane (and Flux, if started) and remove .cluster/
	@$(LOCALCLUSTER) down

demo: build/.installed cluster ## the story on the local control plane
	@export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH="$(KUBE_BIN):$$PATH"; \
	  $(PYTHON) hack/demo.py

gitops-demo: build/.installed cluster ## Flux applies recommendations from a Git repository; a person approves
	@export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH="$(KUBE_BIN):$$PATH"; \
	  $(PYTHON) hack/gitops_demo.py

build/.bench-installed: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@mkdir -p build && touch $@

bench: build/.installed build/.bench-installed cluster ## benchmarks: conflicts, then the operator end to end (~15 min)
	$(PYTHON) bench/conflicts.py
	@export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH="$(KUBE_BIN):$$PATH"; \
	  $(PYTHON) bench/e2e.py $(BENCH_ARGS)

bench-gateway: build/.installed cluster ## the HTTP gateway: writes against kubectl's, requests/s, settled answers (~2 min)
	@export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH="$(KUBE_BIN):$$PATH"; \
	  $(PYTHON) bench/gateway.py $(BENCH_ARGS)

bench-shards: build/.installed cluster ## shards: memory per shard, customers moved 3 -> 4, SIGKILLs of shards (~22 min; SHARDS_ARGS=--quick ~5)
	@export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH="$(KUBE_BIN):$$PATH"; \
	  $(PYTHON) bench/shards.py $(SHARDS_ARGS)

chaos: build/.installed cluster ## reliability: SIGKILLs of the operator, API server, etcd, a replica (~15 min)
	@export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH="$(KUBE_BIN):$$PATH"; \
	  $(PYTHON) bench/chaos.py $(CHAOS_ARGS)

fuzz: build/.installed cluster ## admission fuzzed through the API server: N generated and broken objects, counted (~10 min)
	@export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH="$(KUBE_BIN):$$PATH"; \
	  $(PYTHON) bench/fuzz.py $(FUZZ_ARGS)
