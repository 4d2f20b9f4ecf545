"""The Helm chart: lint, render, security settings, least-privilege RBAC, install on the real apiserver."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.layout import Binaries
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA
from tests.e2e.helpers import kubectl

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vault-sts-operator"
SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"


def helm_binary() -> str:
    helm = Binaries.discover().helm
    assert helm is not None, "helm is not built: run devstack/build.sh helm"
    return str(helm)


def render(*sets: str) -> list[dict]:
    args = [helm_binary(), "template", "vault-sts-operator", str(CHART), "--namespace", OPERATOR_NAMESPACE,
            "--kube-version", "1.35.4"]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_chart_crds_are_the_repository_crds():
    # The chart renders its CRDs from files/crds/ (templates/crds.yaml): copies of the repository's crds/.
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        copy = CHART / "files" / "crds" / crd.name
        assert copy.read_bytes() == crd.read_bytes(), f"{crd.name} differs in the chart: cp crds/*.yaml {copy.parent}/"
    assert not (CHART / "crds").exists(), "Helm installs a crds/ folder once and never upgrades it"


def test_helm_lint_is_clean():
    result = subprocess.run([helm_binary(), "lint", "--strict", str(CHART)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_values_schema_refuses_bad_values():
    for bad in ("replicaCount=-1", "logFormat=xml", "vault.auth.method=ldap", "unknownKey=1"):
        result = subprocess.run([helm_binary(), "template", "x", str(CHART), "--kube-version", "1.35.4",
                                 "--set", bad], capture_output=True, text=True, check=False)
        assert result.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_deployment_is_locked_down():
    docs = render("vault.address=https://vault:8200")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert "--peering=vault-sts-operator" in container["args"] and deploy["spec"]["replicas"] > 1
    assert "--vault-address=https://vault:8200" in container["args"]


def test_single_replica_without_peering_recreates():
    docs = render("peering.enabled=false", "replicaCount=1")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(d["kind"] == "ClusterKopfPeering" for d in docs)


def test_rbac_has_no_wildcards_and_never_lists_secrets():
    docs = render()
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert rules
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        if "secrets" in rule["resources"]:
            assert not {"list", "watch"} & set(rule["verbs"])


def test_service_monitor_is_optional():
    assert not any(d["kind"] == "ServiceMonitor" for d in render())
    monitor = next(d for d in render("metrics.serviceMonitor.enabled=true") if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_install_creates_every_object(stack, chart_release):
    for doc in render(f"vault.address={stack.vault_addr}"):
        kind, name = doc["kind"], doc["metadata"]["name"]
        ns = ["-n", doc["metadata"].get("namespace", OPERATOR_NAMESPACE)]
        scoped = kind not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")
        kubectl(stack, "get", kind.lower() if kind != "ClusterKopfPeering" else "clusterkopfpeerings.kopf.dev",
                name, *(ns if scoped else []))


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("get", "secrets", "team-x", True),
        ("create", "secrets", "team-x", True),
        ("list", "secrets", "team-x", False),
        ("watch", "secrets", "team-x", False),
        ("list", "secrets", "", False),
        ("create", "pods", "team-x", False),
        ("delete", "namespaces", "", False),
        ("update", "leases.coordination.k8s.io", OPERATOR_NAMESPACE, True),
        ("update", "leases.coordination.k8s.io", "kube-system", False),
        ("patch", "deployments.apps", "team-x", True),
        ("delete", "deployments.apps", "team-x", False),
        ("patch", "assumedrolecredentials.vaultsts.io --subresource=status", "team-x", True),
        ("delete", "assumedrolecredentials.vaultsts.io", "team-x", False),
        ("create", "mfaidentities.vaultsts.io", "", False),
        ("get", "configmaps", "team-x", False),
        ("create", "serviceaccounts/token", OPERATOR_NAMESPACE, False),
    ],
)
def test_rbac_is_no_more_than_needed(stack, chart_release, verb, resource, namespace, allowed):
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kubectl(stack, "auth", "can-i", verb, *resource.split(), *scope, f"--as={SA}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, result.stdout, result.stderr)
