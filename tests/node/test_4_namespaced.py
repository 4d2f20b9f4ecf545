"""The chart with ``watchNamespaces``: of two replicas exactly one issues, the one holding the leader election's
Lease in the release's own namespace; nothing in the watched (tenant) namespace takes part in the election."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from devstack.manifests import assumed_role_credential
from devstack.workloads import CHART, helm, operator_pods, pod_log, release_values, wait_release_ready
from tests.e2e.helpers import kubectl, wait_for
from tests.node.conftest import RELEASE, SHARD, SHARD_SA, counters_for
from tests.node.helpers import issued_in_log, leader_pod, lease_holder

CREDENTIALS = ("shard-a", "shard-b", "shard-c")


@pytest.fixture(scope="module")
def shard(stack, kube, node, release, namespaces) -> Iterator[str]:
    """The cluster-wide release scaled to zero (it would serve the watched namespace too), the namespaced one
    installed; afterwards the credentials are deleted while their operator runs, and everything restored."""
    kubectl(stack, "scale", "deployment", "-n", RELEASE, "--all", "--replicas=0")
    wait_for("no pod of the cluster-wide release", lambda: not operator_pods(kube.core, RELEASE, RELEASE), timeout=90)
    ns = namespaces["shard"]
    helm(stack, "install", SHARD, str(CHART), "--namespace", SHARD, "--create-namespace",
         *release_values(node, lease=SHARD), "--set", f"watchNamespaces={{{ns}}}")
    wait_release_ready(kube.core, SHARD, SHARD)
    yield ns
    for name in CREDENTIALS:
        kubectl(stack, "delete", "arc", name, "-n", ns, "--ignore-not-found", "--timeout=60s", check=False)
    helm(stack, "uninstall", SHARD, "--namespace", SHARD, "--wait", check=False)
    kubectl(stack, "scale", "deployment", "-n", RELEASE, "--all", "--replicas=2")
    wait_release_ready(kube.core, RELEASE, RELEASE)


def test_namespaced_install_elects_one_replica_and_only_it_issues(stack, kube, shard, make_identity):
    ns = shard
    pods = {p.metadata.name for p in operator_pods(kube.core, SHARD, SHARD)}
    leader = leader_pod(kube, SHARD, SHARD, pods)  # the Lease in the release namespace, not in ns
    ident = make_identity("shard", [ns])
    for name in CREDENTIALS:
        kube.create_credential(assumed_role_credential(ns, name, ident.name, ident.role_arns[0], durationSeconds=900))
    for name in CREDENTIALS:
        kube.wait_ready(ns, name, timeout=120)
    issued = {p: sum(issued_in_log(pod_log(kube.core, SHARD, p), ns, name) for name in CREDENTIALS) for p in pods}
    assert issued == {p: len(CREDENTIALS) if p == leader else 0 for p in pods}, \
        (issued, lease_holder(kube, SHARD, SHARD))
    counters = counters_for(stack, ident.mfa_serial)
    assert counters["accepted"] == 1 and counters["reused"] == 0 and counters["refused"] == 0, counters

    # Nothing in the tenant's namespace takes part: no Lease there (the per-device Lease is in the release
    # namespace too), no kopf peering object, and the operator may write no Lease there.
    assert not client.CoordinationV1Api(kube.api).list_namespaced_lease(ns).items
    assert not kubectl(stack, "get", "kopfpeerings.kopf.dev", "-n", ns, "--ignore-not-found", "-o", "name",
                       check=False).stdout.strip()
    sa = f"--as=system:serviceaccount:{SHARD}:{SHARD_SA}"

    def can(verb: str, resource: str, namespace: str) -> str:
        return kubectl(stack, "auth", "can-i", verb, resource, "-n", namespace, sa, check=False).stdout.strip()

    assert can("update", f"leases.coordination.k8s.io/{SHARD}", SHARD) == "yes"
    for verb in ("create", "update", "patch"):
        assert can(verb, "leases.coordination.k8s.io", ns) == "no", verb
        assert can(verb, "leases.coordination.k8s.io", "default") == "no", verb
    assert can("patch", "kopfpeerings.kopf.dev", ns) == "no"
