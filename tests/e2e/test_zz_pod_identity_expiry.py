"""An expired pod token is refused by the operator (the API server's TokenReview, 60 s of leeway past `exp`), while
a fresh token of the same pod is served: expiry alone decides. The token was minted when the session started
(tests/e2e/conftest.py `early_pod_token`); this module runs near the end and waits only for what is left."""

from __future__ import annotations

import time
from typing import Any

import pytest

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.operator_run import OperatorProcess
from devstack.seed import RoleSpec, seed_identity
from tests.e2e.conftest import EarlyPodToken
from tests.e2e.helpers import Kube
from tests.e2e.pod_identity_helpers import POD_AUDIENCE, Agent

LEEWAY = 60  # go-jose's DefaultLeeway, which the API server's validation allows past exp


@pytest.mark.timeout(900)  # run alone, it waits out the token's 600 s and the API server's 60 s of leeway
def test_an_expired_pod_token_is_refused_and_a_fresh_one_of_the_same_pod_is_served(
        stack: Any, kube: Kube, operator: OperatorProcess, early_pod_token: EarlyPodToken, emulator_admin: Any,
        unique: str) -> None:
    early = early_pod_token
    seeded = seed_identity(stack, f"pi-x-{unique}", roles=[RoleSpec(f"app-pix-{unique}")])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[early.namespace]))
    kube.create_credential(assumed_role_credential(early.namespace, "billing", seeded.name, seeded.role_arns[0],
                                                   delivery={"mode": "PodIdentity", "serviceAccounts": ["billing"]}))
    kube.wait_ready(early.namespace, "billing")
    cluster = early.cluster
    _agent_pod, agent_token = cluster.agent(f"agent-x-{unique}", early.pod.spec.node_name)
    agent = Agent(operator)
    fresh = cluster.token(early.namespace, "billing", POD_AUDIENCE, early.pod)
    assert agent.granted(agent_token, fresh)["credential"] == f"{early.namespace}/billing"
    left = early.expires + LEEWAY + 5 - time.time()
    if left > 0:
        time.sleep(left)
    status, body = agent.ask(agent_token, early.token)
    assert (status, body["code"]) == (401, "PodTokenInvalid"), body
    assert agent.ask(agent_token, fresh)[0] == 200
