"""Two replicas, one active through kopf peering; deleting the active pod lets the other take over, and no TOTP
code is spent twice (the new active replica opens its own MFA session, guarded by the per-device Lease)."""

from __future__ import annotations

import time

from devstack.manifests import assumed_role_credential
from devstack.workloads import operator_pods, pod_log, wait_release_ready
from tests.node.conftest import RELEASE, counters_for, rotate
from tests.node.helpers import active_peer, issued_in_log

CREDENTIAL = "failover"


def test_only_the_active_replica_issues_and_the_other_takes_over(stack, kube, release, identity, namespaces, figures):
    team = namespaces["team"]
    pods = {p.metadata.name for p in wait_release_ready(kube.core, RELEASE, RELEASE)}
    active = active_peer(kube, RELEASE, pods)
    kube.create_credential(assumed_role_credential(team, CREDENTIAL, identity.name, identity.role_arns[0],
                                                   durationSeconds=900))
    kube.wait_ready(team, CREDENTIAL, timeout=120)
    issued = {p: issued_in_log(pod_log(kube.core, RELEASE, p), team, CREDENTIAL) for p in pods}
    assert issued[active] == 1 and sum(issued.values()) == 1, issued
    before = counters_for(stack, identity.mfa_serial)

    deleted_at = time.time()
    kube.core.delete_namespaced_pod(active, RELEASE)  # graceful, as `kubectl delete pod` does
    _, rotated_at = rotate(kube, team, CREDENTIAL, "failover-1", timeout=150)
    figures.record("active_pod_deleted_to_rotation_by_another_s", rotated_at - deleted_at)

    survivors = {p.metadata.name for p in operator_pods(kube.core, RELEASE, RELEASE)} - {active}
    issued_after = {p: issued_in_log(pod_log(kube.core, RELEASE, p), team, CREDENTIAL) for p in survivors}
    assert sum(issued_after.values()) == 1, issued_after
    after = counters_for(stack, identity.mfa_serial)
    assert after["reused"] == 0 and after["refused"] == 0, after
    assert after["accepted"] == before["accepted"] + 1, (before, after)  # the new active replica's MFA session
    assert len(set(after["steps"])) == len(after["steps"]), after
    wait_release_ready(kube.core, RELEASE, RELEASE, exclude={active})
