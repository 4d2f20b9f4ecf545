"""Kubernetes API access the operator needs beyond kopf's watches.

The official client is synchronous: callers run these in a worker thread. Bodies
are plain dicts (JSON) rather than generated models, which keeps memory and CPU
low when a thousand credentials rotate.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.specs import SecretKeyRef
from vault_sts_operator.domain.errors import KubernetesError

WORKLOAD_KINDS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


def _json(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.data))


class KubeGateway:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._api = api_client
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._apps = kubernetes.client.AppsV1Api(api_client)

    # -- Secrets (by name only: the operator never lists or watches Secrets) ------------------
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self._core.read_namespaced_secret(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubernetesError(f"reading Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None

    def create_secret(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when a Secret of that name appeared meanwhile (409)."""
        meta = manifest["metadata"]
        try:
            return _json(self._core.create_namespaced_secret(meta["namespace"], manifest,  # type: ignore[arg-type]
                                                                    _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise KubernetesError(f"creating Secret {meta['namespace']}/{meta['name']}: "
                                  f"HTTP {exc.status} {exc.reason}") from None

    def replace_secret(self, manifest: dict[str, Any], resource_version: str) -> dict[str, Any] | None:
        """Replace the whole Secret if it is still at `resource_version`; None on a conflict (409)."""
        meta = {**manifest["metadata"], "resourceVersion": resource_version}
        body = {**manifest, "metadata": meta}
        try:
            return _json(self._core.replace_namespaced_secret(meta["name"], meta["namespace"], body,  # type: ignore[arg-type]
                                                              _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise KubernetesError(f"replacing Secret {meta['namespace']}/{meta['name']}: "
                                  f"HTTP {exc.status} {exc.reason}") from None

    def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete only the Secret with this uid (a precondition), ignoring one already gone."""
        body = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid=uid))
        try:
            self._core.delete_namespaced_secret(name, namespace, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise KubernetesError(f"deleting Secret {namespace}/{name}: HTTP {exc.status}") from None

    def read_secret_key(self, ref: SecretKeyRef) -> str:
        secret = self.get_secret(ref.namespace, ref.name)
        if secret is None or ref.key not in (secret.get("data") or {}):
            raise KubernetesError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
        return base64.b64decode(secret["data"][ref.key]).decode()

    # -- status of our custom resources --------------------------------------------------------
    def patch_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self._custom.patch_namespaced_custom_object_status(
                c.GROUP, c.VERSION, namespace, c.CREDENTIAL_PLURAL, name, {"status": status})
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise KubernetesError(f"patching status of {namespace}/{name}: HTTP {exc.status}") from None

    def patch_identity_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            self._custom.patch_cluster_custom_object_status(
                c.GROUP, c.VERSION, c.IDENTITY_PLURAL, name, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise KubernetesError(f"patching status of MFAIdentity {name}: HTTP {exc.status}") from None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        try:
            ns = _json(self._core.read_namespace(namespace, _preload_content=False))
        except ApiException as exc:
            raise KubernetesError(f"reading namespace {namespace}: HTTP {exc.status}") from None
        return dict(ns.get("metadata", {}).get("labels") or {})

    # -- consumers ------------------------------------------------------------------------------
    def restart_workload(self, kind: str, namespace: str, name: str, stamp: str) -> None:
        """What `kubectl rollout restart` does: bump a pod-template annotation."""
        if kind not in WORKLOAD_KINDS:
            raise KubernetesError(f"rolloutRestartTargets: unsupported kind {kind!r}")
        patch = {"spec": {"template": {"metadata": {"annotations": {c.RESTARTED_AT_ANNOTATION: stamp}}}}}
        method = getattr(self._apps, f"patch_namespaced_{kind_snake(kind)}")
        try:
            method(name, namespace, patch)
        except ApiException as exc:
            raise KubernetesError(f"restarting {kind} {namespace}/{name}: HTTP {exc.status}") from None


def kind_snake(kind: str) -> str:
    return {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}[kind]
