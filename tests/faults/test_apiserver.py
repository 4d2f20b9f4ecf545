"""kube-apiserver stopped and started again: the operator reconnects and issues nothing twice."""

from __future__ import annotations

import time

from devstack import stack as devstack
from devstack.manifests import assumed_role_credential
from tests.faults.helpers import issued_lines

DOWN_SECONDS = 15


def test_apiserver_restart(stack, kube, team, make_identity, operator, emulator_admin, report):
    ident = make_identity("apisrv")
    names = ["a", "b"]
    for name in names:
        kube.create_credential(assumed_role_credential(team, name, ident.name, ident.role_arns[0]))
    before = {n: kube.wait_ready(team, n)["status"]["accessKeyId"] for n in names}
    calls_before = emulator_admin.counters()["calls"]["AssumeRole"]

    stopped_at = time.monotonic()
    devstack.stop_service("kube-apiserver")
    try:
        time.sleep(DOWN_SECONDS)
        assert operator.proc.poll() is None, "the operator died with the apiserver"
        calls_during = emulator_admin.counters()["calls"]["AssumeRole"] - calls_before
    finally:
        devstack.start_service("kube-apiserver")
    outage = time.monotonic() - stopped_at
    kube.api.rest_client.pool_manager.clear()

    # The watches reconnect: a credential created after the restart is issued.
    kube.create_credential(assumed_role_credential(team, "after", ident.name, ident.role_arns[0]))
    kube.wait_ready(team, "after", timeout=90)
    time.sleep(5)  # give a confused operator the chance to re-issue the older ones
    for name in names:
        assert kube.credential(team, name)["status"]["accessKeyId"] == before[name]
        assert kube.secret(team, name)["data"]["AWS_ACCESS_KEY_ID"] == before[name]
        assert issued_lines(operator.log_text(), team, name) == 1
    # (counted per credential from the log: other tests' credentials on a shared stack may rotate meanwhile)
    assert issued_lines(operator.log_text(), team, "after") == 1
    assert operator.proc.poll() is None
    report.fault("test_apiserver_restart", "kube-apiserver stopped", outage, sts_calls=calls_during,
                 credentials_issued_after=1, double_issues=0)
