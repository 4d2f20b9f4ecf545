"""Shared fixtures. The local stack starts only when a test asks for the ``stack`` fixture.

``stack`` (session): reuses a healthy stack that is already up (``make stack``) and leaves it running;
otherwise starts one exactly like ``python -m devstack up`` and stops it when the session ends. If it
cannot start, every test that needs it fails with the reason: never a skip.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.env import StackEnv
from devstack.manifests import GROUP, VAULT_CA_KEY, VAULT_CA_SECRET
from devstack.operator_run import OPERATOR_NAMESPACE
from tests.e2e.helpers import ARC, MFAID, Kube, kubectl

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "vault-sts-operator"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using the stack carries the ``stack`` marker, so ``-m "not stack"`` is reliable."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackEnv]:
    from devstack import stack as devstack
    from devstack.procs import StackError

    handle = devstack.Stack.default()
    if devstack.is_healthy(handle) and handle.layout.env_file.is_file():
        yield StackEnv.load(handle.layout.env_file)
        return
    try:
        env = devstack.up(handle)
    except StackError as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:
        pytest.fail(f"the local stack could not start:\n{reason}", pytrace=False)
    try:
        yield env
    finally:
        devstack.down(handle)


@pytest.fixture(scope="session")
def kube(stack: StackEnv) -> Iterator[Kube]:
    """Thin admin helpers for the end-to-end and fault suites (one per session)."""
    helper = Kube(stack)
    yield helper
    helper.api.close()


@pytest.fixture
def kube_api(stack: StackEnv) -> Iterator[Any]:
    """An admin ``kubernetes.client.ApiClient`` (system:masters), closed after the test."""
    api = stack.api_client()
    yield api
    api.close()


@pytest.fixture
def vault(stack: StackEnv) -> Iterator[Any]:
    """An ``hvac.Client`` with OpenBao's root token."""
    client = stack.vault()
    yield client
    client.adapter.close()


@pytest.fixture
def emulator_admin(stack: StackEnv) -> Any:
    """``devstack.sts_emulator.admin.EmulatorAdmin`` for the stack's emulator."""
    return stack.emulator()


@pytest.fixture
def unique() -> str:
    """A short random suffix for names that must not collide on a shared, long-running stack."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def crds(stack: StackEnv) -> None:
    kubectl(stack, "apply", "-f", str(ROOT / "crds"))
    kubectl(stack, "wait", "--for=condition=Established", "--timeout=60s",
            f"crd/{ARC}.{GROUP}", f"crd/{MFAID}.{GROUP}")


def helm(stack: StackEnv, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = stack.extra.get("VSO_HELM")
    assert binary, "helm is not built (devstack/build.sh helm)"
    return subprocess.run([binary, *args], capture_output=True, text=True, check=check,
                          env=stack.subprocess_env(), timeout=120)


@pytest.fixture(scope="session")
def chart_release(stack: StackEnv, crds: None) -> str:
    """The Helm chart installed on the real apiserver for its ServiceAccount and RBAC. The end-to-end and fault
    suites run the operator as a host process with that ServiceAccount, so the chart runs no pod of its own
    (replicaCount 0): the stack has a node, and its pods would compete for the same leader election Lease
    (vault-sts-operator/vault-sts-operator) as the host process. tests/node installs
    the chart as users do, with the real image."""
    helm(stack, "upgrade", "--install", RELEASE, str(ROOT / "charts" / "vault-sts-operator"),
         "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--set", f"vault.address={stack.vault_addr}",
         # The CRDs were applied with kubectl above (the suites share them); the chart's own CRD
         # templates are tested by tests/chart/test_chart_crds.py on a separate API group.
         "--set", "crds.enabled=false", "--set", "replicaCount=0")
    return RELEASE


# A second release of the chart with rbac.scope=namespaced (tests/chart, and the Secret-watch test).
NAMESPACED_RELEASE = "vso-scoped"
NAMESPACED_HOME = "vso-scoped-system"
NAMESPACED_RELEASE_SA = f"{NAMESPACED_RELEASE}-vault-sts-operator"
NAMESPACED_WATCHED = ("team-scoped-a", "team-scoped-b")


@pytest.fixture(scope="session")
def namespaced_release(stack: StackEnv, crds: None) -> Iterator[str]:
    """The chart with rbac.scope=namespaced, watching NAMESPACED_WATCHED (Roles there, no ClusterRole on Secrets
    or workloads). One replica, no leader election."""
    for ns in NAMESPACED_WATCHED:
        kubectl(stack, "create", "namespace", ns, check=False)
    helm(stack, "upgrade", "--install", NAMESPACED_RELEASE, str(ROOT / "charts" / "vault-sts-operator"),
         "--namespace", NAMESPACED_HOME, "--create-namespace", "--set", "rbac.scope=namespaced",
         "--set", "watchNamespaces={" + ",".join(NAMESPACED_WATCHED) + "}", "--set", "leaderElection.enabled=false",
         "--set", "replicaCount=1", "--set", "metrics.service.enabled=false", "--set", "crds.enabled=false",
         "--set", f"vault.address={stack.vault_addr}")
    if stack.vault_ca is not None:  # MFAIdentities' caSecretRef resolves in the operator's namespace: this one's
        manifest = kubectl(stack, "create", "secret", "generic", VAULT_CA_SECRET, "-n", NAMESPACED_HOME,
                           f"--from-file={VAULT_CA_KEY}={stack.vault_ca}", "--dry-run=client", "-o", "yaml").stdout
        kubectl(stack, "apply", "-f", "-", stdin=manifest)
    yield NAMESPACED_RELEASE
    helm(stack, "uninstall", NAMESPACED_RELEASE, "--namespace", NAMESPACED_HOME, check=False)
