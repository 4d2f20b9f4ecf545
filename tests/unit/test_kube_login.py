"""In a pod, the operator finds the API server as client-go does: KUBERNETES_SERVICE_HOST/PORT, which the kubelet
sets in every container. kopf's own in-cluster login names https://kubernetes.default.svc, which resolves only
with cluster DNS and the pod's search domains (not with dnsPolicy Default, hostNetwork, or no cluster DNS)."""

from __future__ import annotations

import kopf
import pytest

from vault_sts_operator.clients.kube_rest import in_cluster_server, with_service_host


@pytest.mark.parametrize(("environ", "expected"), [
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
    ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00::1]:6443"),
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),
    ({}, None),
])
def test_in_cluster_server_from_the_service_environment(environ, expected):
    assert in_cluster_server(environ) == expected


def test_the_service_host_replaces_kopfs_dns_name_and_keeps_the_rest():
    info = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t", ca_path="/ca.crt",
                               default_namespace="ns")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    moved = with_service_host(info, env)
    assert moved.server == "https://10.96.0.1:443"
    assert (moved.token, moved.ca_path, moved.default_namespace) == ("t", "/ca.crt", "ns")
    assert with_service_host(info, {}) is info
