"""Kubeconfig files: the admin's (client certificate) and any ServiceAccount's (TokenRequest token)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from devstack.env import StackEnv


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render(server: str, ca_file: Path, user_name: str, user: dict[str, str]) -> dict[str, Any]:
    """A one-cluster, one-user kubeconfig with everything inline (portable to a container)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vso-dev", "cluster": {"server": server, "certificate-authority-data": _b64(ca_file)}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": user_name, "context": {"cluster": "vso-dev", "user": user_name}}],
        "current-context": user_name,
        "preferences": {},
    }


def write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_cert_kubeconfig(path: Path, server: str, ca_file: Path, *, user_name: str, cert: Path, key: Path) -> Path:
    user = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
    return write(path, render(server, ca_file, user_name, user))


# The audience of the token the operator presents to Vault's kubernetes auth (chart value
# vault.auth.kubernetes.audience): Vault roles set `audience` to it, so the apiserver's own tokens
# (and the automounted one) are refused there, and this token is refused by the apiserver.
VAULT_AUDIENCE = "vault"


def request_token(
    stack: StackEnv,
    namespace: str,
    name: str,
    expiration_seconds: int = 3600,
    audiences: list[str] | None = None,
) -> str:
    """A bound token for ServiceAccount ``namespace/name`` (TokenRequest API)."""
    from kubernetes import client

    api = stack.api_client()
    try:
        spec = client.V1TokenRequestSpec(audiences=audiences or [], expiration_seconds=expiration_seconds)
        result = client.CoreV1Api(api).create_namespaced_service_account_token(
            name, namespace, client.AuthenticationV1TokenRequest(spec=spec)
        )
        if result.status is None or not result.status.token:
            raise RuntimeError(f"TokenRequest for {namespace}/{name} returned no token")
        return str(result.status.token)
    finally:
        api.close()


def kubeconfig_for_service_account(
    stack: StackEnv,
    namespace: str,
    name: str,
    path: Path,
    expiration_seconds: int = 24 * 3600,
) -> Path:
    """Write a kubeconfig that acts as exactly ServiceAccount ``namespace/name`` (its RBAC, nothing more)."""
    token = request_token(stack, namespace, name, expiration_seconds)
    user_name = f"system:serviceaccount:{namespace}:{name}"
    return write(path, render(stack.kube_api, stack.kube_ca, user_name, {"token": token}))
