"""The chart with ``watchNamespaces``: kopf peers in a KopfPeering in the watched namespace (the chart creates it
and the RBAC for it), and of two replicas exactly one issues."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.manifests import assumed_role_credential
from devstack.workloads import CHART, helm, operator_pods, pod_log, release_values, wait_release_ready
from tests.e2e.helpers import kubectl, wait_for
from tests.node.conftest import RELEASE, SHARD, SHARD_SA, counters_for
from tests.node.helpers import active_peer, issued_in_log, peers

CREDENTIALS = ("shard-a", "shard-b", "shard-c")


@pytest.fixture(scope="module")
def shard(stack, kube, node, release, namespaces) -> Iterator[str]:
    """The cluster-wide release scaled to zero (it would serve the watched namespace too), the namespaced one
    installed; afterwards the credentials are deleted while their operator runs, and everything restored."""
    kubectl(stack, "scale", "deployment", "-n", RELEASE, "--all", "--replicas=0")
    wait_for("no pod of the cluster-wide release", lambda: not operator_pods(kube.core, RELEASE, RELEASE), timeout=90)
    ns = namespaces["shard"]
    helm(stack, "install", SHARD, str(CHART), "--namespace", SHARD, "--create-namespace",
         *release_values(node, peering=SHARD), "--set", f"watchNamespaces={{{ns}}}")
    wait_release_ready(kube.core, SHARD, SHARD)
    yield ns
    for name in CREDENTIALS:
        kubectl(stack, "delete", "arc", name, "-n", ns, "--ignore-not-found", "--timeout=60s", check=False)
    helm(stack, "uninstall", SHARD, "--namespace", SHARD, "--wait", check=False)
    kubectl(stack, "scale", "deployment", "-n", RELEASE, "--all", "--replicas=2")
    wait_release_ready(kube.core, RELEASE, RELEASE)


def test_namespaced_install_peers_and_exactly_one_replica_issues(stack, kube, shard, make_identity):
    ns = shard
    pods = {p.metadata.name for p in operator_pods(kube.core, SHARD, SHARD)}
    active_peer(kube, SHARD, pods, namespace=ns)  # both replicas keep alive in the KopfPeering in ns
    ident = make_identity("shard", [ns])
    for name in CREDENTIALS:
        kube.create_credential(assumed_role_credential(ns, name, ident.name, ident.role_arns[0], durationSeconds=900))
    for name in CREDENTIALS:
        kube.wait_ready(ns, name, timeout=120)
    issued = {p: sum(issued_in_log(pod_log(kube.core, SHARD, p), ns, name) for name in CREDENTIALS) for p in pods}
    assert sorted(issued.values()) == [0, len(CREDENTIALS)], (issued, peers(kube, SHARD, ns))
    counters = counters_for(stack, ident.mfa_serial)
    assert counters["accepted"] == 1 and counters["reused"] == 0 and counters["refused"] == 0, counters

    sa = f"--as=system:serviceaccount:{SHARD}:{SHARD_SA}"
    assert kubectl(stack, "auth", "can-i", "patch", f"kopfpeerings.kopf.dev/{SHARD}", "-n", ns, sa,
                   check=False).stdout.strip() == "yes"
    assert kubectl(stack, "auth", "can-i", "patch", f"kopfpeerings.kopf.dev/{SHARD}", "-n", "default", sa,
                   check=False).stdout.strip() == "no"
