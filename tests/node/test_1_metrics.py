"""/metrics as pods see it (issue 17, item 6): the chart's default (metrics.secure) with the real image, read-only
root filesystem, uid 65532. A pod of any ServiceAccount that reaches an operator pod's port gets 401 without a
token and 403 with its own; a pod whose ServiceAccount is bound to the chart's `<release>-metrics-reader`
ClusterRole, as Prometheus's would be, gets the metrics. Both replicas serve (the paused one too)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from devstack.workloads import _restricted, describe_pods, operator_pods, pod_log
from tests.e2e.helpers import wait_for
from tests.node.conftest import RELEASE, RELEASE_SA

# Runs in the operator's own image (Python, no curl): its own projected ServiceAccount token, TLS unverified
# (the operator's self-signed certificate, as the ServiceMonitor's insecureSkipVerify).
SCRAPE_PY = """
import json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read().strip()
def get(url, headers):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
for url in sys.argv[1:]:
    anonymous, _ = get(url, {})
    status, text = get(url, {"Authorization": "Bearer " + token})
    print(json.dumps({"url": url, "no_token": anonymous, "own_token": status,
                      "build_info": "vault_sts_operator_build_info" in text}), flush=True)
"""


def _scraper(node: Any, namespace: str, name: str, urls: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"serviceAccountName": name, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                     "containers": [{"name": "scrape", "image": node.image, "imagePullPolicy": "Never",
                                     "command": ["python", "-c", SCRAPE_PY, *urls],
                                     "securityContext": _restricted(),
                                     "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                                   "limits": {"memory": "64Mi"}}}]}}


def test_pods_need_a_service_account_bound_to_the_metrics_reader(kube, node, release, namespaces):
    team = namespaces["team"]
    pods = operator_pods(kube.core, RELEASE, RELEASE)
    urls = [f"https://{p.status.pod_ip}:8000/metrics" for p in pods]
    assert len(urls) == 2
    rbac = client.RbacAuthorizationV1Api(kube.api)
    binding = f"{team}-metrics-prometheus"
    for name in ("metrics-app", "metrics-prometheus"):
        kube.core.create_namespaced_service_account(team, {"metadata": {"name": name}})
    rbac.create_cluster_role_binding({
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": f"{RELEASE_SA}-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "metrics-prometheus", "namespace": team}]})
    try:
        for name in ("metrics-app", "metrics-prometheus"):
            kube.core.create_namespaced_pod(team, _scraper(node, team, name, urls))

        def done(name: str) -> list[dict[str, Any]] | None:
            phase = kube.core.read_namespaced_pod(name, team).status.phase
            assert phase != "Failed", f"{name} failed:\n{describe_pods(kube.core, team)}"
            if phase != "Succeeded":
                return None
            return [json.loads(line) for line in pod_log(kube.core, team, name).splitlines() if line.startswith("{")]

        app = wait_for("the app pod's scrapes", lambda: done("metrics-app"), timeout=120)
        prometheus = wait_for("the Prometheus-like pod's scrapes", lambda: done("metrics-prometheus"), timeout=120)
    finally:
        rbac.delete_cluster_role_binding(binding)
    assert [(r["no_token"], r["own_token"], r["build_info"]) for r in app] == [(401, 403, False)] * 2, app
    assert [(r["no_token"], r["own_token"], r["build_info"]) for r in prometheus] == [(401, 200, True)] * 2, \
        prometheus
    logs = "".join(pod_log(kube.core, RELEASE, p.metadata.name) for p in pods)
    assert f"system:serviceaccount:{team}:metrics-app may not get /metrics (403)" in logs
