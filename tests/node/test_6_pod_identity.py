"""Mode PodIdentity as its users run it: the chart with ``podIdentity.enabled``, the node agent's DaemonSet on the
stack's node (its address on a dummy link in the node's network namespace), and consumer pods in three SDKs
(Python boto3, Go aws-sdk-go-v2, JavaScript AWS SDK v3), each with its default credential chain and the
documented snippet (no Secret, no code for this operator).

Two credentials, on two identities so each one's TOTP codes are counted apart:
- ``rot``: its role's sessions end 300 s after issue (an emulator knob; AWS's shortest is 15 min), so a rotation
  happens within minutes and each SDK's refresh picks up the new key without a restart;
- ``steady``: one-hour sessions; its pods must see no failed call while the agent is killed and while the
  operator's leader is SIGKILLed, and no TOTP code is spent by either.
Then etcd, read directly, holds none of the AccessKeyIds, secret keys or session tokens issued.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from devstack import consumers
from devstack.layout import Ports
from devstack.manifests import assumed_role_credential
from devstack.seed import SeededIdentity
from devstack.workloads import CHART, describe_pods, helm, pod_ready, release_values, wait_release_ready
from tests.e2e.helpers import Kube, wait_for
from tests.node.conftest import RELEASE
from tests.node.helpers import Figures, LeaseWatch, holder_pod, leader_pod, sigkill_container
from vault_sts_operator.ctl import pod_identity as snippet

SDKS = consumers.SDKS
LIFETIME_CAP = 300
# This machine's kernel has no dummy link driver: the agent's address goes on the node's loopback link instead
# (agent/link.py; the same local delivery).
PI_VALUES = ("podIdentity.enabled=true", "podIdentity.agent.linkName=lo")


def snippet_pod(name: str, service_account: str, container: dict[str, Any]) -> dict[str, Any]:
    """One consumer container with the documented snippet (`vault-sts-operator pod-identity snippet`) applied."""
    container = {**container, "env": [*container["env"], *snippet.env()], "volumeMounts": [snippet.volume_mount()]}
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"serviceAccountName": service_account, "automountServiceAccountToken": False,
                     "containers": [container], "volumes": [snippet.volume()]}}


def lines(kube: Kube, namespace: str, pod: str) -> list[dict[str, Any]]:
    try:
        text = kube.core.read_namespaced_pod_log(pod, namespace)
    except Exception:  # not started yet
        return []
    out = []
    for raw in (text or "").splitlines():  # None: the container started but printed nothing yet
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def codes(stack: Any, serial: str) -> int:
    return int(stack.emulator().counters()["codes_accepted_by_serial"].get(serial, 0))


@pytest.fixture(scope="module")
def pod_identity(stack: Any, kube: Kube, node: Any, release: str, make_identity: Callable[..., SeededIdentity],
                 namespaces: dict[str, str], figures: Figures) -> dict[str, Any]:
    """The release with Pod Identity on, two credentials and their consumer pods (three SDKs each)."""
    team = namespaces["team"]
    images = consumers.build_all(stack)
    rot = make_identity("pi-rot", [team])
    steady = make_identity("pi-steady", [team])
    stack.emulator().set_lifetime_cap(rot.role_arns[0], LIFETIME_CAP)
    started = time.monotonic()
    helm(stack, "upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE, "--create-namespace",
         *release_values(node, lease=RELEASE, extra=PI_VALUES))
    wait_release_ready(kube.core, RELEASE, RELEASE)
    wait_for("the node agent Ready", lambda: any(
        pod_ready(p) for p in kube.core.list_namespaced_pod(RELEASE, label_selector="app.kubernetes.io/component="
                                                                                    "pod-identity-agent").items),
        timeout=180)
    figures.record("pod_identity_upgrade_to_agent_ready_s", round(time.monotonic() - started, 1))
    for which, seeded in (("rot", rot), ("steady", steady)):
        kube.core.create_namespaced_service_account(team, {"metadata": {"name": f"pi-{which}"}})
        kube.create_credential(assumed_role_credential(team, f"pi-{which}", seeded.name, seeded.role_arns[0],
                                                       delivery={"mode": "PodIdentity",
                                                                 "serviceAccounts": [f"pi-{which}"]}))
    for which in ("rot", "steady"):
        kube.wait_ready(team, f"pi-{which}", timeout=120)
    created: dict[str, float] = {}
    for which in ("rot", "steady"):
        for sdk in SDKS:
            container = consumers.container(sdk, images[sdk], sts_endpoint=node.sts_endpoint, interval=5)
            pod = kube.core.create_namespaced_pod(team, snippet_pod(f"pi-{which}-{sdk}", f"pi-{which}", container))
            created[f"pi-{which}-{sdk}"] = pod.metadata.creation_timestamp.timestamp()

    def first_ok(pod: str) -> dict[str, Any] | None:
        return next((line for line in lines(kube, team, pod) if line.get("ok")), None)

    first = {pod: wait_for(f"{pod} printing its ARN", lambda p=pod: first_ok(p), timeout=240) for pod in created}
    figures.record("pod_identity_pod_created_to_first_aws_call_s",
                   {pod: round(line["t"] - created[pod], 1) for pod, line in first.items()})
    return {"team": team, "rot": rot, "steady": steady, "first": first, "created": created, "node": node}


def test_each_sdk_gets_the_bound_roles_credentials_with_no_code_for_this_operator(kube: Kube,
                                                                                  pod_identity: dict[str, Any]) -> None:
    team = pod_identity["team"]
    for which in ("rot", "steady"):
        seeded: SeededIdentity = pod_identity[which]
        role = seeded.role_arns[0].rpartition("/")[2]
        status = kube.credential(team, f"pi-{which}")["status"]
        assert status["delivery"] == {"mode": "PodIdentity", "serviceAccounts": [f"pi-{which}"]}
        assert "accessKeyId" not in status and kube.secret(team, f"pi-{which}") is None
        for sdk in SDKS:
            line = pod_identity["first"][f"pi-{which}-{sdk}"]
            assert line["arn"] == f"arn:aws:sts::{seeded.account}:assumed-role/{role}/{team}@pi-{which}", line
            assert line["sdk"] == sdk


def test_a_rotation_reaches_every_sdk_within_its_refresh_window_without_a_restart(
        kube: Kube, pod_identity: dict[str, Any], figures: Figures) -> None:
    team = pod_identity["team"]
    first = {sdk: pod_identity["first"][f"pi-rot-{sdk}"]["access_key_id"] for sdk in SDKS}

    def rotated(sdk: str) -> dict[str, Any] | None:
        return next((line for line in lines(kube, team, f"pi-rot-{sdk}")
                     if line.get("ok") and line["access_key_id"] != first[sdk]), None)

    # Issued with 300 s: the operator renews about 100 s before expiry; with less than its 18-min margin left the
    # agent serves its copy and refreshes it from the operator in the background (one fetch at a time); botocore
    # (15-min window) and Go/JS (5-min window) are inside their windows from the start, so each takes the agent's
    # new copy at a call soon after the rotation.
    seen = {sdk: wait_for(f"pi-rot-{sdk} using rotated credentials", lambda s=sdk: rotated(s), timeout=LIFETIME_CAP)
            for sdk in SDKS}
    status = kube.credential(team, "pi-rot")["status"]
    for sdk in SDKS:
        pod = kube.core.read_namespaced_pod(f"pi-rot-{sdk}", team)
        assert pod.status.container_statuses[0].restart_count == 0, sdk
        failures = [line for line in lines(kube, team, f"pi-rot-{sdk}") if not line.get("ok")]
        assert not failures, (sdk, failures[:3])
    issued = pod_identity["first"]["pi-rot-python"]["t"]
    figures.record("pod_identity_rotation_seen_after_first_call_s",
                   {sdk: round(line["t"] - issued, 1) for sdk, line in seen.items()})
    assert status["credentialFingerprint"]


def test_the_agent_killed_and_the_leader_killed_cost_no_failed_call_and_no_code(
        stack: Any, kube: Kube, pod_identity: dict[str, Any], figures: Figures) -> None:
    team, steady = pod_identity["team"], pod_identity["steady"]
    spent = codes(stack, steady.mfa_serial)
    def serving_agents() -> list[str]:
        """The agent pods that serve: Running, Ready, not being deleted (a DaemonSet pod the kubelet rejected during
        a rollout, say for the host port still held by its predecessor, stays listed as Failed: not one of them)."""
        pods = kube.core.list_namespaced_pod(RELEASE, label_selector="app.kubernetes.io/component="
                                                                     "pod-identity-agent").items
        return [p.metadata.name for p in pods if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
                and pod_ready(p)]

    serving = wait_for("one agent serving the node", lambda: (agents := serving_agents()) and len(agents) == 1
                       and agents, timeout=120)
    old = serving[0]
    since = time.time()
    kube.core.delete_namespaced_pod(old, RELEASE, grace_period_seconds=0)
    wait_for("a new agent Ready", lambda: [name for name in serving_agents() if name != old], timeout=120)
    figures.record("pod_identity_agent_replaced_s", round(time.time() - since, 1))
    # The two Ready replicas (as the failover suite takes them): one leads, the other is the standby.
    operators = {p.metadata.name for p in wait_release_ready(kube.core, RELEASE, RELEASE)}
    leader = leader_pod(kube, RELEASE, RELEASE, operators)

    with LeaseWatch(kube, RELEASE, RELEASE) as lease:
        sigkill_container(stack, kube.core.read_namespaced_pod(leader, RELEASE))
        killed = time.time()
        # then the pod forced away at once, so the kubelet does not start the container again in the same pod
        kube.core.delete_namespaced_pod(leader, RELEASE, grace_period_seconds=0)
        try:
            successor = wait_for("another replica leading", lambda: lease.successor(leader, RELEASE), timeout=60,
                                 interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nleader {leader} killed at {killed:.1f}; Lease holders {lease.changes}\n"
                                 f"{describe_pods(kube.core, RELEASE)}") from None
    taken = lease.taken_by(successor)
    figures.record("pod_identity_leader_killed_to_new_leader_s", round(taken - killed, 1))
    figures.record("pod_identity_new_leader", "standby" if successor in operators else "replacement")
    # A crash, not a shutdown: the Lease went from the killed leader to its successor, never released between.
    holders = [holder_pod(h, operators | {successor}) for t, h in lease.changes if t <= taken]
    assert holders == [leader, successor], lease.changes
    time.sleep(10)  # the SDKs keep calling (every 5 s) across the new leader's first passes
    for sdk in SDKS:
        after = [line for line in lines(kube, team, f"pi-steady-{sdk}") if line["t"] >= since]
        assert len(after) >= 5, (sdk, after)
        assert all(line.get("ok") for line in after), (sdk, [x for x in after if not x.get("ok")][:3])
    # Agents and SDKs hold the credentials: the new leader issued nothing, so no TOTP code was spent.
    assert codes(stack, steady.mfa_serial) == spent
    # A pod started now is served by the new leader (which holds nothing yet: it issues on the agent's ask).
    images = consumers.build_all(stack)
    started = time.time()
    kube.core.create_namespaced_pod(team, snippet_pod("pi-steady-late", "pi-steady", consumers.container(
        "python", images["python"], sts_endpoint=pod_identity["node"].sts_endpoint, interval=5)))
    line = wait_for("the late pod printing its ARN", lambda: next(
        (x for x in lines(kube, team, "pi-steady-late") if x.get("ok")), None), timeout=120)
    figures.record("pod_identity_after_failover_new_pod_first_call_s", round(line["t"] - started, 1))


def test_no_issued_credential_is_anywhere_in_etcd(stack: Any, pod_identity: dict[str, Any]) -> None:
    """etcd's whole keyspace, read directly (its v3 JSON gateway), holds none of the issued values."""
    issued = [c for which in ("rot", "steady")
              for c in stack.emulator().issued_for_role(pod_identity[which].role_arns[0])]
    assert len(issued) >= 3  # the rotation issued more than one
    request = urllib.request.Request(f"http://127.0.0.1:{Ports.default().etcd_client}/v3/kv/range", method="POST",
                                     data=json.dumps({"key": base64.b64encode(b"\0").decode(),
                                                      "range_end": base64.b64encode(b"\0").decode()}).encode())
    with urllib.request.urlopen(request, timeout=60) as answer:
        kvs = json.loads(answer.read()).get("kvs") or []
    assert len(kvs) > 100  # the whole keyspace, not an empty answer
    blob = b"\n".join(base64.b64decode(kv.get("value", "")) for kv in kvs)
    for cred in issued:
        for field in ("AccessKeyId", "SecretAccessKey", "SessionToken"):
            assert cred[field].encode() not in blob, f"an issued {field} is in etcd"
