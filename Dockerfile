# vault-sts-operator container image.
#   docker build -t vault-sts-operator:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
# Checked without a Docker engine by `make check-image` (hadolint + scripts/check_image_recipe.sh,
# which runs scripts/image_install.sh, the same install steps as below, in a fresh venv).

# ---- builder: locked dependencies (hash-checked wheels) + this package's wheel -------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Dependencies first: this layer is rebuilt only when a lock file changes.
COPY requirements/operator.lock requirements/build.lock requirements/
COPY scripts/image_install.sh scripts/
RUN ["sh", "scripts/image_install.sh", "deps", "/opt/venv", "/opt/build"]

# Then the package (importable as vault_sts_operator only; never a top-level `operator`).
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN ["sh", "scripts/image_install.sh", "app", "/opt/venv", "/opt/build", "/src", "/tmp/wheels"]

# ---- runtime: the venv and nothing else ------------------------------------------------------------
FROM python:3.11-slim

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="vault-sts-operator" \
      org.opencontainers.image.description="Kubernetes operator: MFA-backed AWS STS credentials from Vault, delivered as rotating Secrets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

# Read-only root filesystem: no bytecode writes at runtime (the venv is compiled at install time),
# temporary files only under /tmp (an emptyDir in the Helm chart).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp

# Owned by root, read-only for the runtime user.
COPY --from=builder /opt/venv /opt/venv

# Numeric, non-root (the chart's runAsUser/runAsGroup); no passwd entry is needed.
USER 65532:65532
WORKDIR /tmp

# 8000: Prometheus /metrics (HTTPS, token-reviewed), 8080: probes /healthz and /readyz
EXPOSE 8000 8080

# Exec form: no shell at runtime.
ENTRYPOINT ["vault-sts-operator"]
CMD ["run", "--all-namespaces"]
