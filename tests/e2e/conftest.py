"""End-to-end fixtures: CRDs applied on the real apiserver, the chart installed, the operator running."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.env import StackEnv
from devstack.kubeconfig import kubeconfig_for_service_account
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA, TEST_OPERATOR_ARGS, OperatorProcess, free_port
from tests.e2e.helpers import TRAP_VAULT_ADDRESS, Kube
from tests.e2e.pod_identity_helpers import POD_AUDIENCE, Cluster

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "vault-sts-operator"


@pytest.fixture(scope="session")
def operator(stack: StackEnv, chart_release: str) -> Iterator[OperatorProcess]:
    """The operator as a local process, with exactly the chart's RBAC (its ServiceAccount's kubeconfig)
    and leader election as the chart configures it: every end-to-end test proves the RBAC is enough."""
    kubeconfig = kubeconfig_for_service_account(stack, OPERATOR_NAMESPACE, OPERATOR_SA,
                                                stack.stack_dir / "operator-sa.kubeconfig")
    proc = OperatorProcess(stack, kubeconfig=kubeconfig,
                           extra_args=["--leader-election-lease", "vault-sts-operator", *TEST_OPERATOR_ARGS],
                           allowed_vault_addresses=[TRAP_VAULT_ADDRESS], pod_identity_port=free_port())
    proc.stop_others()
    proc.start()
    yield proc
    proc.stop()


class IssuedValues:
    """Every secret value a test saw issued: the leak scan greps for each of them."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add_secret(self, secret: dict[str, Any]) -> None:
        data = secret["data"]
        self.values.update(v for k, v in data.items() if k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))


@pytest.fixture(scope="session")
def issued() -> IssuedValues:
    return IssuedValues()


@dataclass
class EarlyPodToken:
    """A pod's projected-style token of the shortest lifetime the API server allows (600 s), minted when the
    end-to-end session starts, so a test at its end can present it expired without waiting 11 minutes itself."""

    cluster: Cluster
    namespace: str
    pod: Any
    token: str
    expires: float


@pytest.fixture(scope="session", autouse=True)
def early_pod_token(kube: Kube) -> Iterator[EarlyPodToken]:
    suffix = uuid.uuid4().hex[:8]
    cluster = Cluster(kube)
    namespace = kube.namespace(f"pi-expiry-{suffix}")
    node = cluster.node(f"pi-expiry-{suffix}")
    pod = cluster.pod(namespace, "app", "billing", node)
    minted = time.time()
    token = cluster.token(namespace, "billing", POD_AUDIENCE, pod, seconds=600)
    yield EarlyPodToken(cluster, namespace, pod, token, minted + 600)
    cluster.cleanup()
    kube.core.delete_namespace(namespace)
