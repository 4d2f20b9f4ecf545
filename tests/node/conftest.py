"""The operator as its users run it: the real image on the stack's node, installed by ``helm install``, its pods
logging in to OpenBao with their own ServiceAccount token, consumer pods running the AWS SDK.

Needs the stack's node (``.stack/env``: ``VSO_NODE_HOST_IP``, ``VSO_IMAGE``; ``make image`` builds and loads the
image). The operators the end-to-end and fault suites run as host processes are stopped first: they watch every
namespace and would compete with the pods.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from devstack.env import StackEnv
from devstack.manifests import mfa_identity
from devstack.seed import RoleSpec, SeededIdentity, seed_identity
from devstack.workloads import CHART, Node, helm, release_values, wait_release_ready
from tests.e2e.helpers import Kube, wait_for
from tests.node.helpers import Figures

RELEASE = "vso-node"  # cluster-wide release, namespace vso-node
RELEASE_SA = f"{RELEASE}-vault-sts-operator"
SHARD = "vso-shard"  # namespaced release (watchNamespaces), namespace vso-shard
SHARD_SA = f"{SHARD}-vault-sts-operator"
REPORT: list[Figures] = []


@pytest.fixture(scope="session")
def node(stack: StackEnv) -> Node:
    return Node.from_stack(stack)


@pytest.fixture(scope="session")
def no_host_operators() -> None:
    """Stop the operator processes other suites left running in this session (they watch all namespaces)."""
    from devstack import operator_run

    for proc in list(operator_run._LIVE):
        proc.stop()


@pytest.fixture(scope="session")
def figures() -> Figures:
    fig = Figures()
    REPORT.append(fig)
    return fig


@pytest.fixture(scope="session")
def suffix() -> str:
    return time.strftime("%H%M%S")


@pytest.fixture(scope="session")
def namespaces(kube: Kube, suffix: str) -> Iterator[dict[str, str]]:
    """The application namespaces of this session; deleted at the end (their pods stop with them)."""
    names = {"team": f"node-team-{suffix}", "restarts": f"node-restarts-{suffix}", "shard": f"node-shard-{suffix}"}
    for ns in names.values():
        kube.namespace(ns)
    yield names
    for ns in names.values():
        # The operator may be uninstalled by now: its finalizers would keep the namespace Terminating.
        for arc in kube.custom.list_namespaced_custom_object("vaultsts.io", "v1alpha1", ns,
                                                            "assumedrolecredentials")["items"]:
            kube.patch_credential(ns, arc["metadata"]["name"], {"metadata": {"finalizers": None}})
        try:
            kube.core.delete_namespace(ns)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def make_identity(stack: StackEnv, kube: Kube, node: Node, suffix: str
                  ) -> Callable[..., SeededIdentity]:
    """Seed an identity whose Vault kubernetes-auth role binds the releases' ServiceAccounts (as the README's
    Vault setup does), and apply its MFAIdentity with the addresses pods reach Vault and STS on."""
    def make(name: str, allowed: list[str]) -> SeededIdentity:
        seeded = seed_identity(stack, f"{name}-{suffix}", roles=[RoleSpec(f"app-{name}-{suffix}")],
                               bound_namespaces=(RELEASE, SHARD), bound_service_accounts=(RELEASE_SA, SHARD_SA))
        manifest = mfa_identity(stack, seeded, allowed_namespaces=allowed)
        manifest["spec"]["vault"]["address"] = node.vault_addr
        manifest["spec"]["sts"]["endpoint"] = node.sts_endpoint
        kube.apply_identity(manifest)
        return seeded

    return make


@pytest.fixture(scope="session")
def identity(make_identity: Callable[..., SeededIdentity], namespaces: dict[str, str]) -> SeededIdentity:
    return make_identity("node", [namespaces["team"], namespaces["restarts"]])


@pytest.fixture(scope="session")
def release(stack: StackEnv, kube: Kube, node: Node, crds: None, no_host_operators: None,
            figures: Figures) -> Iterator[str]:
    """``helm install`` of the chart with the real image: 2 replicas electing a leader on Lease ``vso-node/vso-node``,
    Vault as pods reach it."""
    helm(stack, "uninstall", RELEASE, "--namespace", RELEASE, "--wait", check=False)  # a previous run's
    started = time.monotonic()
    helm(stack, "install", RELEASE, str(CHART), "--namespace", RELEASE, "--create-namespace",
         *release_values(node, lease=RELEASE))
    wait_release_ready(kube.core, RELEASE, RELEASE)
    figures.record("helm_install_to_operator_ready_s", time.monotonic() - started)
    yield RELEASE
    helm(stack, "uninstall", RELEASE, "--namespace", RELEASE, "--wait", check=False)


def counters_for(stack: StackEnv, serial: str) -> dict[str, Any]:
    counters = stack.emulator().counters()
    return {
        "accepted": counters["codes_accepted_by_serial"].get(serial, 0),
        "refused": counters["codes_refused_by_serial"].get(serial, 0),
        "reused": counters["codes_reused_by_serial"].get(serial, 0),
        "steps": [c["step"] for c in counters["accepted_codes"] if c["serial"] == serial],
    }


def rotate(kube: Kube, namespace: str, name: str, value: str, timeout: float = 90) -> tuple[str, float]:
    """Ask for a rotation with the annotation; returns the new access key id and when the status showed it."""
    before = kube.credential(namespace, name)["status"]["accessKeyId"]
    kube.patch_credential(namespace, name, {"metadata": {"annotations": {"vaultsts.io/rotate": value}}})
    key = wait_for(f"rotation {value} of {namespace}/{name}",
                   lambda: (k := (kube.credential(namespace, name).get("status") or {}).get("accessKeyId"))
                   != before and k, timeout=timeout, interval=0.2)
    return str(key), time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for fig in REPORT:
        if not fig.values:
            continue
        from tests.node.helpers import ROOT

        path = ROOT / ".stack" / "node-report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fig.values, indent=2) + "\n")
        terminalreporter.section("node report (the operator as a pod)")
        terminalreporter.write_line(f"{path}:")
        terminalreporter.write_line(json.dumps(fig.values, indent=2))
