"""Two replicas, one active through the leader election's Lease; the leader SIGKILLed (no graceful shutdown, so no
release: the Lease must run out), the other replica issues within FAILOVER_BOUND_SECONDS, and no TOTP code is spent
twice (the new leader opens its own MFA session, guarded by the per-device Lease)."""

from __future__ import annotations

import time

from devstack.manifests import assumed_role_credential
from devstack.workloads import operator_pods, pod_log, wait_release_ready
from tests.e2e.helpers import wait_for
from tests.node.conftest import RELEASE, counters_for, rotate
from tests.node.helpers import LeaseWatch, holder_pod, issued_in_log, leader_pod, sigkill_container

CREDENTIAL = "failover"
# Issue 18's target: SIGKILL of the leader pod -> the other replica issues (kopf peering: 26.9 s). The chart's
# timing (15 s lease, 2 s retry period, jittered by 1.2) puts the takeover 12.6-17.4 s after the kill.
FAILOVER_BOUND_SECONDS = 20.0
# The takeover comes at least lease duration - retry period x 1.2 after the kill; the device guard adds 0.3 s.
EARLIEST_TAKEOVER_SECONDS = 15 - 2 * 1.2 - 0.3


def _wait_for_a_fresh_totp_step_at_takeover(period: int) -> float:
    """Kill only when the takeover cannot fall in the TOTP step the old leader spent: the new leader needs a code
    of its own (its own MFA session), and AWS accepts one code per step, so a takeover within the spent step would
    wait up to a whole period more. That wait is TOTP's rule, not failover: kept out of the figure."""
    def phase() -> float:
        return time.time() % period

    wait_for("a TOTP step whose next boundary is before the earliest takeover",
             lambda: phase() >= period - EARLIEST_TAKEOVER_SECONDS, timeout=period + 1, interval=0.1)
    return phase()


def test_only_one_replica_issues_and_the_other_takes_over(stack, kube, release, identity, namespaces, figures):
    team = namespaces["team"]
    pods = {p.metadata.name: p for p in wait_release_ready(kube.core, RELEASE, RELEASE)}
    leader = leader_pod(kube, RELEASE, RELEASE, set(pods))
    kube.create_credential(assumed_role_credential(team, CREDENTIAL, identity.name, identity.role_arns[0],
                                                   durationSeconds=900))
    kube.wait_ready(team, CREDENTIAL, timeout=120)
    issued = {p: issued_in_log(pod_log(kube.core, RELEASE, p), team, CREDENTIAL) for p in pods}
    assert issued == {p: int(p == leader) for p in pods}, (leader, issued)  # the Lease holder, and only it
    before = counters_for(stack, identity.mfa_serial)

    figures.record("totp_phase_at_kill_s", _wait_for_a_fresh_totp_step_at_takeover(identity.totp_period))
    with LeaseWatch(kube, RELEASE, RELEASE) as lease:
        killed_at = time.time()
        sigkill_container(stack, pods[leader])
        # then the pod forced away at once, so the kubelet does not start the container again in the same pod
        kube.core.delete_namespaced_pod(leader, RELEASE, grace_period_seconds=0)
        _, rotated_at = rotate(kube, team, CREDENTIAL, "failover-1", timeout=150)
        new_leader = wait_for("another replica holding the Lease", lambda: lease.successor(leader, RELEASE),
                              timeout=30)
    failover = rotated_at - killed_at
    taken = lease.taken_by(new_leader)
    figures.record("leader_sigkill_to_lease_taken_s", taken - killed_at)
    figures.record("leader_sigkill_to_issued_by_the_other_s", failover)
    figures.record("failover_new_leader", "standby" if new_leader in pods else "replacement")
    print(f"\nleader {leader} SIGKILLed: Lease taken by {new_leader} after {taken - killed_at:.1f}s, "
          f"credential issued by it after {failover:.1f}s (bound {FAILOVER_BOUND_SECONDS:.0f}s)")
    # a crash, not a shutdown: the Lease went from the old holder to its successor, never released in between
    holders = [holder for t, holder in lease.changes if t <= taken]
    assert [holder_pod(h, {*pods, new_leader}) for h in holders] == [leader, new_leader], lease.changes

    survivors = {p.metadata.name for p in operator_pods(kube.core, RELEASE, RELEASE)}
    assert leader not in survivors
    issued_after = {p: issued_in_log(pod_log(kube.core, RELEASE, p), team, CREDENTIAL) for p in survivors}
    assert issued_after.get(new_leader) == 1 and sum(issued_after.values()) == 1, issued_after
    after = counters_for(stack, identity.mfa_serial)
    figures.record("totp_codes_reused_across_failover", after["reused"] - before["reused"])
    figures.record("totp_codes_refused_across_failover", after["refused"] - before["refused"])
    assert after["reused"] == 0 and after["refused"] == 0, after
    assert after["accepted"] == before["accepted"] + 1, (before, after)  # the new leader's MFA session
    assert len(set(after["steps"])) == len(after["steps"]), after
    assert failover <= FAILOVER_BOUND_SECONDS, \
        f"the other replica issued {failover:.1f}s after the leader's SIGKILL (> {FAILOVER_BOUND_SECONDS}s)"
    wait_release_ready(kube.core, RELEASE, RELEASE, exclude={leader})
