"""Probes: is each part of the stack answering?"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from devstack.pki import Pki


def http_get(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310 - checked above
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def admin_tls(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    return ctx


def insecure_tls() -> ssl.SSLContext:
    """For kube-controller-manager's self-signed serving cert; only /healthz is read."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def etcd_healthy(port: int) -> bool:
    status, body = http_get(f"http://127.0.0.1:{port}/health")
    return status == 200 and json.loads(body).get("health") == "true"


def apiserver_ready(url: str, pki: Pki) -> bool:
    return http_get(f"{url}/readyz", admin_tls(pki))[0] == 200


def controller_manager_healthy(port: int) -> bool:
    return http_get(f"https://127.0.0.1:{port}/healthz", insecure_tls())[0] == 200


def default_service_account(url: str, pki: Pki) -> bool:
    return http_get(f"{url}/api/v1/namespaces/default/serviceaccounts/default", admin_tls(pki))[0] == 200


def bao_healthy(addr: str) -> bool:
    return http_get(f"{addr}/v1/sys/health")[0] == 200


def vault_status(addr: str, ca: Path) -> int:
    """HTTP status of ``sys/health`` over TLS: 200 active, 501 not initialised, 503 sealed, ..."""
    return http_get(f"{addr}/v1/sys/health", ssl.create_default_context(cafile=str(ca)))[0]


def emulator_healthy(admin_url: str) -> bool:
    return http_get(f"{admin_url.rstrip('/')}/_emulator/health")[0] == 200
