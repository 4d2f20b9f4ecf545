"""The Kubernetes API paths the operator and its verbs call, written once; names are URL-quoted here.

Collection functions take `namespace=""` for the cluster-wide collection (every namespace) and a namespace's
name for that namespace's own.
"""

from __future__ import annotations

from urllib.parse import quote

from vault_sts_operator.api import constants as c

CORE = "/api/v1"
OURS = f"/apis/{c.GROUP}/{c.VERSION}"
APPS = "/apis/apps/v1"
COORDINATION = "/apis/coordination.k8s.io/v1"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def _path(group: str, plural: str, namespace: str, name: str = "", subresource: str = "") -> str:
    path = f"{group}/namespaces/{quote(namespace)}/{plural}" if namespace else f"{group}/{plural}"
    if name:
        path += f"/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


def credentials(namespace: str = "", name: str = "", subresource: str = "") -> str:
    return _path(OURS, c.CREDENTIAL_PLURAL, namespace, name, subresource)


def identities(name: str = "", subresource: str = "") -> str:
    return _path(OURS, c.IDENTITY_PLURAL, "", name, subresource)


def secrets(namespace: str = "", name: str = "") -> str:
    return _path(CORE, "secrets", namespace, name)


def events(namespace: str) -> str:
    return _path(CORE, "events", namespace)


def service_account_token(namespace: str, name: str) -> str:
    return _path(CORE, "serviceaccounts", namespace, name, "token")


def namespace(name: str) -> str:
    return _path(CORE, "namespaces", "", name)


def workload(namespace: str, plural: str, name: str) -> str:
    """A Deployment, StatefulSet or DaemonSet (`plural`: deployments, statefulsets, daemonsets)."""
    return _path(APPS, plural, namespace, name)


def leases(namespace: str, name: str = "") -> str:
    return _path(COORDINATION, "leases", namespace, name)
