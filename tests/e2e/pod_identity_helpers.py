"""What the Pod Identity end-to-end tests play: a node agent (its two tokens, its request) and the cluster objects
tokens are bound to (Node and Pod objects no kubelet runs: the API server binds and reviews tokens all the same)."""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.operator_run import OPERATOR_NAMESPACE, OperatorProcess
from tests.e2e.helpers import Kube, wait_for

POD_AUDIENCE = "vaultsts.io/pod-identity"
AGENT_AUDIENCE = "vaultsts.io/pod-identity-agent"
AGENT_ACCOUNT = "pod-identity-agent"  # the end-to-end operator's --pod-identity-agent-service-account


class Agent:
    """What a node agent sends the operator: its own token and the pod's (docs/design/pod-identity.md 4.2)."""

    def __init__(self, operator: OperatorProcess) -> None:
        self.url = f"https://127.0.0.1:{operator.pod_identity_port}/v1/pod-identity/credentials"
        self.context = ssl.create_default_context()
        self.context.check_hostname = False  # the test operator's certificate is self-signed
        self.context.verify_mode = ssl.CERT_NONE

    def ask(self, agent_token: str, pod_token: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.url, method="POST", data=json.dumps({"token": pod_token}).encode(),
                                         headers={"Authorization": f"Bearer {agent_token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def granted(self, agent_token: str, pod_token: str, timeout: float = 30.0) -> dict[str, Any]:
        """Asked as an agent does: again after a 503 (the first ask wakes the issue, later ones find it)."""
        last: tuple[int, dict[str, Any]] = (0, {})

        def answered() -> bool:
            nonlocal last
            last = self.ask(agent_token, pod_token)
            return last[0] != 503
        wait_for("an answer other than 503", answered, timeout=timeout, interval=0.3)
        assert last[0] == 200, last
        return last[1]


class Cluster:
    """Nodes, pods and bound tokens made through the admin client."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.nodes: list[str] = []
        self.pods: list[tuple[str, str]] = []

    def node(self, name: str) -> str:
        try:
            self.kube.core.create_node({"metadata": {"name": name, "labels": {"vaultsts.io/test": "fake-node"}}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.nodes.append(name)
        return name

    def service_account(self, namespace: str, name: str) -> None:
        try:
            self.kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def pod(self, namespace: str, name: str, service_account: str, node: str) -> client.V1Pod:
        """A Pod object bound to `node` (never run: no kubelet serves that node)."""
        self.service_account(namespace, service_account)
        pod = self.kube.core.create_namespaced_pod(namespace, {
            "metadata": {"name": name},
            "spec": {"serviceAccountName": service_account, "nodeName": node, "automountServiceAccountToken": False,
                     # The node never reports Ready: no eviction of its pods (their tokens must stay bound).
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "app", "image": "vaultsts.local/never-pulled:0"}]}})
        self.pods.append((namespace, name))
        return pod

    def token(self, namespace: str, service_account: str, audience: str, pod: client.V1Pod | None = None,
              seconds: int = 3600) -> str:
        bound = None if pod is None else client.V1BoundObjectReference(
            api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid)
        spec = client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=seconds, bound_object_ref=bound)
        answer = self.kube.core.create_namespaced_service_account_token(
            service_account, namespace, client.AuthenticationV1TokenRequest(spec=spec))
        return str(answer.status.token)

    def agent(self, name: str, node: str) -> tuple[client.V1Pod, str]:
        """An agent pod on `node` (the agent ServiceAccount in the operator's namespace) and its own token."""
        pod = self.pod(OPERATOR_NAMESPACE, name, AGENT_ACCOUNT, node)
        return pod, self.token(OPERATOR_NAMESPACE, AGENT_ACCOUNT, AGENT_AUDIENCE, pod)

    def cleanup(self) -> None:
        for namespace, name in self.pods:
            with contextlib.suppress(ApiException):
                self.kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        for name in self.nodes:
            with contextlib.suppress(ApiException):
                self.kube.core.delete_node(name)


