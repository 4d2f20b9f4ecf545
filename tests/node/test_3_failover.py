"""Two replicas, one active through kopf peering; deleting the active pod lets the other take over, and no TOTP
code is spent twice (the new active replica opens its own MFA session, guarded by the per-device Lease)."""

from __future__ import annotations

import time

from devstack.manifests import assumed_role_credential
from devstack.workloads import operator_pods, pod_log, wait_release_ready
from tests.e2e.helpers import wait_for
from tests.node.conftest import RELEASE, counters_for, rotate
from tests.node.helpers import active_peer, issued_in_log

CREDENTIAL = "failover"


def test_only_one_replica_issues_and_the_other_takes_over(stack, kube, release, identity, namespaces, figures):
    team = namespaces["team"]
    pods = {p.metadata.name for p in wait_release_ready(kube.core, RELEASE, RELEASE)}
    active_peer(kube, RELEASE, pods)  # both replicas keep alive in the ClusterKopfPeering
    kube.create_credential(assumed_role_credential(team, CREDENTIAL, identity.name, identity.role_arns[0],
                                                   durationSeconds=900))
    kube.wait_ready(team, CREDENTIAL, timeout=120)
    issued = {p: issued_in_log(pod_log(kube.core, RELEASE, p), team, CREDENTIAL) for p in pods}
    assert sorted(issued.values()) == [0, 1], issued
    worker = next(p for p, n in issued.items() if n)
    before = counters_for(stack, identity.mfa_serial)

    deleted_at = time.time()
    kube.core.delete_namespaced_pod(worker, RELEASE)  # graceful, as `kubectl delete pod` does
    wait_for(f"pod {worker} gone", lambda: worker not in {
        p.metadata.name for p in kube.core.list_namespaced_pod(RELEASE).items}, timeout=60)
    gone_at = time.time()
    _, rotated_at = rotate(kube, team, CREDENTIAL, "failover-1", timeout=150)
    figures.record("active_pod_deleted_to_gone_s", gone_at - deleted_at)
    figures.record("active_pod_gone_to_rotation_by_another_s", rotated_at - gone_at)

    survivors = {p.metadata.name for p in operator_pods(kube.core, RELEASE, RELEASE)}
    issued_after = {p: issued_in_log(pod_log(kube.core, RELEASE, p), team, CREDENTIAL) for p in survivors}
    assert sorted(issued_after.values())[-1:] == [1] and sum(issued_after.values()) == 1, issued_after
    after = counters_for(stack, identity.mfa_serial)
    assert after["reused"] == 0 and after["refused"] == 0, after
    assert after["accepted"] == before["accepted"] + 1, (before, after)  # the new active replica's MFA session
    assert len(set(after["steps"])) == len(after["steps"]), after
    wait_release_ready(kube.core, RELEASE, RELEASE, exclude={worker})
