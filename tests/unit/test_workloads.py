"""Pure parts of devstack/workloads.py: image references and consumer pod manifests."""

from __future__ import annotations

import pytest

from devstack.workloads import Node, consumer_pod, split_image, workload

NODE = Node(host_ip="10.1.2.3", image="vso.local/vault-sts-operator:abc", vault_addr="http://10.1.2.3:18200",
            sts_endpoint="http://10.1.2.3:18300")


@pytest.mark.parametrize(("ref", "expected"), [
    ("vso.local/vault-sts-operator:abc", ("vso.local/vault-sts-operator", "abc")),
    ("localhost:5000/op:1.2", ("localhost:5000/op", "1.2")),
    ("localhost:5000/op", ("localhost:5000/op", "latest")),
    ("op", ("op", "latest")),
])
def test_split_image(ref, expected):
    assert split_image(ref) == expected


def _env(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_each_consumer_reads_the_secret_its_own_way():
    env_pod = consumer_pod(NODE, "t", "a", "s", "env")
    assert env_pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s"}}]
    assert not any(v.get("secret") for v in env_pod["spec"]["volumes"])
    creds = consumer_pod(NODE, "t", "b", "s", "credentials")
    assert _env(creds)["AWS_SHARED_CREDENTIALS_FILE"] == "/aws/credentials"
    process = consumer_pod(NODE, "t", "c", "s", "process")
    assert _env(process)["AWS_CONFIG_FILE"] == "/consumer/config"
    for pod in (creds, process):
        assert {"name": "aws", "secret": {"secretName": "s"}} in pod["spec"]["volumes"]
        assert "envFrom" not in pod["spec"]["containers"][0]
    with pytest.raises(ValueError, match="unknown way"):
        consumer_pod(NODE, "t", "d", "s", "imds")


def test_workloads_opt_in_to_restarts_by_credential_name():
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        obj = workload(NODE, kind, kind.lower(), "billing")
        assert obj["metadata"]["annotations"] == {"vaultsts.io/restart-on-rotation": "billing"}
        assert ("replicas" in obj["spec"]) == (kind != "DaemonSet")
