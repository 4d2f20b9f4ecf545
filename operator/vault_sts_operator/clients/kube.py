"""The operator's Kubernetes API calls: lists and watch streams for services/watch.py, Secrets, status
patches, Events, finalizers, ServiceAccount tokens, rollout restarts, token and access reviews.

Async calls on one aiohttp session. Secrets are read and written by name; the only list and watch
of Secrets is label-selected on the server to the ones this operator wrote (services/watch.py).
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.specs import SecretKeyRef
from vault_sts_operator.clients import kube_paths as paths
from vault_sts_operator.clients.kube_rest import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, ApiError, KubeRest
from vault_sts_operator.domain.errors import KubernetesError, SecretRefusedError
from vault_sts_operator.domain.timefmt import parse_time

WORKLOAD_PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


# The API server's metadata-only representation (what client-go's metadata informers ask for): no data,
# no spec, no status; for a watch of Secrets, no secret value ever reaches the process.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_ONE = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class ResourceVersionExpired(KubernetesError):
    """410 Gone: the list's continue token or the watch's resourceVersion is too old; list again."""


@dataclass(frozen=True)
class ReviewedUser:
    """Who a bearer token belongs to, as the API server's TokenReview says (the token itself is not kept)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()  # status.audiences: the audiences asked for that the token is valid for


# The API server's answers to a Secret write that retrying cannot change: a field it validates (400, 422), RBAC or
# an admission rule or quota (403), a body too large (413). 404 (gone) and 409 (conflict) are handled by the callers.
SECRET_REFUSED_STATUSES = frozenset({400, 403, 413, 422})
REDACTED = "<redacted>"
_WORDS = re.compile(r"[\s\"'=,:{}\[\]]+")


def _sent_values(manifest: Mapping[str, Any]) -> list[str]:
    """Every value of the Secret's data, each word of them that could be a key or token, and their base64 forms
    (how the API server and admission webhooks see stringData): what an error message must not repeat."""
    values: set[str] = set()
    for value in (manifest.get("stringData") or {}).values():
        values.add(str(value))
        values.update(w for w in _WORDS.split(str(value)) if len(w) >= 16)
    values |= {base64.b64encode(v.encode()).decode() for v in values}
    values.update(str(v) for v in (manifest.get("data") or {}).values())
    return sorted((v for v in values if v), key=len, reverse=True)


def redact_sent_values(text: str, manifest: Mapping[str, Any]) -> str:
    for value in _sent_values(manifest):
        text = text.replace(value, REDACTED)
    return text


def _secret_refused(verb: str, manifest: Mapping[str, Any], exc: ApiError) -> SecretRefusedError:
    meta = manifest["metadata"]
    said = redact_sent_values(exc.message, manifest)
    return SecretRefusedError(f"the API server refused to {verb} Secret {meta['namespace']}/{meta['name']}: "
                              f"HTTP {exc.status} {exc.reason}" + (f": {said}" if said else ""))


