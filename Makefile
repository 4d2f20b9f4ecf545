# Two commands for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv build image stack stack-down demo test test-unit lint lock check-image sbom clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

build:  ## build (or reuse) etcd, the Kubernetes control plane and node binaries, helm, the Vault AWS plugin
	bash devstack/build.sh
	bash devstack/build_vault_aws.sh >/dev/null

image: $(STAMP)  ## build (or reuse) the operator image with podman, load it into the running node (VSO_IMAGE)
	$(PY) -m devstack.image

stack: $(STAMP) build
	$(PY) -m devstack up

stack-down: $(STAMP)
	$(PY) -m devstack down

demo: $(STAMP) build
	$(PY) -m devstack.demo

test: $(STAMP) build lint
	$(PY) -m devstack.image
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

lock: $(STAMP)  ## regenerate requirements/operator.lock and build.lock (hashed; see scripts/lock.sh)
	bash scripts/lock.sh

check-image: $(STAMP)  ## lint the Dockerfile and run its install steps in a fresh venv (no Docker needed)
	$(VENV)/bin/hadolint Dockerfile
	bash scripts/check_image_recipe.sh

sbom: $(STAMP)  ## CycloneDX SBOM of what the image installs (requirements/operator.lock + this package): dist/sbom.cdx.json
	mkdir -p dist
	$(VENV)/bin/cyclonedx-py requirements --pyproject pyproject.toml --mc-type application --output-reproducible \
		--of JSON -o dist/sbom.cdx.json requirements/operator.lock

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean: stack-down
	rm -rf .stack
