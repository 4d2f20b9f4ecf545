"""The leader's EndpointSlice behind the selector-less Pod Identity Service, on the real API server: written once,
left alone while it is right, replaced when another replica's address is in it, and garbage-collected with its
Service (helm uninstall leaves nothing)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.env import StackEnv
from vault_sts_operator.clients.kube_config import default_login
from vault_sts_operator.clients.kube_rest import KubeRest
from vault_sts_operator.services.leader_endpoint import LeaderEndpoint


def test_the_leader_publishes_itself_and_the_slice_goes_with_its_service(stack: StackEnv) -> None:
    namespace = f"le-{uuid.uuid4().hex[:8]}"
    api = stack.api_client()
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_service(namespace, {"metadata": {"name": "pi"}, "spec": {
        "ports": [{"name": "https", "port": 443, "targetPort": 8444}]}})
    os.environ["KUBECONFIG"] = str(stack.kubeconfig)

    async def scenario() -> None:
        rest = KubeRest(default_login())
        try:
            first = LeaderEndpoint(rest, namespace=namespace, service="pi", address="10.244.0.7", port=8444,
                                   leading=lambda: True)
            await first.ensure()
            await first.ensure()  # already right: no write
            assert first.writes == 1
            second = LeaderEndpoint(rest, namespace=namespace, service="pi", address="10.244.0.8", port=8444,
                                    leading=lambda: True)
            await second.ensure()
            assert second.writes == 1
        finally:
            await rest.close()

    try:
        asyncio.run(scenario())
        published = discovery.read_namespaced_endpoint_slice("pi-leader", namespace)
        assert [e.addresses for e in published.endpoints] == [["10.244.0.8"]]
        assert published.metadata.labels["kubernetes.io/service-name"] == "pi"
        assert [(p.name, p.port) for p in published.ports] == [("https", 8444)]
        service = core.read_namespaced_service("pi", namespace)
        assert [o.uid for o in published.metadata.owner_references] == [service.metadata.uid]
        core.delete_namespaced_service("pi", namespace)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                discovery.read_namespaced_endpoint_slice("pi-leader", namespace)
            except ApiException as exc:
                assert exc.status == 404
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the slice outlived its Service")
    finally:
        core.delete_namespace(namespace)
        api.close()
