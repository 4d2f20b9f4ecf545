"""/metrics on the real stack, secure by default (issue 17, item 6): the series name every credential and
identity, so any pod that reaches the port must not read them. The operator runs with exactly the chart's
RBAC (tests/e2e/conftest.py), which lets it create TokenReviews and SubjectAccessReviews; the chart's
`<release>-metrics-reader` ClusterRole is what Prometheus's ServiceAccount is bound to.

- no token: 401; a token the API server does not know: 401;
- a ServiceAccount's token without the ClusterRole: 403;
- a ServiceAccount bound to the chart's metrics-reader ClusterRole: 200 and the metrics;
- plain HTTP to the port gets no metrics; no token value in the operator's log.
And the switch: --metrics-secure=false serves plain HTTP without a token."""

from __future__ import annotations

import secrets
import ssl
import urllib.error
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.kubeconfig import request_token
from devstack.metrics_scraper import scrape
from devstack.operator_run import OperatorProcess
from tests.e2e.conftest import RELEASE


def _status(url: str, token: str = "") -> int:
    try:
        scrape(url, token)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def _service_account(kube, namespace: str, name: str) -> str:
    try:
        kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    return request_token(kube.stack, namespace, name, expiration_seconds=600)


def test_metrics_need_a_token_the_api_server_authorizes(stack, kube, operator, chart_release, unique):
    assert operator.metrics_url.startswith("https://")
    team = kube.namespace(f"metrics-auth-{unique}")
    rbac = client.RbacAuthorizationV1Api(kube.api)
    reader_role = f"{RELEASE}-metrics-reader"
    role = rbac.read_cluster_role(reader_role)  # installed by the chart
    assert kube.api.sanitize_for_serialization(role)["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]

    stranger = _service_account(kube, team, "app")  # any pod's ServiceAccount: no metrics-reader
    prometheus = _service_account(kube, team, "prometheus")
    binding = f"metrics-auth-{unique}"
    rbac.create_cluster_role_binding({
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader_role},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": team}]})
    bogus = secrets.token_urlsafe(32)
    try:
        url = operator.metrics_url
        assert _status(url) == 401
        assert _status(url, bogus) == 401
        assert _status(url, stranger) == 403
        assert _status(url, stranger) == 403  # the cached refusal
        text = scrape(url, prometheus)
        assert "vault_sts_operator_build_info" in text and "vault_sts_operator_credentials_scheduled" in text
        # the port speaks TLS only: a plain-HTTP request gets no metrics
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            scrape(url.replace("https://", "http://"), prometheus)
    finally:
        rbac.delete_cluster_role_binding(binding)
    log = operator.log_text()
    assert f"system:serviceaccount:{team}:app may not get /metrics (403)" in log
    for token in (stranger, prometheus, bogus):
        assert token not in log


def test_the_switch_serves_plain_http_without_a_token(stack, kube, operator, unique):
    """--metrics-secure=false, for clusters that protect the port otherwise. This operator watches one empty
    namespace only (no leader election): the suite's operator keeps every credential."""
    empty = kube.namespace(f"metrics-plain-{unique}")
    plain = OperatorProcess(stack, name="operator-plain-metrics", kubeconfig=operator.kubeconfig,
                            metrics_secure=False, extra_args=["--namespace", empty])
    plain.start()
    try:
        assert plain.metrics_url.startswith("http://")
        with urllib.request.urlopen(plain.metrics_url, timeout=5) as response:
            assert response.status == 200 and "vault_sts_operator_build_info" in response.read().decode()
        assert "no authentication (--metrics-secure=false)" in plain.log_text()
    finally:
        plain.stop()
