"""Mode PodIdentity, the operator's side, on the real API server: the endpoint node agents ask, with real
TokenReviews of real bound tokens (TokenRequest for Pod objects on Node objects), the real STS emulator and Vault.

The agents and the SDKs are in tests/node/test_6_pod_identity.py; here the test plays the agent: it presents an
agent token (the agent ServiceAccount in the operator's namespace, bound to a pod on node A) and a pod token, as
the agent does, and checks each refusal of docs/pod-identity.md. Pods here are Pod objects bound to Node objects
that no kubelet runs (nothing needs to run for the API server to bind and review tokens), so this suite needs no
node.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.operator_run import OPERATOR_NAMESPACE, OperatorProcess
from devstack.seed import RoleSpec, SeededIdentity, seed_identity
from tests.e2e.helpers import Kube, wait_for
from tests.e2e.pod_identity_helpers import AGENT_AUDIENCE, POD_AUDIENCE, Agent, Cluster


@pytest.fixture
def cluster(kube: Kube) -> Iterator[Cluster]:
    made = Cluster(kube)
    yield made
    made.cleanup()


@pytest.fixture
def agent(operator: OperatorProcess) -> Agent:
    assert operator.pod_identity_port, "the end-to-end operator runs with --pod-identity"
    return Agent(operator)


@pytest.fixture
def team(kube: Kube, unique: str) -> str:
    return kube.namespace(f"pi-{unique}")


@pytest.fixture
def identity(stack: Any, kube: Kube, team: str, unique: str) -> SeededIdentity:
    seeded = seed_identity(stack, f"pi-{unique}", roles=[RoleSpec(f"app-pi-{unique}")])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team, f"{team}-b"]))
    return seeded


def pod_identity_credential(namespace: str, name: str, identity: SeededIdentity, accounts: list[str],
                            **spec: Any) -> dict[str, Any]:
    return assumed_role_credential(namespace, name, identity.name, identity.role_arns[0],
                                   delivery={"mode": "PodIdentity", "serviceAccounts": accounts}, **spec)


def assume_calls(emulator_admin: Any, role_arn: str) -> int:
    return int(emulator_admin.counters()["calls_by_target"].get(f"AssumeRole {role_arn}", 0))


def test_pods_of_the_bound_service_account_get_the_credentials_and_nothing_reaches_etcd(
        stack: Any, kube: Kube, cluster: Cluster, agent: Agent, team: str, identity: SeededIdentity,
        emulator_admin: Any, issued: Any, unique: str) -> None:
    node_a = cluster.node(f"pi-a-{unique}")
    _agent_pod, agent_token = cluster.agent(f"agent-{unique}", node_a)
    app = cluster.pod(team, "app", "billing", node_a)
    kube.create_credential(pod_identity_credential(team, "billing", identity, ["billing"]))
    body = kube.wait_ready(team, "billing")
    status = body["status"]
    assert status["delivery"] == {"mode": "PodIdentity", "serviceAccounts": ["billing"]}
    assert "accessKeyId" not in status and "secretName" not in status
    assert kube.secret(team, "billing") is None

    calls = assume_calls(emulator_admin, identity.role_arns[0])
    answer = agent.granted(agent_token, cluster.token(team, "billing", POD_AUDIENCE, app))
    issued.values.update({answer["SecretAccessKey"], answer["Token"]})
    assert set(answer) >= {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
    assert answer["credential"] == f"{team}/billing" and answer["AccountId"] == identity.account
    assert status["credentialFingerprint"] == hashlib.sha256(answer["AccessKeyId"].encode()).hexdigest()[:16]
    assert status["expiration"] == answer["Expiration"]
    # Issued when the binding became Ready, not at the pod's request: the answer spends no STS call.
    assert assume_calls(emulator_admin, identity.role_arns[0]) == calls
    sts = boto3.client("sts", endpoint_url=stack.sts_endpoint, region_name="us-east-1",
                       aws_access_key_id=answer["AccessKeyId"], aws_secret_access_key=answer["SecretAccessKey"],
                       aws_session_token=answer["Token"])
    arn = sts.get_caller_identity()["Arn"]
    assert f":assumed-role/app-pi-{unique}/{team}@billing" in arn, arn
    # A second pod of the same ServiceAccount gets the same credentials (per credential, not per pod).
    other = cluster.pod(team, "app-2", "billing", node_a)
    again = agent.granted(agent_token, cluster.token(team, "billing", POD_AUDIENCE, other))
    assert again["AccessKeyId"] == answer["AccessKeyId"]
    assert assume_calls(emulator_admin, identity.role_arns[0]) == calls
    # Neither the key id nor anything secret went into an Event of the credential.
    for event in kube.events(team, "billing"):
        assert answer["AccessKeyId"] not in event.message


def test_every_refusal_has_its_code_and_spends_nothing(
        kube: Kube, cluster: Cluster, agent: Agent, team: str, identity: SeededIdentity, emulator_admin: Any,
        unique: str) -> None:
    node_a, node_b = cluster.node(f"pi-ra-{unique}"), cluster.node(f"pi-rb-{unique}")
    agent_pod, agent_token = cluster.agent(f"agent-r-{unique}", node_a)
    other_ns = kube.namespace(f"{team}-b")
    kube.create_credential(pod_identity_credential(team, "billing", identity, ["billing"]))
    kube.wait_ready(team, "billing")
    here = cluster.pod(team, "app", "billing", node_a)
    there = cluster.pod(team, "app-b", "billing", node_b)
    unbound = cluster.pod(team, "stranger", "stranger", node_a)
    elsewhere = cluster.pod(other_ns, "app", "billing", node_a)
    calls, codes = (assume_calls(emulator_admin, identity.role_arns[0]),
                    emulator_admin.counters()["codes_accepted_by_serial"].get(identity.mfa_serial, 0))
    cases = {
        "unbound ServiceAccount": (agent_token, cluster.token(team, "stranger", POD_AUDIENCE, unbound),
                                   403, "NotBound"),
        "another audience": (agent_token, cluster.token(team, "billing", "vault", here), 401, "PodTokenInvalid"),
        "another namespace, same ServiceAccount name": (
            agent_token, cluster.token(other_ns, "billing", POD_AUDIENCE, elsewhere), 403, "NotBound"),
        "a pod on another node": (agent_token, cluster.token(team, "billing", POD_AUDIENCE, there),
                                  403, "NodeMismatch"),
        "a token bound to no pod": (agent_token, cluster.token(team, "billing", POD_AUDIENCE), 403, "NotPodBound"),
        "a pod's token as the agent's": (cluster.token(team, "billing", AGENT_AUDIENCE, here),
                                         cluster.token(team, "billing", POD_AUDIENCE, here),
                                         401, "AgentUnauthenticated"),
        "the agent's token for the pod audience": (cluster.token(OPERATOR_NAMESPACE, "pod-identity-agent",
                                                                 POD_AUDIENCE, agent_pod),
                                                   cluster.token(team, "billing", POD_AUDIENCE, here),
                                                   401, "AgentUnauthenticated"),
        "a forged token": (agent_token, "eyJhbGciOiJub25lIn0.eyJhdWQiOiJ2YXVsdHN0cy5pby9wb2QtaWRlbnRpdHkifQ.",
                           401, "PodTokenInvalid"),
    }
    for case, (as_agent, as_pod, status, code) in cases.items():
        answer = agent.ask(as_agent, as_pod)
        assert answer == (status, {"code": code, "message": answer[1].get("message")}), case
        assert "AccessKeyId" not in answer[1]
    # A deleted pod's token stops working (the API server checks the bound pod still exists).
    token = cluster.token(team, "billing", POD_AUDIENCE, here)
    assert agent.ask(agent_token, token)[0] == 200
    kube.core.delete_namespaced_pod("app", team, grace_period_seconds=0)
    wait_for("the deleted pod's token refused",
             lambda: agent.ask(agent_token, token)[0] == 401, timeout=90, interval=2)
    assert assume_calls(emulator_admin, identity.role_arns[0]) == calls
    assert emulator_admin.counters()["codes_accepted_by_serial"].get(identity.mfa_serial, 0) == codes


def test_the_identity_decides_whether_its_tenants_may_use_the_mode(
        stack: Any, kube: Kube, cluster: Cluster, agent: Agent, unique: str, emulator_admin: Any) -> None:
    team = kube.namespace(f"pi-s-{unique}")
    seeded = seed_identity(stack, f"pi-s-{unique}", roles=[RoleSpec(f"app-pis-{unique}")])
    manifest = mfa_identity(stack, seeded, allowed_namespaces=[team])
    manifest["spec"].setdefault("limits", {})["deliveryModes"] = ["Secret"]
    kube.apply_identity(manifest)
    node = cluster.node(f"pi-s-{unique}")
    _agent_pod, agent_token = cluster.agent(f"agent-s-{unique}", node)
    kube.create_credential(pod_identity_credential(team, "billing", seeded, ["billing"]))
    failing = kube.wait_reason(team, "billing", "NotAllowed", ready=False)
    assert "PodIdentity is not allowed" in failing["message"]
    app = cluster.pod(team, "app", "billing", node)
    status, body = agent.ask(agent_token, cluster.token(team, "billing", POD_AUDIENCE, app))
    assert (status, body["code"]) == (403, "NotAllowed"), body
    assert assume_calls(emulator_admin, seeded.role_arns[0]) == 0


def test_two_credentials_naming_one_service_account_the_older_serves(
        kube: Kube, team: str, identity: SeededIdentity) -> None:
    kube.create_credential(pod_identity_credential(team, "first", identity, ["shared"]))
    kube.wait_ready(team, "first")
    time.sleep(1.1)  # creationTimestamp has whole seconds
    kube.create_credential(pod_identity_credential(team, "second", identity, ["shared", "own"]))
    failing = kube.wait_reason(team, "second", "ServiceAccountConflict", ready=False)
    assert "shared (served by first)" in failing["message"]


def test_switching_from_a_secret_deletes_the_secret_and_back_writes_it(
        kube: Kube, team: str, identity: SeededIdentity) -> None:
    kube.create_credential(assumed_role_credential(team, "switch", identity.name, identity.role_arns[0]))
    kube.wait_ready(team, "switch")
    assert kube.secret(team, "switch") is not None
    kube.patch_credential(team, "switch", {"spec": {"delivery": {"mode": "PodIdentity",
                                                                  "serviceAccounts": ["switch"]}}})
    wait_for("the Secret deleted after the switch", lambda: kube.secret(team, "switch") is None, timeout=60)
    status = kube.wait_ready(team, "switch")["status"]
    wait_for("the status in mode PodIdentity",
             lambda: (kube.credential(team, "switch")["status"].get("delivery") or {}).get("mode") == "PodIdentity")
    status = kube.credential(team, "switch")["status"]
    assert "accessKeyId" not in status and "secretName" not in status
    kube.patch_credential(team, "switch", {"spec": {"delivery": None}})
    wait_for("the Secret written again", lambda: kube.secret(team, "switch") is not None, timeout=60)
    wait_for("the status in mode Secret", lambda: "delivery" not in kube.credential(team, "switch")["status"]
             and kube.credential(team, "switch")["status"].get("secretName") == "switch")


def test_a_restarted_operator_issues_only_when_asked_and_a_rotation_reaches_the_agent(
        kube: Kube, cluster: Cluster, agent: Agent, operator: OperatorProcess, team: str, identity: SeededIdentity,
        emulator_admin: Any, issued: Any, unique: str) -> None:
    node = cluster.node(f"pi-r-{unique}")
    _agent_pod, agent_token = cluster.agent(f"agent-rs-{unique}", node)
    app = cluster.pod(team, "app", "billing", node)
    pod_token = cluster.token(team, "billing", POD_AUDIENCE, app)
    kube.create_credential(pod_identity_credential(team, "billing", identity, ["billing"]))
    kube.wait_ready(team, "billing")
    first = agent.granted(agent_token, pod_token)
    issued.values.update({first["SecretAccessKey"], first["Token"]})
    role = identity.role_arns[0]

    # A rotation on demand: new credentials, a new fingerprint, the agent's next ask gets them.
    kube.patch_credential(team, "billing", {"metadata": {"annotations": {"vaultsts.io/rotate": "1"}}})
    def rotated_answer() -> dict[str, Any] | None:
        answer = agent.granted(agent_token, pod_token)
        return answer if answer["AccessKeyId"] != first["AccessKeyId"] else None
    rotated = wait_for("the rotated credentials", rotated_answer, timeout=60, interval=1)
    issued.values.update({rotated["SecretAccessKey"], rotated["Token"]})
    fingerprint = hashlib.sha256(rotated["AccessKeyId"].encode()).hexdigest()[:16]
    wait_for("the status names the new fingerprint",
             lambda: kube.credential(team, "billing")["status"].get("credentialFingerprint") == fingerprint)
    kube.wait_event(team, "billing", "Rotated", lambda e: e.reason == "Rotated")

    # A restart holds nothing and issues nothing until an agent asks (the status says the credentials are valid).
    calls = assume_calls(emulator_admin, role)
    operator.restart()
    time.sleep(5)
    assert assume_calls(emulator_admin, role) == calls
    assert (kube.ready(team, "billing") or {}).get("status") == "True"
    after = agent.granted(agent_token, pod_token)
    issued.values.update({after["SecretAccessKey"], after["Token"]})
    assert after["AccessKeyId"] not in (first["AccessKeyId"], rotated["AccessKeyId"])
    assert assume_calls(emulator_admin, role) == calls + 1
