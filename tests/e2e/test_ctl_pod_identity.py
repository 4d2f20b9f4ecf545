"""`vault-sts-operator pod-identity patch` against the real API server: the strategic-merge patch is accepted
(the API server validates the projected token volume), keeps what the template had, is idempotent (a second run
does not even write), and is refused for a container that gets AWS_ACCESS_KEY_ID from a Secret. No operator and
no node are needed: the workloads have no replicas, or no node to run on."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from devstack.manifests import assumed_role_credential
from vault_sts_operator.ctl import pod_identity as pi

CLI = str(Path(sys.executable).with_name("vault-sts-operator"))


def ctl(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env={**os.environ, **stack.subprocess_env()},
                          timeout=60, check=False)


@pytest.fixture
def namespace(kube: Any, unique: str) -> Iterator[str]:
    name = kube.namespace(f"ctl-pi-{unique}")
    yield name
    with contextlib.suppress(ApiException):
        kube.core.delete_namespace(name)


def pod_template(*containers: dict[str, Any], service_account: str = "billing") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}},
            "spec": {"serviceAccountName": service_account, "containers": list(containers),
                     "nodeSelector": {"vaultsts.io/test": "no-such-node"},
                     "volumes": [{"name": "data", "emptyDir": {}}]}}


def container(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "vaultsts.local/never-pulled:0", **extra}


def template_spec(kube: Any, body: Any) -> dict[str, Any]:
    """The pod template's spec as the API server's JSON (camelCase, unset fields left out)."""
    return dict(kube.api.sanitize_for_serialization(body)["spec"]["template"]["spec"])


def test_patch_sets_up_a_deployment_once_and_a_second_run_writes_nothing(stack, kube, crds, namespace):
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "settings"}, "stringData": {"LOG": "1"}})
    kube.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "billing"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}},
                 "template": pod_template(container("app", envFrom=[{"secretRef": {"name": "settings"}}],
                                                    env=[{"name": "AWS_REGION", "value": "eu-west-1"}]),
                                          container("worker"))}})
    first = ctl(stack, "pod-identity", "patch", "deploy/billing", "-n", namespace)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "patched" in first.stdout
    # no credential names ServiceAccount billing yet: a warning, not a refusal
    assert "403 NotBound" in first.stderr

    deployment = kube.apps.read_namespaced_deployment("billing", namespace)
    spec = template_spec(kube, deployment)
    for each in spec["containers"]:
        values = {e["name"]: e["value"] for e in each["env"]}
        assert values[pi.URI_ENV] == "http://169.254.170.23/v1/credentials"
        assert values[pi.TOKEN_FILE_ENV] == "/var/run/secrets/vaultsts.io/pod-identity/token"
        assert each["volumeMounts"] == [{"name": pi.VOLUME, "mountPath": pi.TOKEN_DIR, "readOnly": True}]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in spec["containers"][0]["env"]
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "settings"}}]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(volumes) == {"data", pi.VOLUME}
    token = volumes[pi.VOLUME]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "vaultsts.io/pod-identity", "expirationSeconds": 3600, "path": "token"}

    kube.create_credential(assumed_role_credential(
        namespace, "billing", "nope", "arn:aws:iam::123456789012:role/billing",
        durationSeconds=3600, delivery={"mode": "PodIdentity", "serviceAccounts": ["billing"]}))
    second = ctl(stack, "pod-identity", "patch", "deployment.apps/billing", "-n", namespace)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "unchanged" in second.stdout and "NotBound" not in second.stderr
    again = kube.apps.read_namespaced_deployment("billing", namespace)
    # Nothing written: the spec's generation and the template are as they were (the resourceVersion is not: the
    # Deployment controller writes the status as the pods come up on the node).
    assert again.metadata.generation == deployment.metadata.generation
    assert again.spec.template == deployment.spec.template


def test_patch_of_one_container_with_a_dry_run_first(stack, kube, namespace):
    kube.apps.create_namespaced_stateful_set(namespace, {
        "metadata": {"name": "db"},
        "spec": {"replicas": 0, "serviceName": "db", "selector": {"matchLabels": {"app": "x"}},
                 "template": pod_template(container("db"), container("backup"))}})
    before = kube.apps.read_namespaced_stateful_set("db", namespace)
    dry = ctl(stack, "pod-identity", "patch", "sts/db", "-n", namespace, "--container", "backup", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "the API server accepted it" in dry.stdout and pi.URI_ENV in dry.stdout
    assert kube.apps.read_namespaced_stateful_set("db", namespace).metadata.generation == before.metadata.generation

    done = ctl(stack, "pod-identity", "patch", "sts/db", "-n", namespace, "--container", "backup")
    assert done.returncode == 0, done.stdout + done.stderr
    spec = template_spec(kube, kube.apps.read_namespaced_stateful_set("db", namespace))
    by_name = {c["name"]: c for c in spec["containers"]}
    assert "env" not in by_name["db"] and "volumeMounts" not in by_name["db"]
    assert [e["name"] for e in by_name["backup"]["env"]] == [pi.URI_ENV, pi.TOKEN_FILE_ENV]

    unknown = ctl(stack, "pod-identity", "patch", "sts/db", "-n", namespace, "--container", "nope")
    assert unknown.returncode == 2 and "no container 'nope'" in unknown.stderr


def test_patch_refuses_a_container_whose_secret_sets_aws_access_key_id(stack, kube, namespace):
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "billing-aws"}, "stringData": {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-a-real-key"}})
    kube.apps.create_namespaced_daemon_set(namespace, {
        "metadata": {"name": "shipper"},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": pod_template(container("app", envFrom=[{"secretRef": {"name": "billing-aws"}}]))}})
    before = kube.apps.read_namespaced_daemon_set("shipper", namespace)
    refused = ctl(stack, "pod-identity", "patch", "ds/shipper", "-n", namespace)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "gets AWS_ACCESS_KEY_ID from Secret billing-aws (envFrom)" in refused.stderr
    assert "win over container credentials" in refused.stderr
    assert "not-a-real-key" not in refused.stdout + refused.stderr
    after = kube.apps.read_namespaced_daemon_set("shipper", namespace)
    assert after.metadata.generation == before.metadata.generation  # (the controller writes the status meanwhile)
    assert after.spec.template == before.spec.template

    missing = ctl(stack, "pod-identity", "patch", "deploy/none", "-n", namespace)
    assert missing.returncode == 3 and "not found" in missing.stderr
    bad = ctl(stack, "pod-identity", "patch", "cronjob/x", "-n", namespace)
    assert bad.returncode == 2