class KubeGateway:
    def __init__(self, rest: KubeRest) -> None:
        self.rest = rest

    # -- Secrets by name ------------------------------------------------------------------------
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.rest.request("GET", paths.secrets(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise KubernetesError(f"reading Secret {namespace}/{name}: {exc}") from None

    async def create_secret(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when a Secret of that name appeared meanwhile (409)."""
        meta = manifest["metadata"]
        try:
            return await self.rest.request("POST", paths.secrets(meta["namespace"]), manifest)
        except ApiError as exc:
            if exc.status == 409:
                return None
            if exc.status in SECRET_REFUSED_STATUSES:
                raise _secret_refused("create", manifest, exc) from None
            raise KubernetesError(f"creating Secret {meta['namespace']}/{meta['name']}: {exc}") from None

    async def replace_secret(self, manifest: dict[str, Any], resource_version: str) -> dict[str, Any] | None:
        """Replace the whole Secret if it is still at `resource_version`; None on a conflict (409) or if gone."""
        meta = {**manifest["metadata"], "resourceVersion": resource_version}
        try:
            return await self.rest.request("PUT", paths.secrets(meta["namespace"], meta["name"]),
                                     {**manifest, "metadata": meta})
        except ApiError as exc:
            if exc.status in (404, 409):  # gone, or changed since that version
                return None
            if exc.status in SECRET_REFUSED_STATUSES:
                raise _secret_refused("replace", manifest, exc) from None
            raise KubernetesError(f"replacing Secret {meta['namespace']}/{meta['name']}: {exc}") from None

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete only the Secret with this uid (a precondition), ignoring one already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await self.rest.request("DELETE", paths.secrets(namespace, name), body, parse=False)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise KubernetesError(f"deleting Secret {namespace}/{name}: {exc}") from None

    async def read_secret_key(self, ref: SecretKeyRef) -> str:
        secret = await self.get_secret(ref.namespace, ref.name)
        if secret is None or ref.key not in (secret.get("data") or {}):
            raise KubernetesError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
        return base64.b64decode(secret["data"][ref.key]).decode()

    # -- lists and watches (our own custom resources) -------------------------------------------
    async def list_page(self, path: str, *, limit: int, continue_token: str = "", label_selector: str = "",
                        metadata_only: bool = False) -> dict[str, Any]:
        """One page of a collection (``limit`` items at most; ``metadata.continue`` names the next)."""
        query = (f"?limit={limit}" + (f"&continue={quote(continue_token)}" if continue_token else "")
                 + (f"&labelSelector={quote(label_selector)}" if label_selector else ""))
        try:
            return await self.rest.request("GET", path + query, accept=METADATA_LIST if metadata_only else "")
        except ApiError as exc:
            if exc.status == 410:
                raise ResourceVersionExpired(f"listing {path}: {exc}") from None
            raise KubernetesError(f"listing {path}: {exc}") from None

    async def watch(self, path: str, resource_version: str, *, timeout_seconds: int, label_selector: str = "",
                    metadata_only: bool = False) -> AsyncIterator[dict[str, Any]]:
        """The watch events of a collection from ``resource_version`` (with bookmarks), until the server
        closes the stream after about ``timeout_seconds``. An expired version raises ResourceVersionExpired."""
        query = (f"?watch=1&allowWatchBookmarks=true&resourceVersion={quote(resource_version)}"
                 f"&timeoutSeconds={timeout_seconds}"
                 + (f"&labelSelector={quote(label_selector)}" if label_selector else ""))
        try:
            async for event in self.rest.stream(path + query, read_timeout=timeout_seconds + 30,
                                                accept=METADATA_ONE if metadata_only else ""):
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise ResourceVersionExpired(f"watching {path}: {status.get('message', 'Gone')}")
                    raise KubernetesError(f"watching {path}: {status.get('code')} {status.get('message', '')}")
                yield event
        except ApiError as exc:
            if exc.status == 410:
                raise ResourceVersionExpired(f"watching {path}: {exc}") from None
            raise KubernetesError(f"watching {path}: {exc}") from None

    # -- status of our custom resources --------------------------------------------------------
    async def patch_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge `status` into the CR's status; False when the CR no longer exists."""
        path = paths.credentials(namespace, name, "status")
        try:
            await self.rest.request("PATCH", path, {"status": status}, content_type=MERGE_PATCH, parse=False)
        except ApiError as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to report on
                return False
            raise KubernetesError(f"patching status of {namespace}/{name}: {exc}") from None
        return True

    async def remove_finalizer(self, namespace: str, name: str, finalizers: list[str], finalizer: str) -> None:
        """Drop `finalizer` (left by an older version of the operator) if the list is still `finalizers`."""
        patch = [{"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                 {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != finalizer]}]
        try:
            await self.rest.request("PATCH", paths.credentials(namespace, name), patch, content_type=JSON_PATCH,
                                    parse=False)
        except ApiError as exc:
            if exc.status not in (404, 409, 422):  # gone, or changed meanwhile (the next event retries)
                raise KubernetesError(f"removing the finalizer of {namespace}/{name}: {exc}") from None

    async def post_event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str,
                         now: datetime) -> None:
        """One core/v1 Event about a custom resource (what `kubectl describe` shows)."""
        meta = involved.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {"apiVersion": involved.get("apiVersion") or c.API_VERSION,
                               "kind": involved.get("kind") or c.CREDENTIAL_KIND,
                               "name": meta.get("name"), "namespace": namespace, "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "source": {"component": "vault-sts-operator"}, "reportingComponent": "vault-sts-operator",
        }
        try:
            await self.rest.request("POST", paths.events(namespace), event, parse=False)
        except ApiError as exc:
            raise KubernetesError(f"posting Event {reason} on {namespace}/{meta.get('name')}: {exc}") from None

    async def patch_identity_status(self, name: str, status: dict[str, Any]) -> None:
        path = paths.identities(name, "status")
        try:
            await self.rest.request("PATCH", path, {"status": status}, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status != 404:
                raise KubernetesError(f"patching status of MFAIdentity {name}: {exc}") from None

    async def request_token(self, namespace: str, service_account: str, *, audience: str,
                            expiration_seconds: int) -> tuple[str, datetime]:
        """A TokenRequest for `service_account` with one audience: the token and when it expires."""
        path = paths.service_account_token(namespace, service_account)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience], "expirationSeconds": expiration_seconds}}
        try:
            answer = await self.rest.request("POST", path, body)
        except ApiError as exc:  # the message never holds a token: the request carried none
            raise KubernetesError(f"requesting a token of ServiceAccount {namespace}/{service_account}: {exc}",
                                  transient=exc.status >= 500 or exc.status == 429) from None
        status = answer.get("status") or {}
        expires = parse_time(str(status["expirationTimestamp"]))
        return str(status["token"]), expires

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        try:
            ns = await self.rest.request("GET", paths.namespace(namespace))
        except ApiError as exc:
            raise KubernetesError(f"reading namespace {namespace}: {exc}") from None
        return dict(ns.get("metadata", {}).get("labels") or {})

    # -- consumers ------------------------------------------------------------------------------
    async def workload_metadata(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The workload's metadata (annotations, resourceVersion), or None when it does not exist."""
        plural = WORKLOAD_PLURALS.get(kind)
        if plural is None:
            raise KubernetesError(f"rolloutRestartTargets: unsupported kind {kind!r}")
        try:
            body = await self.rest.request("GET", paths.workload(namespace, plural, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise KubernetesError(f"reading {kind} {namespace}/{name}: {exc}") from None
        return dict(body.get("metadata") or {})

    async def restart_workload(self, kind: str, namespace: str, name: str, stamp: str,
                               resource_version: str = "") -> None:
        """What `kubectl rollout restart` does: bump a pod-template annotation.

        With `resource_version`, only if the workload is unchanged since it was read (a 409 otherwise),
        so an opt-in annotation removed meanwhile is respected.
        """
        plural = WORKLOAD_PLURALS.get(kind)
        if plural is None:
            raise KubernetesError(f"rolloutRestartTargets: unsupported kind {kind!r}")
        patch: dict[str, Any] = {
            "spec": {"template": {"metadata": {"annotations": {c.RESTARTED_AT_ANNOTATION: stamp}}}}}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        try:
            await self.rest.request("PATCH", paths.workload(namespace, plural, name),
                                    patch, content_type=STRATEGIC_MERGE_PATCH)
        except ApiError as exc:
            raise KubernetesError(f"restarting {kind} {namespace}/{name}: {exc}") from None

    # -- delegated authentication and authorization (the /metrics endpoint) --------------------
    async def review_token(self, token: str, audiences: Sequence[str] = ()) -> ReviewedUser | None:
        """TokenReview: the user `token` authenticates as, or None when the API server does not accept it.
        Needs `create` on tokenreviews.authentication.k8s.io. No error message carries the token."""
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        try:
            review = await self.rest.request("POST", paths.TOKEN_REVIEWS, body)
        except ApiError as exc:
            raise KubernetesError(f"reviewing a bearer token (TokenReview): {exc}") from None
        status = review.get("status") or {}
        user = status.get("user") or {}
        if status.get("authenticated") is not True or not user.get("username"):
            return None
        return ReviewedUser(username=str(user["username"]), uid=str(user.get("uid") or ""),
                            groups=tuple(str(g) for g in user.get("groups") or ()),
                            extra={str(k): tuple(str(v) for v in vs) for k, vs in (user.get("extra") or {}).items()},
                            audiences=tuple(str(a) for a in status.get("audiences") or ()))

    async def may_access(self, user: ReviewedUser, *, path: str, verb: str) -> bool:
        """SubjectAccessReview of a non-resource URL (e.g. get /metrics) for `user`. Needs `create` on
        subjectaccessreviews.authorization.k8s.io."""
        spec: dict[str, Any] = {"user": user.username, "groups": list(user.groups),
                                "nonResourceAttributes": {"path": path, "verb": verb}}
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra.items()}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        try:
            review = await self.rest.request("POST", paths.SUBJECT_ACCESS_REVIEWS, body)
        except ApiError as exc:
            raise KubernetesError(f"reviewing access to {verb} {path} (SubjectAccessReview): {exc}") from None
        status = review.get("status") or {}
        return status.get("allowed") is True and status.get("denied") is not True
