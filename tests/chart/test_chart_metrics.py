"""The chart's /metrics (issue 17, item 6): secure by default (the operator may create TokenReviews and
SubjectAccessReviews in both RBAC scopes; a `<release>-metrics-reader` ClusterRole for Prometheus; a ServiceMonitor
on HTTPS with a bearer token), a certificate from a Secret, and `metrics.secure=false` for plain HTTP.
Rendered with the real ``helm template``; the RBAC at work on the real API server: tests/e2e/test_metrics_auth.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.test_chart_platform import RELEASE, by_kind, pod_spec, refused, render

REVIEWS = [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
           {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]
READER = f"{RELEASE}-metrics-reader"
CERT_DIR = "/var/run/secrets/vault-sts-operator-metrics"


def _roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}


def _endpoint(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    return dict(endpoint)


def _args(docs: list[dict[str, Any]]) -> list[str]:
    return list(pod_spec(docs)["containers"][0]["args"])


@pytest.mark.parametrize("values", [{}, {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["team-a"]}])
def test_secure_by_default_in_both_scopes(values, tmp_path):
    docs = render({**values, "metrics": {"serviceMonitor": {"enabled": True}}}, tmp_path)
    roles = _roles(docs)
    operator_rules = roles[RELEASE]["rules"]
    assert all(rule in operator_rules for rule in REVIEWS)
    assert roles[READER]["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert not [b for b in by_kind(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == READER]  # bound by you
    args = _args(docs)
    assert "--metrics-port=8000" in args and not [a for a in args if a.startswith(("--metrics-secure",
                                                                                     "--metrics-cert-dir"))]
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    assert _endpoint(docs) == {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True,
                               "scheme": "https",
                               "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                               "tlsConfig": {"insecureSkipVerify": True}}
    # the liveness probe stays on its own plain-HTTP port
    probe = pod_spec(docs)["containers"][0]["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}


def test_prometheus_service_accounts_can_be_bound_by_the_chart(tmp_path):
    subjects = [{"name": "kps-kube-prometheus-prometheus", "namespace": "monitoring"}]
    docs = render({"metrics": {"reader": {"subjects": subjects}}}, tmp_path)
    (binding,) = [b for b in by_kind(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == READER]
    assert binding["subjects"] == [{"kind": "ServiceAccount", **subjects[0]}]
    assert "namespace" in refused({"metrics": {"reader": {"subjects": [{"name": "prometheus"}]}}}, tmp_path)


def test_a_certificate_secret_is_mounted_and_verified_by_the_service_monitor(tmp_path):
    docs = render({"metrics": {"certSecret": "vso-metrics-cert", "serviceMonitor": {"enabled": True}}}, tmp_path)
    pod = pod_spec(docs)
    assert f"--metrics-cert-dir={CERT_DIR}" in _args(docs)
    assert {"name": "metrics-cert", "secret": {"secretName": "vso-metrics-cert"}} in pod["volumes"]
    assert {"name": "metrics-cert", "mountPath": CERT_DIR, "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert _endpoint(docs)["tlsConfig"] == {"ca": {"secret": {"name": "vso-metrics-cert", "key": "ca.crt"}},
                                            "serverName": f"{RELEASE}-metrics.vso-system.svc"}


def test_the_service_monitor_takes_a_token_secret_and_tls_settings(tmp_path):
    authorization = {"type": "Bearer", "credentials": {"name": "prometheus-token", "key": "token"}}
    tls = {"ca": {"configMap": {"name": "metrics-ca", "key": "ca.crt"}}, "serverName": "vso.example"}
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "authorization": authorization,
                                                  "tlsConfig": tls}}}, tmp_path)
    endpoint = _endpoint(docs)
    assert endpoint["authorization"] == authorization and "bearerTokenFile" not in endpoint
    assert endpoint["tlsConfig"] == tls


def test_the_switch_serves_plain_http_and_grants_nothing(tmp_path):
    docs = render({"metrics": {"secure": False, "certSecret": "ignored", "serviceMonitor": {"enabled": True}}},
                  tmp_path)
    roles = _roles(docs)
    assert READER not in roles and not any(rule in roles[RELEASE]["rules"] for rule in REVIEWS)
    assert "--metrics-secure=false" in _args(docs) and not any("cert-dir" in a for a in _args(docs))
    assert not [v for v in pod_spec(docs)["volumes"] if v["name"] == "metrics-cert"]
    (deploy,) = by_kind(docs, "Deployment")
    assert "prometheus.io/scheme" not in deploy["spec"]["template"]["metadata"]["annotations"]
    assert _endpoint(docs) == {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True,
                               "scheme": "http"}
