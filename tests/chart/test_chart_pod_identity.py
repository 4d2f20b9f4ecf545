"""The chart's Pod Identity objects (issue 20; docs/design/pod-identity.md 5.4, 5.5, 7): off by default; on, the
node agent's DaemonSet (hostNetwork, NET_ADMIN / NET_BIND_SERVICE only, no API token), the selector-less Service,
one CA shared by the operator's Secret and the agents' ConfigMap, the operator's arguments and least-privilege RBAC.
Rendered with the real ``helm template``; the last test renders against the stack's apiserver (``lookup``) and
has it validate every object (server-side dry run, nothing created)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devstack.env import StackEnv
from tests.chart.test_chart import CHART, helm_binary
from tests.chart.test_chart_platform import RELEASE, by_kind, pod_spec, refused, render
from tests.conftest import helm
from tests.e2e.helpers import kubectl

NS = "vso-system"
ON: dict[str, Any] = {"podIdentity": {"enabled": True}}
SERVICE = f"{RELEASE}-pod-identity"
AGENT = f"{RELEASE}-agent"
TLS_SECRET = f"{RELEASE}-pod-identity-tls"
CA_CONFIGMAP = f"{RELEASE}-pod-identity-ca"
CERT_DIR = "/var/run/secrets/vault-sts-operator-pod-identity"
OPERATOR_ARGS = [
    "--pod-identity",
    "--pod-identity-port=8444",
    f"--pod-identity-cert-dir={CERT_DIR}",
    "--pod-identity-audience=vaultsts.io/pod-identity",
    "--pod-identity-agent-audience=vaultsts.io/pod-identity-agent",
    f"--pod-identity-agent-service-account={AGENT}",
    f"--pod-identity-service={SERVICE}",
    "--sts-rate=100",
]
AGENT_ARGS = [
    "agent", "serve",
    "--listen=169.254.170.23:80",
    "--probe-listen=127.0.0.1:8086",
    "--operator-service-env=VAULT_STS_OPERATOR_POD_IDENTITY",
    f"--server-name={SERVICE}.{NS}.svc",
    "--ca-file=/etc/vault-sts-agent/ca/ca.crt",
    "--token-file=/var/run/secrets/vaultsts.io/agent/token",
    "--audience=vaultsts.io/pod-identity",
    "--revalidate-seconds=300",
    "--refresh-margin-seconds=1080",
    "--rate=1000",
    "--burst=500",
    "--max-cache-entries=10000",
    "--log-format=json",  # the operator's logFormat (and its logLevel when set)
]
ROOT_WITH = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
             "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def agent_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (daemonset,) = by_kind(docs, "DaemonSet")
    return dict(daemonset["spec"]["template"]["spec"])


def operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(pod_spec(docs)["containers"][0])


def pod_identity_objects(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["kind"], d["metadata"]["name"]) for d in docs
            if d["metadata"]["name"] in (SERVICE, AGENT, TLS_SECRET, CA_CONFIGMAP) or d["kind"] == "DaemonSet"]


def test_off_by_default_renders_nothing_of_it(tmp_path):
    for docs in (render(), render({"networkPolicy": {"enabled": True}, "metrics": {"secure": False}}, tmp_path)):
        assert pod_identity_objects(docs) == []
        container = operator(docs)
        assert not [a for a in container["args"] if a.startswith(("--pod-identity", "--sts-rate"))]
        assert {e["name"] for e in container["env"]}.isdisjoint({"POD_IP", "POD_NAME"})
        assert [p["name"] for p in container["ports"]] == ["metrics", "health"]
        assert not [v for v in pod_spec(docs)["volumes"] if v["name"] == "pod-identity-tls"]
        rules = [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
        assert not [r for r in rules if "endpointslices" in r.get("resources", [])]
    # metrics.secure=false and no Pod Identity: no TokenReview either
    assert not [r for r in rules if "tokenreviews" in r.get("resources", [])]
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [8000, 8080]


def test_agent_daemonset_is_locked_down(tmp_path):
    docs = render(ON, tmp_path)
    (daemonset,) = by_kind(docs, "DaemonSet")
    assert daemonset["metadata"]["name"] == AGENT and daemonset["metadata"]["namespace"] == NS
    assert daemonset["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}
    pod = agent_pod(docs)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == AGENT and pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is True  # the kubelet's <SERVICE>_SERVICE_HOST: no cluster DNS needed
    assert pod["priorityClassName"] == "system-node-critical" and pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    (init,) = pod["initContainers"]
    assert init["name"] == "init-link" and "command" not in init  # the image's entrypoint: vault-sts-operator
    assert init["args"] == ["agent", "init-link", "--link=vaultsts-pi0", "--address=169.254.170.23/32",
                            "--log-format=json"]
    assert init["securityContext"] == {**ROOT_WITH, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}
    assert "privileged" not in init["securityContext"]
    (agent,) = pod["containers"]
    assert agent["name"] == "agent" and "command" not in agent
    assert agent["args"] == AGENT_ARGS
    assert agent["securityContext"] == {**ROOT_WITH, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    assert "ports" not in agent  # a hostNetwork port would be a hostPort: scheduling conflicts on port 80
    assert agent["livenessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/healthz", "port": 8086}
    assert agent["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/readyz", "port": 8086}
    resources = {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "96Mi"}}
    assert agent["resources"] == resources and init["resources"] == resources
    image = operator(docs)["image"]
    assert agent["image"] == init["image"] == image and agent["imagePullPolicy"] == "IfNotPresent"


def test_agent_holds_one_token_of_its_own_audience_and_no_key(tmp_path):
    docs = render(ON, tmp_path)
    pod = agent_pod(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["agent-token"]["projected"]["sources"] == [{"serviceAccountToken": {
        "path": "token", "audience": "vaultsts.io/pod-identity-agent", "expirationSeconds": 3600}}]
    assert volumes["operator-ca"] == {"name": "operator-ca", "configMap": {"name": CA_CONFIGMAP}}
    assert not [v for v in pod["volumes"] if "secret" in v]  # the serving key never reaches a node's agent
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/var/run/secrets/vaultsts.io/agent"] == {"name": "agent-token", "readOnly": True,
                                                            "mountPath": "/var/run/secrets/vaultsts.io/agent"}
    assert mounts["/etc/vault-sts-agent/ca"]["name"] == "operator-ca"
    account = named(docs, "ServiceAccount", AGENT)
    assert account["automountServiceAccountToken"] is False
    # no API rights: nothing binds the agent's ServiceAccount
    for binding in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        assert AGENT not in [s["name"] for s in binding["subjects"]], binding["metadata"]["name"]


def test_agent_pods_are_not_selected_as_operator_pods(tmp_path):
    docs = render(ON, tmp_path)
    labels = by_kind(docs, "DaemonSet")[0]["spec"]["template"]["metadata"]["labels"]
    (deploy,) = by_kind(docs, "Deployment")
    selectors = [deploy["spec"]["selector"]["matchLabels"], by_kind(docs, "PodDisruptionBudget")[0]["spec"]
                 ["selector"]["matchLabels"], named(docs, "Service", f"{RELEASE}-metrics")["spec"]["selector"]]
    for selector in selectors:
        assert not selector.items() <= labels.items(), selector
    assert by_kind(docs, "DaemonSet")[0]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_ipv6_address_other_link_and_image(tmp_path):
    digest = "sha256:" + "cd" * 32
    docs = render({"podIdentity": {"enabled": True, "agent": {
        "addresses": ["169.254.170.23", "fd00:ec2::23"], "linkName": "pi1", "probePort": 9086,
        "image": {"repository": "registry.corp/vso-agent", "digest": digest, "pullPolicy": "Always"}}},
        "logFormat": "text", "logLevel": "debug"}, tmp_path)
    pod = agent_pod(docs)
    assert pod["initContainers"][0]["args"][2:5] == ["--link=pi1", "--address=169.254.170.23/32",
                                                     "--address=fd00:ec2::23/128"]
    args = pod["containers"][0]["args"]
    assert args[2:5] == ["--listen=169.254.170.23:80", "--listen=[fd00:ec2::23]:80", "--probe-listen=127.0.0.1:9086"]
    assert args[-2:] == ["--log-format=text", "--log-level=debug"]
    assert pod["initContainers"][0]["args"][-1] == "--log-format=text"
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["port"] == 9086
    assert pod["containers"][0]["image"] == f"registry.corp/vso-agent@{digest}"
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    # the operator's image digest reaches the agent too when no agent image is set
    docs = render({**ON, "image": {"repository": "registry.corp/vso", "digest": digest}}, tmp_path)
    assert agent_pod(docs)["containers"][0]["image"] == f"registry.corp/vso@{digest}"


def test_service_has_no_selector(tmp_path):
    service = named(render(ON, tmp_path), "Service", SERVICE)
    assert "selector" not in service["spec"] and service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": 8444, "protocol": "TCP"}]


def _pem(doc: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(doc["data"][key])


def test_tls_secret_and_ca_configmap_share_one_ca(tmp_path):
    docs = render(ON, tmp_path)
    secret = named(docs, "Secret", TLS_SECRET)
    assert secret["type"] == "kubernetes.io/tls" and sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    configmap = named(docs, "ConfigMap", CA_CONFIGMAP)
    assert sorted(configmap["data"]) == ["ca.crt"]  # the agents get the CA, never the key
    ca = x509.load_pem_x509_certificate(configmap["data"]["ca.crt"].encode())
    assert ca == x509.load_pem_x509_certificate(_pem(secret, "ca.crt"))
    cert = x509.load_pem_x509_certificate(_pem(secret, "tls.crt"))
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert sorted(names) == sorted([SERVICE, f"{SERVICE}.{NS}", f"{SERVICE}.{NS}.svc",
                                    f"{SERVICE}.{NS}.svc.cluster.local"])
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3649
    key = serialization.load_pem_private_key(_pem(secret, "tls.key"), password=None)
    spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    # the operator mounts exactly that Secret, read-only, where --pod-identity-cert-dir points
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["pod-identity-tls"]["secret"] == {"secretName": TLS_SECRET}
    assert {"name": "pod-identity-tls", "mountPath": CERT_DIR, "readOnly": True} in operator(docs)["volumeMounts"]


def test_existing_secret_and_its_ca(tmp_path):
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    docs = render({"podIdentity": {"enabled": True, "tls": {"existingSecret": "vso-pi-cert", "caBundle": ca}}},
                  tmp_path)
    assert not [s for s in by_kind(docs, "Secret") if "pod-identity" in s["metadata"]["name"]]
    assert named(docs, "ConfigMap", CA_CONFIGMAP)["data"] == {"ca.crt": ca}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["pod-identity-tls"]["secret"] == {"secretName": "vso-pi-cert"}
    message = refused({"podIdentity": {"enabled": True, "tls": {"existingSecret": "vso-pi-cert"}}}, tmp_path)
    assert "podIdentity.tls.caBundle is required" in message


def test_operator_arguments_env_and_port(tmp_path):
    docs = render({**ON, "extraArgs": ["--restart-debounce=30"]}, tmp_path)
    container = operator(docs)
    assert [a for a in container["args"] if a.startswith(("--pod-identity", "--sts-rate"))] == OPERATOR_ARGS
    assert container["args"][-1] == "--restart-debounce=30"  # extraArgs still last
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {"name": "pod-identity", "containerPort": 8444, "protocol": "TCP"} in container["ports"]
    docs = render({"podIdentity": {"enabled": True, "operatorPort": 9444, "stsRatePerSecond": 2.5,
                                   "audience": "corp/pi", "agentAudience": "corp/pi-agent"}}, tmp_path)
    args = operator(docs)["args"]
    assert {"--pod-identity-port=9444", "--sts-rate=2.5", "--pod-identity-audience=corp/pi",
            "--pod-identity-agent-audience=corp/pi-agent"} <= set(args)
    assert named(docs, "Service", SERVICE)["spec"]["ports"][0]["targetPort"] == 9444
    assert "--audience=corp/pi" in agent_pod(docs)["containers"][0]["args"]
    projected = agent_pod(docs)["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]
    assert projected["audience"] == "corp/pi-agent"
    assert "must differ from metrics.port" in refused({"podIdentity": {"enabled": True, "operatorPort": 8080}},
                                                      tmp_path)
    same = {"podIdentity": {"enabled": True, "audience": "corp/pi", "agentAudience": "corp/pi"}}
    assert "agentAudience must differ" in refused(same, tmp_path)


ENDPOINTSLICE_RULES = [
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["create"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "resourceNames": [f"{SERVICE}-leader"], "verbs": ["get", "update", "patch"]},
]
TOKEN_REVIEW = {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}


@pytest.mark.parametrize("values", [{}, {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["team-a"]}])
def test_rbac_is_the_leader_slice_and_token_reviews(values, tmp_path):
    docs = render({**values, **ON, "metrics": {"secure": False}}, tmp_path)
    role = named(docs, "Role", RELEASE)
    assert role["metadata"]["namespace"] == NS
    assert [r for r in role["rules"] if r["apiGroups"] == ["discovery.k8s.io"]] == ENDPOINTSLICE_RULES
    everything = [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    assert [r for r in everything if "endpointslices" in r.get("resources", [])] == ENDPOINTSLICE_RULES
    # TokenReview is cluster-scoped: in the ClusterRole under both scopes, even with metrics.secure=false
    cluster_rules = named(docs, "ClusterRole", RELEASE)["rules"]
    assert TOKEN_REVIEW in cluster_rules
    assert not [r for r in cluster_rules if "subjectaccessreviews" in r.get("resources", [])]
    assert not [r for r in everything if {"pods", "nodes", "serviceaccounts"} & set(r.get("resources", []))]


def test_network_policy_admits_the_agents(tmp_path):
    docs = render({**ON, "networkPolicy": {"enabled": True}}, tmp_path)
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][2] == {"ports": [{"port": 8444, "protocol": "TCP"}]}
    nodes = [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    docs = render({"podIdentity": {"enabled": True, "networkPolicy": {"agentFrom": nodes}},
                   "networkPolicy": {"enabled": True}}, tmp_path)
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][2] == {"ports": [{"port": 8444, "protocol": "TCP"}], "from": nodes}


def test_names_and_common_labels(tmp_path):
    docs = render({**ON, "fullnameOverride": "sts-broker", "commonLabels": {"team": "platform"}}, tmp_path)
    objects = pod_identity_objects(docs) + [(d["kind"], d["metadata"]["name"]) for d in docs
                                            if "sts-broker-pod-identity" in d["metadata"]["name"]
                                            or d["metadata"]["name"] == "sts-broker-agent"]
    assert {("DaemonSet", "sts-broker-agent"), ("ServiceAccount", "sts-broker-agent"),
            ("Service", "sts-broker-pod-identity"), ("Secret", "sts-broker-pod-identity-tls"),
            ("ConfigMap", "sts-broker-pod-identity-ca")} <= set(objects)
    for doc in docs:
        assert doc["metadata"]["labels"]["team"] == "platform", doc["metadata"]["name"]
    args = agent_pod(docs)["containers"][0]["args"]
    assert "--operator-service-env=STS_BROKER_POD_IDENTITY" in args
    assert f"--server-name=sts-broker-pod-identity.{NS}.svc" in args


@pytest.mark.parametrize("bad", [
    {"revalidateSeconds": "x"},
    {"revalidateSeconds": 0},
    {"refreshMarginSeconds": 600},  # inside botocore's 15-min window: SDKs would refresh on every call
    {"refreshMarginSeconds": 1200},  # not below the operator's 20-min renewal: refreshes would fetch the same
    {"addresses": ["10.0.0.1"]},
    {"addresses": ["fd00:ec2::23"]},  # the IPv4 address every SDK accepts is required
    {"addresses": []},
    {"linkName": "a-name-longer-than-15"},
    {"rateLimit": {"perSecond": 0}},
    {"maxCacheEntries": -1},
    {"image": {"pullPolicy": "Sometimes"}},
    {"updateStrategy": {"type": "Recreate"}},
    {"unknown": 1},
])
def test_schema_refuses_bad_agent_values(bad, tmp_path):
    message = refused({"podIdentity": {"enabled": True, "agent": bad}}, tmp_path)
    assert "values don't meet the specifications of the schema" in message, bad


@pytest.mark.parametrize("bad", [{"enabled": "yes"}, {"operatorPort": 443}, {"stsRatePerSecond": -1},
                                 {"audience": ""}, {"tls": {"existingSecret": "Bad_Name"}},
                                 {"networkPolicy": {"agentFrom": "nodes"}}, {"extra": True}])
def test_schema_refuses_bad_values(bad, tmp_path):
    message = refused({"podIdentity": bad}, tmp_path)
    assert "values don't meet the specifications of the schema" in message, bad


def test_notes_name_pod_security_and_tenant_egress(tmp_path):
    # NOTES.txt is rendered only by install/upgrade: a copy of the chart renders it as a manifest.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "notes-render.yaml").write_text(
        'notes: {{ include "vault-sts-operator/templates/NOTES.txt" . | toJson }}\n')

    def notes(*sets: str) -> str:
        args = [helm_binary(), "template", RELEASE, str(chart), "--namespace", NS, "--kube-version", "1.35.4",
                "--show-only", "templates/notes-render.yaml"]
        for value in sets:
            args += ["--set", value]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        return str(yaml.safe_load(out)["notes"])

    assert "Pod Identity" not in notes()
    text = notes("podIdentity.enabled=true", "podIdentity.agent.addresses={169.254.170.23,fd00:ec2::23}")
    assert f"kubectl label namespace {NS} pod-security.kubernetes.io/enforce=privileged" in text
    assert "must allow 169.254.170.23/32 and fd00:ec2::23/128 TCP 80" in text
    assert "TokenReviews" in text and "either rbac.scope" in text


def test_helm_lint_with_pod_identity(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps(ON))
    result = subprocess.run([helm_binary(), "lint", "--strict", str(CHART), "-f", str(values)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_upgrade_keeps_the_ca_and_the_apiserver_accepts_every_object(stack: StackEnv, unique: str, tmp_path):
    """`lookup` finds the release's Secret on a live cluster: an upgrade renders its CA again, not a new one (the
    agents keep trusting the operator). A server-side dry run has the apiserver validate the objects."""
    ns = f"vso-pi-{unique}"
    kubectl(stack, "create", "namespace", ns)
    try:
        first = render(ON, tmp_path)
        for doc in first:
            if doc["kind"] in ("Secret", "ConfigMap") and doc["metadata"]["name"] in (TLS_SECRET, CA_CONFIGMAP):
                doc["metadata"]["namespace"] = ns
                kubectl(stack, "apply", "-f", "-", stdin=json.dumps(doc))
        values = tmp_path / "on.yaml"
        values.write_text(json.dumps(ON))
        out = helm(stack, "template", RELEASE, str(CHART), "--namespace", ns, "--kube-version", "1.35.4",
                   "-f", str(values), "--dry-run=server").stdout
        again = [d for d in yaml.safe_load_all(out) if d]
        assert named(again, "Secret", TLS_SECRET)["data"] == named(first, "Secret", TLS_SECRET)["data"]
        assert named(again, "ConfigMap", CA_CONFIGMAP)["data"] == named(first, "ConfigMap", CA_CONFIGMAP)["data"]
        objects = [d for d in again if d["metadata"].get("namespace") == ns and d["kind"] in (
            "DaemonSet", "ServiceAccount", "Service", "Deployment", "Role")]
        assert {d["kind"] for d in objects} == {"DaemonSet", "ServiceAccount", "Service", "Deployment", "Role"}
        for doc in objects:
            kubectl(stack, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(doc))
    finally:
        kubectl(stack, "delete", "namespace", ns, "--wait=false", check=False)
