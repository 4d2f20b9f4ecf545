"""Two operator replicas electing a leader on one Lease (as the chart runs them): only the holder issues; SIGKILL it
(no release), and the other takes the Lease once it runs out and issues."""

from __future__ import annotations

import signal
import socket
import time

from devstack.manifests import assumed_role_credential
from devstack.operator_run import OPERATOR_NAMESPACE, OperatorProcess
from tests.e2e.helpers import wait_for
from tests.faults.conftest import LEASE, new_operator
from tests.faults.helpers import issued_lines
from tests.node.helpers import LeaseWatch, lease_holder

TAKEOVER_SECONDS = 120  # wait at most this long for the survivor's credential (a TOTP step wait included)
# The operator's default timing (15 s lease, 2 s retry period jittered by 1.2): a standby takes a Lease whose holder
# died at most 15 + 2.4 s after it last saw the holder renew; some slack for the sampling and the API server.
LEASE_TAKEN_BOUND_SECONDS = 20.0


def _instance(proc: OperatorProcess) -> str:
    """The operator's instance id, as it writes it into the Lease: <hostname>-<pid>."""
    assert proc.proc is not None
    return f"{socket.gethostname()}-{proc.proc.pid}"


def test_two_replicas_one_active_then_takeover(stack, kube, team, make_identity, operator, operator_kubeconfig,
                                               operators, emulator_admin, report):
    ident = make_identity("peers")
    second = new_operator(stack, operator_kubeconfig, "faults-operator-b")
    operators.append(second)
    replicas = {"faults-operator": operator, "faults-operator-b": second}
    offsets = {"faults-operator": len(operator.log_text())}
    second.start()
    offsets["faults-operator-b"] = 0 if second.starts == 1 else len(second.log_text())
    try:
        instances = {k: _instance(p) for k, p in replicas.items()}
        ids = {instance: k for k, instance in instances.items()}
        holder = wait_for("one of the two replicas holding the Lease",
                          lambda: ids.get(lease_holder(kube, OPERATOR_NAMESPACE, LEASE)), timeout=30)
        names = ["a", "b", "c"]
        for name in names:
            kube.create_credential(assumed_role_credential(team, name, ident.name, ident.role_arns[0]))
        for name in names:
            kube.wait_ready(team, name, timeout=90)
        logs = {k: p.log_text()[offsets[k]:] for k, p in replicas.items()}
        issuers = {k for k, log in logs.items() if any(issued_lines(log, team, n) for n in names)}
        assert issuers == {holder}, f"issued by {sorted(issuers)}; the Lease holder is {holder}"
        for name in names:  # each exactly once, by one replica
            assert sum(issued_lines(log, team, name) for log in logs.values()) == 1
        active = holder
        standby = next(k for k in replicas if k != active)
        standby_id = instances[standby]

        with LeaseWatch(kube, OPERATOR_NAMESPACE, LEASE) as lease:
            replicas[active].stop(signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()
            standby_offset = len(replicas[standby].log_text())
            kube.create_credential(assumed_role_credential(team, "after", ident.name, ident.role_arns[0]))
            kube.wait_ready(team, "after", timeout=TAKEOVER_SECONDS)
            takeover = time.monotonic() - killed_at
        taken = next((t for t, h in lease.changes if h == standby_id), None)
        assert taken is not None, lease.changes
        # a crash: the Lease went from the killed holder straight to the standby, never released in between
        assert [h for t, h in lease.changes if t <= taken][-2:] == [instances[active], standby_id], lease.changes
        assert taken - killed_wall <= LEASE_TAKEN_BOUND_SECONDS, (taken - killed_wall, lease.changes)
        assert issued_lines(replicas[standby].log_text()[standby_offset:], team, "after") == 1
        for name in names:  # the survivor does not re-issue what the other one issued
            assert kube.secret(team, name)["data"]["AWS_ACCESS_KEY_ID"] == \
                kube.credential(team, name)["status"]["accessKeyId"]
        assert issued_lines(replicas[standby].log_text()[standby_offset:], team, "a") == 0
        counters = emulator_admin.counters()
        assert counters["codes_reused_by_serial"].get(ident.mfa_serial, 0) == 0
        report.fault("test_two_replicas_one_active_then_takeover", "active replica SIGKILL", takeover,
                     active=active, takeover_s=round(takeover, 1), lease_taken_s=round(taken - killed_wall, 1))
    finally:
        if operator.proc is None:  # the session's operator was the active one: bring it back
            operator.start()
        second.stop()
    wait_for("the session operator active again", operator.healthy, timeout=30)
