"""rolloutRestartTargets: a rotation restarts the workloads (which opt in by naming the credential); an operator
restart does not; bursts of rotations."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from devstack.manifests import assumed_role_credential
from tests.e2e.helpers import wait_for

RESTARTED = "vaultsts.io/restartedAt"
OPT_IN = "vaultsts.io/restart-on-rotation"
KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def workload(kind: str, name: str, opt_in: str = "other, app") -> dict:
    labels = {"app": name}
    spec = {"selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}}
    if kind == "Deployment":
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
    metadata: dict = {"name": name}
    if opt_in:
        metadata["annotations"] = {OPT_IN: opt_in}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": spec}


def stamps(kube, team) -> dict[str, str | None]:
    out = {}
    for kind, read in (("Deployment", kube.apps.read_namespaced_deployment),
                       ("StatefulSet", kube.apps.read_namespaced_stateful_set),
                       ("DaemonSet", kube.apps.read_namespaced_daemon_set)):
        obj = read(kind.lower(), team)
        out[kind] = (obj.spec.template.metadata.annotations or {}).get(RESTARTED)
    return out


@pytest.fixture
def consumers(kube, team, make_identity):
    ident = make_identity("consumer")
    for kind, create in (("Deployment", kube.apps.create_namespaced_deployment),
                         ("StatefulSet", kube.apps.create_namespaced_stateful_set),
                         ("DaemonSet", kube.apps.create_namespaced_daemon_set)):
        create(team, workload(kind, kind.lower()))
    kube.create_credential(assumed_role_credential(
        team, "app", ident.name, ident.role_arns[0],
        rolloutRestartTargets=[{"kind": k, "name": k.lower()} for k in KINDS]))
    kube.wait_ready(team, "app")
    return ident


def rotate(kube, team, value: str, patch: dict | None = None) -> str:
    """Rotate by annotation, or (`patch`) by a spec change: the annotation is rate-limited, spec changes are not."""
    before = kube.credential(team, "app")["status"]["accessKeyId"]
    kube.patch_credential(team, "app", patch or {"metadata": {"annotations": {"vaultsts.io/rotate": value}}})
    return str(wait_for(f"rotation {value}", lambda: (
        k := kube.credential(team, "app")["status"].get("accessKeyId")) != before and k, timeout=60))


def test_rotation_restarts_consumers_but_an_operator_restart_does_not(kube, team, consumers, operator, report):
    assert stamps(kube, team) == dict.fromkeys(KINDS), "the first issue restarted workloads"
    rotate(kube, team, "r1")
    after = wait_for("restartedAt on every target", lambda: (s := stamps(kube, team)) and all(s.values()) and s,
                     timeout=30)
    assert len(set(after.values())) == 1
    operator.restart()
    time.sleep(8)  # the restarted daemon reads the Secret's record and goes back to sleep
    assert stamps(kube, team) == after
    report.fault("test_rotation_restarts_consumers_but_an_operator_restart_does_not", "operator SIGTERM restart",
                 8, workload_restarts_from_operator_restart=0)


def test_rotations_in_a_burst_restart_consumers_once_after_the_last(kube, team, consumers, report):
    """Two rotations inside the debounce window (10 s by default) cause one restart, after the second one,
    so the pods start with the newest credentials. (The second is a spec change: two rotate annotations
    within the rotate minimum interval would be one rotation.)"""
    before = stamps(kube, team)
    rotate(kube, team, "b1")
    rotate(kube, team, "b2", {"spec": {"durationSeconds": 1800}})
    second_rotation = time.time()
    after = wait_for("one restart of every target", lambda: (s := stamps(kube, team)) != before
                     and all(s.values()) and s, timeout=30)
    time.sleep(12)  # longer than the debounce window: a second restart would have landed by now
    assert stamps(kube, team) == after, "the burst restarted the targets twice"
    restarted_at = datetime.fromisoformat(next(iter(after.values())).replace("Z", "+00:00")).timestamp()
    assert restarted_at >= int(second_rotation), "the restart came before the last rotation"
    report.findings.append("rolloutRestartTargets: 1 restart of each target for 2 rotations in a burst")
