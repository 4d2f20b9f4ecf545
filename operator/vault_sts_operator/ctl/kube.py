"""Kubernetes access for the verbs: the operator's own small REST client on the user's kubeconfig."""

from __future__ import annotations

import asyncio
import atexit
from typing import Any
from urllib.parse import urlencode

from vault_sts_operator.clients import kube_paths as paths
from vault_sts_operator.clients.kube_config import KubeConfigError, default_login, login
from vault_sts_operator.clients.kube_rest import MERGE_PATCH, ApiError, KubeRest
from vault_sts_operator.ctl.errors import NotFound, Unreachable


def current_namespace() -> str:
    """The namespace a verb works in when `-n` is not given: the kubeconfig context's (as kubectl), in a pod
    the pod's, else `default`."""
    try:
        return login().default_namespace or "default"
    except KubeConfigError:
        return "default"


class Kube:
    def __init__(self) -> None:
        # The operator's client is async (aiohttp); a verb is a short synchronous program, so it drives
        # the client on a private event loop, closed when the process exits.
        self._loop = asyncio.new_event_loop()
        self.rest = KubeRest(default_login(), pool_size=2)  # logs in at its first request (see _call)
        atexit.register(self.close)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.rest.close())
            self._loop.close()

    def _call(self, method: str, path: str, what: str, body: Any = None, content_type: str | None = None
              ) -> dict[str, Any]:
        try:
            if content_type:
                return self._loop.run_until_complete(self.rest.request(method, path, body, content_type=content_type))
            return self._loop.run_until_complete(self.rest.request(method, path, body))
        except ApiError as exc:
            if exc.status == 404:
                raise NotFound(f"{what} not found") from None
            if exc.status in (0, 401, 403):
                raise Unreachable(f"Kubernetes API refused or unreachable for {what}: {exc}") from None
            raise Unreachable(f"Kubernetes API error for {what}: {exc}") from None
        except KubeConfigError as exc:  # the login happens at the first request
            raise Unreachable(f"no usable Kubernetes credentials: {exc}") from None
        except Exception as exc:  # a refused connection, bad TLS material
            raise Unreachable(f"Kubernetes API unreachable for {what}: {exc}") from None

    def credential(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", paths.credentials(namespace, name), f"AssumedRoleCredential {namespace}/{name}")

    def credentials(self, namespace: str) -> list[dict[str, Any]]:
        answer = self._call("GET", paths.credentials(namespace), f"AssumedRoleCredentials in namespace {namespace}")
        return list(answer.get("items") or [])

    def annotate_credential(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self._call("PATCH", paths.credentials(namespace, name), f"AssumedRoleCredential {namespace}/{name}",
                   {"metadata": {"annotations": annotations}}, MERGE_PATCH)

    def identity(self, name: str) -> dict[str, Any]:
        return self._call("GET", paths.identities(name),
                          f"MFAIdentity {name}")

    def secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret's metadata and key names only: values never leave this function."""
        try:
            secret = self._call("GET", paths.secrets(namespace, name),
                                f"Secret {namespace}/{name}")
        except NotFound:
            return None
        return {"metadata": secret.get("metadata") or {}, "keys": sorted((secret.get("data") or {}).keys())}

    def events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        selector = urlencode({"fieldSelector": f"involvedObject.kind={kind},involvedObject.name={name}"})
        answer = self._call("GET", f"{paths.events(namespace)}?{selector}", "Events")
        return list(answer.get("items") or [])

    def service_account_token(self, namespace: str, name: str, audiences: list[str] | None = None) -> str:
        body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": 600}}
        if audiences:
            body["spec"]["audiences"] = audiences
        answer = self._call("POST", paths.service_account_token(namespace, name),
                            f"ServiceAccount {namespace}/{name}", body)
        return str(answer["status"]["token"])

    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        import base64

        secret = self._call("GET", paths.secrets(namespace, name),
                            f"Secret {namespace}/{name}")
        data = secret.get("data") or {}
        if key not in data:
            raise NotFound(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()
