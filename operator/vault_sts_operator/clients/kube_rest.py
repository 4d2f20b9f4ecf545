"""A small synchronous Kubernetes REST client on `requests`, with kopf's credentials.

The operator makes a handful of calls beyond kopf's watches (Secrets by name, status
patches, Leases, rollout restarts). The official client's generated models cost about
20 MB and much CPU in argument validation at a thousand credentials, and kopf imports it
whenever it is installed; so the operator does without it. Credentials come from kopf's
own kubeconfig / in-cluster login functions, read again when the API server answers 401
(projected ServiceAccount tokens rotate).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import requests
import requests.adapters

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

Login = Callable[[], kopf.ConnectionInfo]


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason


def in_cluster_server(environ: Mapping[str, str] = os.environ) -> str | None:
    """The API server as client-go's InClusterConfig finds it: KUBERNETES_SERVICE_HOST and _PORT, which the
    kubelet sets in every container. kopf's own in-cluster login names ``https://kubernetes.default.svc``,
    which resolves only through cluster DNS with the pod's search domains."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def with_service_host(info: kopf.ConnectionInfo, environ: Mapping[str, str] = os.environ) -> kopf.ConnectionInfo:
    server = in_cluster_server(environ)
    return dataclasses.replace(info, server=server) if server else info


def login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount, at the address the kubelet gives; elsewhere: KUBECONFIG or ~/.kube/config."""
    info = kopf.login_with_service_account(settings=settings)
    if info is not None:
        return with_service_host(info)
    return kopf.login_with_kubeconfig(settings=settings)


def default_login(settings: kopf.OperatorSettings) -> Login:
    """``login`` as the callable KubeRest calls again when the API server answers 401."""

    def relogin() -> kopf.ConnectionInfo:
        info = login(settings)
        if info is None:
            raise kopf.LoginError("no in-cluster ServiceAccount and no kubeconfig found")
        return info

    return relogin


def _private_file(data: str | bytes, suffix: str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    try:  # kubeconfig *-data fields are base64 of PEM
        decoded = base64.b64decode(raw, validate=True)
        raw = decoded if b"-----BEGIN" in decoded else raw
    except ValueError:
        pass
    handle = tempfile.NamedTemporaryFile("wb", prefix="vso-kube-", suffix=suffix, delete=False)  # noqa: SIM115
    with handle:
        os.chmod(handle.name, 0o600)
        handle.write(raw)
    return handle.name


class KubeRest:
    def __init__(self, login: Login, *, pool_size: int = 16, timeout: float = 30.0) -> None:
        self._login = login
        self._timeout = timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._server = ""
        self._session = requests.Session()
        self._connect()

    def _connect(self) -> None:
        info = self._login()
        session = requests.Session()
        # Environment CA bundles (REQUESTS_CA_BUNDLE) would override the cluster's CA per request;
        # like kopf (ConnectionInfo.trust_env=False), take only what the kubeconfig says.
        session.trust_env = bool(info.trust_env)
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        if info.insecure:
            session.verify = False
        elif info.ca_path:
            session.verify = os.fsdecode(info.ca_path)
        elif info.ca_data:
            session.verify = _private_file(info.ca_data, ".crt")
        cert = os.fsdecode(info.certificate_path) if info.certificate_path else (
            _private_file(info.certificate_data, ".crt") if info.certificate_data else None)
        key = os.fsdecode(info.private_key_path) if info.private_key_path else (
            _private_file(info.private_key_data, ".key") if info.private_key_data else None)
        if cert and key:
            session.cert = (cert, key)
        if info.token:
            session.headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        session.headers["User-Agent"] = "vault-sts-operator"
        session.headers["Accept"] = JSON
        old, self._session, self._server = self._session, session, info.server.rstrip("/")
        old.close()

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = JSON) -> dict[str, Any]:
        """One call; raises ApiError for any non-2xx answer. Logs in again once on 401."""
        data = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            session, server = self._session, self._server
            try:
                response = session.request(method, server + path, data=data, timeout=self._timeout,
                                           headers={"Content-Type": content_type} if data is not None else None)
            except requests.RequestException as exc:
                raise ApiError(0, f"unreachable ({type(exc).__name__})") from None
            if response.status_code == 401 and attempt == 1:
                with self._lock:
                    if self._session is session:
                        self._connect()
                continue
            if response.status_code >= 300:
                raise ApiError(response.status_code, response.reason or "")
            return dict(response.json()) if response.content else {}
        raise AssertionError("unreachable")  # pragma: no cover
