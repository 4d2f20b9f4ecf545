"""Pods consume the Secret three ways, each running the AWS SDK against the STS emulator; a rotation reaches the
``credential_process`` pod through the kubelet's Secret volume refresh, without a restart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from devstack.manifests import assumed_role_credential
from devstack.workloads import consumer_config_map, consumer_lines, consumer_pod, describe_pods
from tests.e2e.helpers import wait_for
from tests.node.conftest import rotate

HOWS = ("env", "credentials", "process")
CREDENTIAL, SECRET = "app", "app-aws"


@pytest.fixture(scope="module")
def consumers(kube, node, release, identity, namespaces, figures) -> dict[str, Any]:
    """The credential and its three consumer pods applied at once, as a team applies an app with its credential."""
    team = namespaces["team"]
    kube.core.create_namespaced_config_map(team, consumer_config_map(team))
    applied = time.time()
    kube.create_credential(assumed_role_credential(team, CREDENTIAL, identity.name, identity.role_arns[0],
                                                   durationSeconds=900, target={"secretName": SECRET}))
    for how in HOWS:
        kube.core.create_namespaced_pod(team, consumer_pod(node, team, f"sdk-{how}", SECRET, how))
    kube.wait_ready(team, CREDENTIAL, timeout=120)
    figures.record("apply_to_credential_ready_s", time.time() - applied)

    def first_arn(pod: str) -> dict[str, Any] | None:
        return next((line for line in consumer_lines(kube.core, team, pod) if "arn" in line), None)

    first = {}
    for how in HOWS:
        try:
            first[how] = wait_for(f"pod sdk-{how} printing an ARN", lambda h=how: first_arn(f"sdk-{h}"), timeout=240)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe_pods(kube.core, team)}") from None
    figures.record("apply_to_consumer_arn_s", {how: round(line["t"] - applied, 1) for how, line in first.items()})
    return {"team": team, "first": first}


def test_each_consumer_prints_the_assumed_role_arn(kube, consumers, identity):
    team = consumers["team"]
    status = kube.credential(team, CREDENTIAL)["status"]
    role = identity.role_arns[0].rpartition("/")[2]
    assert status["assumedRoleArn"].startswith(f"arn:aws:sts::{identity.account}:assumed-role/{role}/")
    for how in HOWS:
        line = consumers["first"][how]
        assert line["arn"] == status["assumedRoleArn"], how
        assert line["key"] == status["accessKeyId"], how
        assert not [x for x in consumer_lines(kube.core, team, f"sdk-{how}") if "error" in x], how


def test_rotation_reaches_the_credential_process_pod_without_a_restart(kube, consumers, figures):
    """The kubelet refreshes the mounted Secret; the SDK re-runs ``credential_process`` and uses the new key.
    The env and credentials-file pods keep the key they started with: they need a restart (rolloutRestartTargets)."""
    team = consumers["team"]
    pod_before = kube.core.read_namespaced_pod("sdk-process", team)
    new_key, rotated_at = rotate(kube, team, CREDENTIAL, "node-r1")

    def picked_up() -> dict[str, Any] | None:
        return next((x for x in consumer_lines(kube.core, team, "sdk-process") if x.get("key") == new_key), None)

    line = wait_for("the credential_process pod using the rotated key", picked_up, timeout=240, interval=1)
    figures.record("rotation_pickup_through_volume_s", line["t"] - rotated_at)
    pod_after = kube.core.read_namespaced_pod("sdk-process", team)
    assert pod_after.metadata.uid == pod_before.metadata.uid
    assert pod_after.status.container_statuses[0].restart_count == 0
    assert not [x for x in consumer_lines(kube.core, team, "sdk-process") if "error" in x]
    for how in ("env", "credentials"):
        last = [x for x in consumer_lines(kube.core, team, f"sdk-{how}") if "key" in x][-1]
        assert last["key"] == consumers["first"][how]["key"] != new_key, how


def test_no_secret_value_in_any_pod_log(kube, consumers):
    """The operator's and the consumers' logs (kubectl logs) never carry the secret half or the session token."""
    from devstack.workloads import pod_log
    from tests.node.conftest import RELEASE

    data = kube.secret(consumers["team"], SECRET)["data"]
    values = {data["AWS_SECRET_ACCESS_KEY"], data["AWS_SESSION_TOKEN"]}
    logs = {f"{RELEASE}/{p.metadata.name}": pod_log(kube.core, RELEASE, p.metadata.name)
            for p in kube.core.list_namespaced_pod(RELEASE).items}
    logs.update({f"sdk-{how}": pod_log(kube.core, consumers["team"], f"sdk-{how}") for how in HOWS})
    assert all(logs.values())
    leaks = [name for name, text in logs.items() for value in values if value in text]
    assert not leaks, leaks
