"""What platform teams set on a chart: every value renders where it should and the schema refuses nonsense.

Rendered with the real ``helm template`` (values from a file, as users pass them with ``-f``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.test_chart import CHART, helm_binary

RELEASE = "vault-sts-operator"


def render(values: dict[str, Any] | None = None, tmp_path: Path | None = None, release: str = RELEASE,
           check: bool = True) -> list[dict[str, Any]]:
    args = [helm_binary(), "template", release, str(CHART), "--namespace", "vso-system", "--kube-version", "1.35.4"]
    if values:
        assert tmp_path is not None
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    out = subprocess.run(args, capture_output=True, text=True, check=check)
    if not check and out.returncode:
        raise ValueError(out.stderr)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = by_kind(docs, "Deployment")
    return deploy["spec"]["template"]["spec"]


def refused(values: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ValueError) as info:
        render(values, tmp_path, check=False)
    return str(info.value)


def test_proxy_and_ca_bundle_through_extra_env_volumes_and_args(tmp_path):
    values = {
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"},
                     {"name": "NO_PROXY", "value": ".svc,.cluster.local,10.0.0.0/8"},
                     {"name": "AWS_CA_BUNDLE", "value": "/etc/corp-ca/ca.pem"}],
        "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
        "extraArgs": ["--restart-debounce=30"],
        "logLevel": "debug",
    }
    pod = pod_spec(render(values, tmp_path))
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy.corp:3128" and env["AWS_CA_BUNDLE"] == "/etc/corp-ca/ca.pem"
    assert "POD_NAMESPACE" in env and env["TMPDIR"] == "/tmp"  # the chart's own stay
    assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in container["volumeMounts"]
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert "--log-level=debug" in container["args"]
    assert container["args"][-1] == "--restart-debounce=30"  # extraArgs come last: they can override
    assert "--log-level" not in " ".join(pod_spec(render())["containers"][0]["args"])


def test_extra_values_are_checked_by_the_schema(tmp_path):
    for bad in ({"extraArgs": ["run"]}, {"extraEnv": [{"value": "x"}]}, {"extraVolumeMounts": [{"name": "x"}]},
                {"logLevel": "trace"}, {"image": {"repository": "r", "digest": "latest"}},
                {"podDisruptionBudget": {"enabled": True, "minAvailible": 1}},
                {"topologySpreadConstraints": [{"maxSkew": 1}]}, {"crds": {"enable": True}},
                {"fullnameOverride": "Bad_Name"}, {"networkPolicy": {"enabled": True, "ingress": []}}):
        assert "values don't meet the specifications of the schema" in refused(bad, tmp_path), bad


def test_pod_disruption_budget_on_by_default_with_two_replicas(tmp_path):
    (pdb,) = by_kind(render(), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == pod_selector(render())
    single = render({"replicaCount": 1, "leaderElection": {"enabled": False}}, tmp_path)
    assert not by_kind(single, "PodDisruptionBudget")
    (pdb,) = by_kind(render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}, tmp_path),
                     "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    assert not by_kind(render({"podDisruptionBudget": {"enabled": False}}, tmp_path), "PodDisruptionBudget")


def pod_selector(docs: list[dict[str, Any]]) -> dict[str, str]:
    (deploy,) = by_kind(docs, "Deployment")
    return deploy["spec"]["selector"]["matchLabels"]


def test_topology_spread_constraints_select_the_release_pods(tmp_path):
    spread = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"},
              {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"custom": "yes"}}}]
    docs = render({"topologySpreadConstraints": spread}, tmp_path)
    rendered = pod_spec(docs)["topologySpreadConstraints"]
    assert rendered[0] == {**spread[0], "labelSelector": {"matchLabels": pod_selector(docs)}}
    assert rendered[1] == spread[1]
    assert "topologySpreadConstraints" not in pod_spec(render())


def test_security_contexts_default_restricted_and_overridable_for_openshift(tmp_path):
    pod = pod_spec(render())
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # OpenShift's restricted SCC assigns a uid from the namespace's range: null removes ours.
    values = {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
              "containerSecurityContext": {"runAsUser": 1000770000}}
    pod = pod_spec(render(values, tmp_path))
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container_sc = pod["containers"][0]["securityContext"]
    assert container_sc["runAsUser"] == 1000770000 and container_sc["capabilities"] == {"drop": ["ALL"]}


def test_network_policy_is_optional_and_opens_only_the_operator_ports(tmp_path):
    assert not by_kind(render(), "NetworkPolicy")
    scraper = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    docs = render({"networkPolicy": {"enabled": True, "metricsFrom": scraper}}, tmp_path)
    (policy,) = by_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == pod_selector(docs)
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"][0] == {"ports": [{"port": 8000, "protocol": "TCP"}], "from": scraper}
    assert spec["ingress"][1] == {"ports": [{"port": 8080, "protocol": "TCP"}]}
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 8200}


def test_fullname_override_and_common_labels_reach_every_object(tmp_path):
    docs = render({"fullnameOverride": "sts-broker", "commonLabels": {"team": "platform", "cost-center": "42"},
                   "metrics": {"serviceMonitor": {"enabled": True}}}, tmp_path)
    assert len(docs) > 10
    for doc in docs:
        name = doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["team"] == "platform", (doc["kind"], name)
        if doc["kind"] != "CustomResourceDefinition":
            assert name.startswith("sts-broker"), (doc["kind"], name)
    assert pod_spec(docs)["serviceAccountName"] == "sts-broker"


def test_image_digest_wins_over_the_tag(tmp_path):
    assert pod_spec(render())["containers"][0]["image"] == "vault-sts-operator:" + chart_meta()["appVersion"]
    digest = "sha256:" + "ab" * 32
    image = pod_spec(render({"image": {"repository": "registry.corp/vso", "tag": "9.9.9", "digest": digest}},
                            tmp_path))["containers"][0]["image"]
    assert image == f"registry.corp/vso@{digest}"


def chart_meta() -> dict[str, Any]:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_no_placeholder_urls_in_the_chart():
    meta = chart_meta()
    assert "home" not in meta and "sources" not in meta  # the project has no public home yet
    for path in CHART.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for placeholder in ("ghcr.io/vault-sts-operator", "example.com/", "github.com/vault-sts-operator"):
                assert placeholder not in text, (path, placeholder)


def test_crds_are_templates_kept_on_uninstall_by_default(tmp_path):
    crds = by_kind(render(), "CustomResourceDefinition")
    sources = {doc["metadata"]["name"]: doc for path in sorted((CHART / "files" / "crds").glob("*.yaml"))
               for doc in yaml.safe_load_all(path.read_text()) if doc}
    assert sorted(c["metadata"]["name"] for c in crds) == sorted(sources)
    assert {"assumedrolecredentials.vaultsts.io", "mfaidentities.vaultsts.io"} == set(sources)
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        source = sources[crd["metadata"]["name"]]
        assert crd["spec"] == source["spec"]  # content untouched: only labels and the annotation added
        assert source["metadata"].get("labels", {}).items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    unkept = by_kind(render({"crds": {"keep": False}}, tmp_path), "CustomResourceDefinition")
    assert unkept and all("helm.sh/resource-policy" not in c["metadata"].get("annotations", {}) for c in unkept)
    assert not by_kind(render({"crds": {"enabled": False}}, tmp_path), "CustomResourceDefinition")


def test_aggregated_roles_give_app_teams_credentials_and_nobody_identities(tmp_path):
    roles = {r["metadata"]["name"]: r for r in by_kind(render(), "ClusterRole")}
    view, edit, reader = (roles[f"{RELEASE}-{s}"] for s in ("view", "edit", "identity-reader"))

    def aggregated(role: dict[str, Any]) -> set[str]:
        return {k.rsplit("aggregate-to-", 1)[1] for k, v in role["metadata"]["labels"].items()
                if "aggregate-to-" in k and v == "true"}

    assert aggregated(view) == {"view", "edit", "admin", "cluster-reader"}
    assert aggregated(edit) == {"edit", "admin"}
    assert aggregated(reader) == {"cluster-reader"}
    assert {v for r in view["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
    assert all(r["resources"] == ["assumedrolecredentials"] for r in view["rules"] + edit["rules"])
    assert all(r["resources"] == ["mfaidentities"] and set(r["verbs"]) == {"get", "list", "watch"}
               for r in reader["rules"])
    off = by_kind(render({"rbac": {"aggregateClusterRoles": False}}, tmp_path), "ClusterRole")
    assert sorted(r["metadata"]["name"] for r in off) == [RELEASE, f"{RELEASE}-metrics-reader"]


def test_service_monitor_honours_the_operator_labels(tmp_path):
    (monitor,) = by_kind(render({"metrics": {"serviceMonitor": {"enabled": True}}}, tmp_path), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_values_schema_lists_every_default_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])
