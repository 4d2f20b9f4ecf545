"""Our own list-and-watch of AssumedRoleCredentials and MFAIdentities, feeding the controller directly.

Why not kopf's handlers for these (kopf still watches Secrets, runs the MFAIdentity handlers and peering):
kopf turns every watch event into a per-object worker task with its own queue, cause detection and a
handler invocation, and its task scheduler queues new workers without bound. Measured with ten thousand
credentials (benchmarks/FINDINGS.md): about 2.3 ms of CPU per credential for the two events of an issue,
and on a restart the whole initial list (every body, ~6 KB parsed) held at once in pending workers, 176 MB
peak against 150 MB in steady state. The controller only needs "this object now looks like this": a
plain list + watch hands each object to it synchronously, one at a time, and keeps nothing else.

The loop is client-go's reflector in miniature: list in pages, hand every item over, forget what the
list no longer has (deleted while no watch was open), then watch from the list's resourceVersion with
bookmarks; when the server ends the stream, watch again from the last version seen; when that version
has expired (410 Gone), list again. Errors back off exponentially up to 30 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.clients.kube import KubeGateway, ResourceVersionExpired
from vault_sts_operator.config import is_namespace_pattern
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.services.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
OnEvent = Callable[[Mapping[str, Any], str | None], None]  # (object, event type; None for a listed item)
OnListed = Callable[[set[Key]], None]  # every key the list had

SECRET_SELECTOR = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY_VALUE}"  # the Secrets this operator writes
PAGE_SIZE = 500
WATCH_TIMEOUT_SECONDS = 300  # the server closes each watch after this (kopf's server_timeout, as configured)
MAX_BACKOFF_SECONDS = 30.0


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ListWatch:
    def __init__(self, kube: KubeGateway, path: str, *, on_event: OnEvent, on_listed: OnListed,
                 label_selector: str = "", metadata_only: bool = False, page_size: int = PAGE_SIZE,
                 timeout_seconds: int = WATCH_TIMEOUT_SECONDS, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self._kube = kube
        self.path = path
        self._selector = label_selector
        self._metadata_only = metadata_only
        self._on_event = on_event
        self._on_listed = on_listed
        self._page_size = page_size
        self._timeout = timeout_seconds
        self._sleep = sleep
        self.listed = asyncio.Event()  # set once the first complete list was handed over
        self.lists = 0  # complete lists so far (the first one, then one per expired version)

    async def _list(self) -> str:
        seen: set[Key] = set()
        token = ""
        while True:
            page = await self._kube.list_page(self.path, limit=self._page_size, continue_token=token,
                                              label_selector=self._selector, metadata_only=self._metadata_only)
            meta = page.get("metadata") or {}
            kind = str(page.get("kind", "")).removesuffix("List")
            for item in page.get("items") or ():
                item.setdefault("kind", kind)  # list items carry no kind/apiVersion of their own
                item.setdefault("apiVersion", page.get("apiVersion"))
                seen.add(key_of(item))
                self._on_event(item, None)
            del page  # keep one page in memory at a time
            token = str(meta.get("continue") or "")
            if not token:
                self._on_listed(seen)
                self.lists += 1
                self.listed.set()
                return str(meta.get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        """Watch from ``version`` until the server ends the stream; the last version seen."""
        async for event in self._kube.watch(self.path, version, timeout_seconds=self._timeout,
                                            label_selector=self._selector, metadata_only=self._metadata_only):
            obj = event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            kind = event.get("type")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._on_event(obj, str(kind))
        return version

    async def run(self) -> None:
        backoff = 1.0
        version = ""
        while True:
            try:
                if not version:
                    version = await self._list()
                version = await self._watch(version)
                backoff = 1.0
            except ResourceVersionExpired:
                log.info("watch of %s: resourceVersion expired; listing again", self.path)
                version = ""
            except IssuingError as exc:
                log.warning("watch of %s failed (%s); retrying in %.0fs", self.path, exc.message, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def namespace_filter(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """kopf's namespace patterns (globs, ``!`` exclusions, comma lists): the same rule kopf applies to its own
    watches of this operator (Secrets, MFAIdentity handlers), so both see the same namespaces."""
    from kopf._cogs.structs.references import NamespaceName, match_namespace  # kopf exports no public name

    return lambda namespace: any(match_namespace(NamespaceName(namespace), pattern) for pattern in patterns)


def sources(namespaces: tuple[str, ...], collection: str) -> list[tuple[str, Callable[[str], bool]]]:
    """The paths to watch ``collection`` (``/apis/<group>/<version>/{}<plural>`` with ``{}`` where a namespace
    goes), each with the namespaces it serves: one cluster-wide watch for every namespace or for globs
    (filtered here), one per namespace for exact names (what namespaced RBAC grants)."""
    every: Callable[[str], bool] = lambda _namespace: True  # noqa: E731
    if not namespaces:
        return [(collection.format(""), every)]
    if any(is_namespace_pattern(ns) for ns in namespaces):
        return [(collection.format(""), namespace_filter(namespaces))]

    def only(ns: str) -> Callable[[str], bool]:
        return lambda namespace: namespace == ns

    return [(collection.format(f"namespaces/{ns}/"), only(ns)) for ns in dict.fromkeys(namespaces)]


def credential_sources(namespaces: tuple[str, ...]) -> list[tuple[str, Callable[[str], bool]]]:
    return sources(namespaces, f"/apis/{c.GROUP}/{c.VERSION}/{{}}{c.CREDENTIAL_PLURAL}")


class SecretDeletions:
    """The operator's own Secrets (label-selected on the server, metadata only: no secret value is ever
    streamed to the process): a deleted one wakes its credential.

    Only deletions matter. A relist that no longer has a Secret (deleted while no watch was open) counts as
    its deletion: the owner of each known Secret is kept (its CR's name, from the label) for that.
    """

    def __init__(self, on_deleted: Callable[[str, str], None]) -> None:
        self._on_deleted = on_deleted  # (namespace, credential name)
        self._owners: dict[Key, str] = {}

    def observe(self, obj: Mapping[str, Any], event_type: str | None) -> None:
        meta = obj.get("metadata") or {}
        key = key_of(obj)
        owner = str((meta.get("labels") or {}).get(c.CREDENTIAL_LABEL) or "")
        if event_type == "DELETED":
            self._owners.pop(key, None)
            if owner:
                log.info("Secret %s/%s of %s/%s was deleted; waking its credential", key[0], key[1], key[0], owner)
                self._on_deleted(key[0], owner)
        elif owner:
            self._owners[key] = owner

    def listed(self, seen: set[Key], serves: Callable[[str], bool]) -> None:
        for key in [k for k in self._owners if serves(k[0]) and k not in seen]:
            self.observe({"metadata": {"namespace": key[0], "name": key[1],
                                       "labels": {c.CREDENTIAL_LABEL: self._owners[key]}}}, "DELETED")


class Watches:
    """The identity watch first (a credential's pass resolves its identity from it), then the credentials'
    and (unless turned off) the operator's Secrets'."""

    def __init__(self, kube: KubeGateway, *, on_identity: OnEvent, on_identities_listed: OnListed,
                 on_credential: OnEvent, on_credentials_listed: Callable[[set[Key], Callable[[str], bool]], None],
                 namespaces: tuple[str, ...], secrets: SecretDeletions | None = None) -> None:
        self.identities = ListWatch(kube, f"/apis/{c.GROUP}/{c.VERSION}/{c.IDENTITY_PLURAL}",
                                    on_event=on_identity, on_listed=on_identities_listed)
        self.credentials = self._scoped(kube, credential_sources(namespaces), on_credential, on_credentials_listed)
        if secrets is not None:
            self.credentials += self._scoped(kube, sources(namespaces, "/api/v1/{}secrets"), secrets.observe,
                                             secrets.listed, label_selector=SECRET_SELECTOR, metadata_only=True)
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def _scoped(kube: KubeGateway, paths: list[tuple[str, Callable[[str], bool]]], on_event: OnEvent,
                on_listed: Callable[[set[Key], Callable[[str], bool]], None], label_selector: str = "",
                metadata_only: bool = False) -> list[ListWatch]:
        def scoped(serves: Callable[[str], bool]) -> tuple[OnEvent, OnListed]:
            def event(obj: Mapping[str, Any], kind: str | None) -> None:
                if serves(key_of(obj)[0]):
                    on_event(obj, kind)

            return event, lambda seen: on_listed({k for k in seen if serves(k[0])}, serves)

        watches = []
        for path, serves in paths:
            event, listed = scoped(serves)
            watches.append(ListWatch(kube, path, on_event=event, on_listed=listed, label_selector=label_selector,
                                     metadata_only=metadata_only))
        return watches

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run(), name="watches"))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.identities.run(), name="watch-identities"))
        await self.identities.listed.wait()
        for watch in self.credentials:
            self._tasks.append(loop.create_task(watch.run(), name=f"watch {watch.path}"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
