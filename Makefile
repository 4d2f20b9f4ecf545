# Two commands for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: deps-demo deps-test demo-image venv build build-vault image consumers stack stack-down demo test test-unit lint lock check-image sbom dist clean

# The system packages, one list (scripts/system-deps.sh): installed when run as root on Debian/Ubuntu, else
# the make stops here, before any build, with the exact command to run.
deps-demo:
	@bash scripts/system-deps.sh demo
deps-test:
	@bash scripts/system-deps.sh test

$(STAMP): pyproject.toml
	@echo "[venv $$(date +%H:%M:%S)] creating $(VENV) and installing the project with its dev tools (about a minute)"
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

# The Pod Identity tests' consumers (devstack/consumers): aws-sdk-go-v2, @aws-sdk/client-sts v3 and AWS SDK for
# Java v2 images, built daemonless into ~/.cache/vault-sts-operator and imported into a running node; the Python
# consumer (boto3) runs in the operator image.
consumers: $(STAMP)  ## build (or reuse) the Go, JavaScript and Java consumer images, load them into the running node
	$(PY) -m devstack.consumers

build-vault:  ## build (or reuse) HashiCorp Vault for VSO_VAULT_FLAVOR=hashicorp (BUSL-1.1: local tests only)
	bash devstack/build_vault_server.sh >/dev/null

# VSO_VAULT_FLAVOR=hashicorp make stack: HashiCorp Vault in place of OpenBao (docs/vault-flavours.md)
stack: $(STAMP) build $(if $(filter hashicorp,$(VSO_VAULT_FLAVOR)),build-vault)
	$(PY) -m devstack up

stack-down: $(STAMP)
	$(PY) -m devstack down

# The demo runs on OpenBao's KV and TOTP engines: it needs no AWS secrets-engine plugin, promtool or
# helm-docs (`build` adds them). The image (mostly downloads and dpkg) builds while Go compiles.
demo: deps-demo
	@$(MAKE) --no-print-directory $(STAMP)
	@$(MAKE) --no-print-directory -j4 demo-build-etcd demo-build-kubernetes demo-build-helm demo-image
	$(PY) -m devstack.demo

# Three Go builds side by side: each leaves cores idle while it downloads modules or links.
demo-build-%:
	@bash devstack/build.sh $*

demo-image: $(STAMP)
	@$(PY) -m devstack.image --no-load

# The whole suite against the first Vault flavour, then the suites that talk to a Vault against each
# other flavour (the stack restarts with it). Every pass runs; the target fails if any pass failed.
VAULT_FLAVORS ?= openbao hashicorp
# The size limits, the refused Secret writes, the pod-identity patch verb and the expired pod token exercise the
# API server and the CRDs, never Vault: once is enough (the last one waits out a 600-s token).
OTHER_FLAVOR_TESTS ?= tests/integration tests/e2e tests/faults \
	--ignore=tests/e2e/test_tenant_limits.py --ignore=tests/e2e/test_spend_nothing.py \
	--ignore=tests/e2e/test_ctl_pod_identity.py --ignore=tests/e2e/test_zz_pod_identity_expiry.py
test: deps-test
	@$(MAKE) --no-print-directory $(STAMP) build build-vault lint
	$(PY) -m devstack.image
	@rc=0; first=1; for flavor in $(VAULT_FLAVORS); do \
	  if [ $$first = 1 ]; then tests=""; first=0; else tests="$(OTHER_FLAVOR_TESTS)"; fi; \
	  echo "== pytest $${tests:-(all)} against VSO_VAULT_FLAVOR=$$flavor"; \
	  VSO_VAULT_FLAVOR=$$flavor $(PY) -m pytest $$tests || rc=1; \
	done; exit $$rc

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

# The release artefacts, built locally (devstack/dist.py): the wheel, the chart package, the image as an
# OCI archive, the SBOM and SHA256SUMS over them.
dist: $(STAMP)  ## dist/: wheel, chart .tgz, image .oci.tar, sbom.cdx.json, SHA256SUMS
	rm -rf dist
	@$(MAKE) --no-print-directory sbom
	$(PY) -m devstack.dist

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean: stack-down
	rm -rf .stack
