"""rolloutRestartTargets on a real node: a Deployment's, a StatefulSet's and a DaemonSet's pods are replaced
after a rotation, once for a burst of rotations (debounced), after the last one."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from devstack.manifests import assumed_role_credential
from devstack.workloads import describe_pods, pod_ready, workload
from tests.e2e.helpers import wait_for
from tests.node.conftest import rotate
from tests.node.helpers import RESTARTED_AT

KINDS = ("Deployment", "StatefulSet", "DaemonSet")
CREDENTIAL = "restarter"
DEBOUNCE_S = 10  # the operator's default debounce window for restarts


def pods_of(kube, ns: str, name: str) -> list[Any]:
    return [p for p in kube.core.list_namespaced_pod(ns, label_selector=f"app={name}").items
            if p.metadata.deletion_timestamp is None]


def stamps(kube, ns: str) -> dict[str, str | None]:
    reads = {"Deployment": kube.apps.read_namespaced_deployment, "StatefulSet": kube.apps.read_namespaced_stateful_set,
             "DaemonSet": kube.apps.read_namespaced_daemon_set}
    return {kind: (reads[kind](kind.lower(), ns).spec.template.metadata.annotations or {}).get(RESTARTED_AT)
            for kind in KINDS}


def revisions(kube, ns: str) -> dict[str, int]:
    """How many pod templates each workload has had (ReplicaSets; ControllerRevisions)."""
    replica_sets = kube.apps.list_namespaced_replica_set(ns, label_selector="app=deployment").items
    out = {"Deployment": len(replica_sets)}
    for kind in ("StatefulSet", "DaemonSet"):
        out[kind] = len(kube.apps.list_namespaced_controller_revision(ns, label_selector=f"app={kind.lower()}").items)
    return out


@pytest.fixture(scope="module")
def workloads(kube, node, release, identity, namespaces) -> str:
    ns = namespaces["restarts"]
    creates = {"Deployment": kube.apps.create_namespaced_deployment,
               "StatefulSet": kube.apps.create_namespaced_stateful_set,
               "DaemonSet": kube.apps.create_namespaced_daemon_set}
    for kind in KINDS:
        creates[kind](ns, workload(node, kind, kind.lower(), CREDENTIAL))
    kube.create_credential(assumed_role_credential(
        ns, CREDENTIAL, identity.name, identity.role_arns[0], durationSeconds=900,
        rolloutRestartTargets=[{"kind": k, "name": k.lower()} for k in KINDS]))
    kube.wait_ready(ns, CREDENTIAL, timeout=120)
    try:
        wait_for("one Ready pod per workload", lambda: all(
            len(p := pods_of(kube, ns, k.lower())) == 1 and pod_ready(p[0]) for k in KINDS), timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_pods(kube.core, ns)}") from None
    return ns


def test_a_burst_of_rotations_replaces_every_workloads_pods_once(kube, workloads, figures):
    ns = workloads
    assert stamps(kube, ns) == dict.fromkeys(KINDS), "the first issue restarted workloads"
    before_pods = {k: {p.metadata.uid for p in pods_of(kube, ns, k.lower())} for k in KINDS}
    before_revisions = revisions(kube, ns)

    rotate(kube, ns, CREDENTIAL, "burst-1")
    _, last_rotation = rotate(kube, ns, CREDENTIAL, "burst-2")

    def replaced() -> bool:
        for kind in KINDS:
            pods = pods_of(kube, ns, kind.lower())
            if len(pods) != 1 or not pod_ready(pods[0]) or pods[0].metadata.uid in before_pods[kind]:
                return False
            all_pods = kube.core.list_namespaced_pod(ns, label_selector=f"app={kind.lower()}").items
            if any(p.metadata.uid in before_pods[kind] for p in all_pods):
                return False  # the old pod is still terminating
        return True

    try:
        wait_for("new Ready pods for the Deployment, the StatefulSet and the DaemonSet", replaced, timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_pods(kube.core, ns)}") from None
    figures.record("last_rotation_to_all_workload_pods_replaced_s", time.time() - last_rotation)

    after = stamps(kube, ns)
    assert all(after.values()) and len(set(after.values())) == 1, after
    restarted_at = datetime.fromisoformat(str(after["Deployment"]).replace("Z", "+00:00")).timestamp()
    assert restarted_at >= int(last_rotation) - 1, "the restart came before the last rotation of the burst"
    time.sleep(DEBOUNCE_S + 2)  # a second restart for the burst would have landed by now
    assert stamps(kube, ns) == after, "the burst restarted the workloads twice"
    assert revisions(kube, ns) == {k: n + 1 for k, n in before_revisions.items()}
