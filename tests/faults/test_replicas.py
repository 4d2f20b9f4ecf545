"""Two operator replicas with kopf peering (as the chart runs them): one issues; kill it, the other takes over."""

from __future__ import annotations

import signal
import time

from devstack.manifests import assumed_role_credential
from tests.e2e.helpers import wait_for
from tests.faults.conftest import new_operator
from tests.faults.helpers import issued_lines

TAKEOVER_SECONDS = 120


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
        time.sleep(5)  # both announce themselves in the ClusterKopfPeering
        names = ["a", "b", "c"]
        for name in names:
            kube.create_credential(assumed_role_credential(team, name, ident.name, ident.role_arns[0]))
        for name in names:
            kube.wait_ready(team, name, timeout=90)
        logs = {k: p.log_text()[offsets[k]:] for k, p in replicas.items()}
        issuers = {k for k, log in logs.items() if any(issued_lines(log, team, n) for n in names)}
        assert len(issuers) == 1, f"issued by {sorted(issuers)}"
        for name in names:  # each exactly once, by one replica
            assert sum(issued_lines(log, team, name) for log in logs.values()) == 1
        active = issuers.pop()
        standby = next(k for k in replicas if k != active)

        replicas[active].stop(signal.SIGKILL)
        killed_at = time.monotonic()
        standby_offset = len(replicas[standby].log_text())
        kube.create_credential(assumed_role_credential(team, "after", ident.name, ident.role_arns[0]))
        kube.wait_ready(team, "after", timeout=TAKEOVER_SECONDS)
        takeover = time.monotonic() - killed_at
        assert issued_lines(replicas[standby].log_text()[standby_offset:], team, "after") == 1
        for name in names:  # the survivor does not re-issue what the other one issued
            assert kube.secret(team, name)["data"]["AWS_ACCESS_KEY_ID"] == \
                kube.credential(team, name)["status"]["accessKeyId"]
        assert issued_lines(replicas[standby].log_text()[standby_offset:], team, "a") == 0
        counters = emulator_admin.counters()
        assert counters["codes_reused_by_serial"].get(ident.mfa_serial, 0) == 0
        report.fault("test_two_replicas_one_active_then_takeover", "active replica SIGKILL", takeover,
                     active=active, takeover_s=round(takeover, 1))
    finally:
        if operator.proc is None:  # the session's operator was the active one: bring it back
            operator.start()
        second.stop()
    wait_for("the session operator active again", operator.healthy, timeout=30)
