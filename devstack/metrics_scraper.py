"""Scraping the operator's /metrics as Prometheus does: HTTPS, and the bearer token of a ServiceAccount bound to
a ClusterRole allowing `get` on the non-resource URL /metrics (the chart's `<release>-metrics-reader`; the stack
keeps its own, so it works without the chart). The operator reviews the token with the API server
(TokenReview, SubjectAccessReview): services/metrics_server.py.

The token is kept in memory only, never written to a file or a log."""

from __future__ import annotations

import functools
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from devstack.env import StackEnv
from devstack.kubeconfig import request_token

SCRAPER_NAMESPACE = "vault-sts-operator"
SCRAPER_SA = "metrics-scraper"
READER_ROLE = "vso-dev-metrics-reader"
TOKEN_SECONDS = 3600

_tokens: dict[str, tuple[str, float]] = {}  # stack dir -> (token, monotonic time to renew it)
_lock = threading.Lock()


def _apply(create: Callable[..., Any], *args: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        create(*args)
    except ApiException as exc:
        if exc.status != 409:
            raise


def ensure_scraper(stack: StackEnv, namespace: str = SCRAPER_NAMESPACE, name: str = SCRAPER_SA,
                   role: str = READER_ROLE) -> None:
    """The ServiceAccount `namespace/name`, allowed `get /metrics` by ClusterRole `role` (all idempotent)."""
    from kubernetes import client

    api = stack.api_client()
    try:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        _apply(core.create_namespace, {"metadata": {"name": namespace}})
        _apply(core.create_namespaced_service_account, namespace, {"metadata": {"name": name}})
        _apply(rbac.create_cluster_role, {"metadata": {"name": role},
                                          "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]})
        _apply(rbac.create_cluster_role_binding, {
            "metadata": {"name": f"{role}-{namespace}-{name}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    finally:
        api.close()


def scraper_token(stack: StackEnv) -> str:
    """A bound token of the stack's metrics scraper, renewed ten minutes before it expires."""
    key = str(stack.stack_dir)
    with _lock:
        cached = _tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        ensure_scraper(stack)
        token = request_token(stack, SCRAPER_NAMESPACE, SCRAPER_SA, expiration_seconds=TOKEN_SECONDS)
        _tokens[key] = (token, time.monotonic() + TOKEN_SECONDS - 600)
        return token


@functools.cache
def insecure_context() -> ssl.SSLContext:
    """TLS without verifying the operator's self-signed certificate (the ServiceMonitor's insecureSkipVerify)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def scrape(url: str, token: str = "", timeout: float = 5.0) -> str:
    """GET `url`; with a token over HTTPS. Raises urllib.error.HTTPError for 401/403 (its message names the
    status, never the token)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http(s) only, checked above)
    context = insecure_context() if url.startswith("https://") else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
        return str(response.read().decode())
