"""The operator's list-and-watch of its collections (MFAIdentities, AssumedRoleCredentials, its own Secrets),
handing every object to the controller as it is, one at a time, and keeping nothing else.

`ListWatch` is client-go's reflector (`tools/cache/reflector.go`) in miniature:

- **List**, in pages of `PAGE_SIZE`, handing every item over (`on_event(obj, None)`), then `on_listed(keys)`
  with every key the list had (what a relist no longer has was deleted while no watch was open). Every list
  is a consistent read (`resourceVersion=""`), which is what client-go's `relistResourceVersion` falls back
  to after a 410. Its other answers do not fit paged lists: `"0"` is served from the watch cache, which
  ignores `limit` (the whole collection in one body: the memory peak the pages avoid), and a paged list at
  an explicit version is an exact read from etcd, no cheaper and expired (410) by the time a relist needs it.
- **Watch** from the last synced resourceVersion, with bookmarks, for `min_watch_timeout * (1 + rand)`
  seconds (client-go's randomised timeout: the watches of many replicas do not all end, and reconnect,
  together). Each event and each BOOKMARK advances the version; when the server ends the stream, watch
  again from there at once.
- **410 Gone** (the answer to the watch request, or an ERROR event with code 410): list again.
- **Any other failure of the API or the stream** (unreachable, 5xx, a stream cut mid-event, a line that is
  not JSON, a watch that ends in under a second with no event): logged, backed off as client-go's reflector
  does (`domain/backoff.py`: 0.8 s doubling to 30 s, jitter 1.0, reset after 2 min without failure), then
  watched again from the last good version (or, if the list failed, listed again).
- **Progress**: `on_progress()` at each page listed, each event, each bookmark, and each watch that ran to
  the server's timeout. The supervisor's stall bound (services/supervisor.py) turns a watch with none into
  a liveness failure. Failures are not progress: a watch that cannot reach the API server is not watching.

The callbacks' contract: `on_event` and `on_listed` must not raise. An exception from either (a bug in the
controller) is not swallowed, which would lose that object's event for good: it ends `run()` with the
exception, so that the supervisor logs it and starts the watch again. A new run lists first, so every
object is handed over again, the one whose event failed included.

`Watches` makes the operator's watches and gives them to the supervisor (`supervised(progress)`): the identity watch
first, then (once the identities are listed: a credential's pass resolves its identity from them) the
credentials' and, unless turned off, the operator's Secrets'.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from vault_sts_operator.api import constants as c
from vault_sts_operator.clients import kube_paths as paths
from vault_sts_operator.clients.kube import KubeGateway, ResourceVersionExpired
from vault_sts_operator.config import is_namespace_pattern
from vault_sts_operator.domain.backoff import ExponentialBackoff
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.namespaces import namespace_matcher
from vault_sts_operator.domain.object_meta import Key, key_of

log = logging.getLogger(__name__)

OnEvent = Callable[[Mapping[str, Any], str | None], None]  # (object, event type; None for a listed item)
OnListed = Callable[[set[Key]], None]  # every key the list had
Factory = Callable[[], Awaitable[None]]

SECRET_SELECTOR = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY_VALUE}"  # the Secrets this operator writes
# Items per list page. A page is read and parsed whole, so its size bounds the memory a relist needs: with
# 500 (client-go's default), 200 credentials a tenant gave 200 KiB of their own metadata each took the
# operator from 73 to 181 MB during a relist; with 50, to 101 MB (tests/e2e/test_tenant_limits.py). At
# ten thousand ordinary credentials (a few KB each) 200 pages instead of 20 cost the restart little
# (benchmarks/FINDINGS.md, "Pages").
PAGE_SIZE = 50
MIN_WATCH_TIMEOUT = 300.0  # client-go's minWatchTimeout: each watch asks for a timeout in [5 min, 10 min)
SHORT_WATCH_SECONDS = 1.0  # a watch that ends sooner with no event is a failure (client-go's "very short watch")
# The bound past which a watch without progress counts as stalled (Watches(stall_after=...) overrides it).
# A healthy watch of a quiet collection reports progress at least when the server ends it at its timeout
# (under 2 x 5 min; a silent connection is cut by clients/kube.py 30 s after that), and at bookmarks (on the
# stack's API server: about 2 s before the timeout, once the collection's version moved). Twice the longest
# timeout leaves room for a watch that fails and waits its longest backoff (60 s) without a false alarm; a
# watch that cannot list or watch for 20 minutes (failures are not progress) fails the liveness probe.
STALL_AFTER = 2 * 2 * MIN_WATCH_TIMEOUT
# What the API client raises for a failed call or a stream it could not read: an API error (clients/kube.py
# turns HTTP and connection errors into KubernetesError), a line that is not JSON (JSONDecodeError is a
# ValueError) or not an object (dict() of a list or number: TypeError).
CLIENT_ERRORS: tuple[type[Exception], ...] = (IssuingError, ValueError, TypeError)


def _nothing() -> None:
    return None


class _Expired(Exception):
    """The version listed or watched from is gone (410): list again."""


class _Failed(Exception):
    """A list or watch failed (the client's error is its cause): back off, then go on from the last version."""


class ListWatch:
    def __init__(self, kube: KubeGateway, path: str, *, on_event: OnEvent, on_listed: OnListed,
                 on_progress: Callable[[], None] = _nothing, label_selector: str = "", metadata_only: bool = False,
                 page_size: int = PAGE_SIZE, min_watch_timeout: float = MIN_WATCH_TIMEOUT,
                 backoff: ExponentialBackoff | None = None, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random) -> None:
        self._kube = kube
        self.path = path
        self.name = f"watch {path}"
        self._selector = label_selector
        self._metadata_only = metadata_only
        self._on_event = on_event
        self._on_listed = on_listed
        self.on_progress = on_progress  # (Watches.supervised sets it to the supervisor's)
        self._page_size = page_size
        self._min_timeout = min_watch_timeout
        self._backoff = backoff if backoff is not None else ExponentialBackoff()
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self.version = ""  # the last synced resourceVersion (of a list, an event or a bookmark)
        self.listed = asyncio.Event()  # set once the first complete list was handed over
        self.lists = 0  # complete lists so far
        self.bookmarks = 0
        self.failures = 0  # lists and watches that failed and were retried

    def watch_timeout(self) -> int:
        """Seconds the next watch asks the server for: client-go's `minWatchTimeout * (1 + rand)`."""
        return int(self._min_timeout * (1.0 + self._rand()))

    async def run(self) -> None:
        """List, then watch, for ever. Raises only what `on_event` / `on_listed` raised (see the module)."""
        must_list = True
        while True:
            try:
                if must_list:
                    await self._list()
                    must_list = False
                await self._watch()
            except _Expired as exc:
                must_list = True
                delay = self._backoff.next_delay(self._clock(), self._rand())
                log.info("%s: %s; listing again in %.1fs", self.name, exc, delay)
                await self._sleep(delay)
            except _Failed as exc:
                self.failures += 1
                delay = self._backoff.next_delay(self._clock(), self._rand())
                then = "listing again" if must_list else f"watching again from resourceVersion {self.version}"
                log.warning("%s: %s; %s in %.1fs", self.name, exc, then, delay)
                await self._sleep(delay)

    async def _list(self) -> None:
        seen: set[Key] = set()
        token = ""
        while True:
            try:
                page = await self._kube.list_page(self.path, limit=self._page_size, continue_token=token,
                                                  label_selector=self._selector, metadata_only=self._metadata_only)
            except ResourceVersionExpired as exc:  # the continue token expired
                raise _Expired(f"listing: {exc}") from exc
            except CLIENT_ERRORS as exc:
                raise _Failed(f"listing failed ({_describe(exc)})") from exc
            meta = page.get("metadata") or {}
            kind = str(page.get("kind", "")).removesuffix("List")
            for item in page.get("items") or ():
                item.setdefault("kind", kind)  # list items carry no kind/apiVersion of their own
                item.setdefault("apiVersion", page.get("apiVersion"))
                seen.add(key_of(item))
                self._on_event(item, None)
            self.on_progress()
            version = str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            del page  # keep one page in memory at a time
            if not token:
                self._on_listed(seen)
                self.version = version
                self.lists += 1
                self.listed.set()
                self.on_progress()
                return

    async def _watch(self) -> None:
        """Watch from the last synced version until the server ends the stream."""
        started, events = self._clock(), 0
        stream = self._kube.watch(self.path, self.version, timeout_seconds=self.watch_timeout(),
                                  label_selector=self._selector, metadata_only=self._metadata_only)
        try:
            while True:
                event = await self._next(stream)
                if event is None:
                    break
                events += 1
                kind = event.get("type")
                obj = event.get("object") or {}
                version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._on_event(obj, str(kind))
                elif kind == "BOOKMARK":
                    self.bookmarks += 1
                else:
                    raise _Failed(f"the watch sent an event of unknown type {kind!r}")
                if version:
                    self.version = version
                self.on_progress()
        finally:  # also when a callback raised: the response is released now, not when collected
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        if events == 0 and self._clock() - started < SHORT_WATCH_SECONDS:
            raise _Failed("the watch ended at once without an event")
        self.on_progress()  # a watch that ran its course

    async def _next(self, stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
        """The stream's next event; None when the server ended it."""
        try:
            return await anext(stream)
        except StopAsyncIteration:
            return None
        except ResourceVersionExpired as exc:
            raise _Expired(f"watching from resourceVersion {self.version}: {exc}") from exc
        except CLIENT_ERRORS as exc:
            raise _Failed(f"the watch failed ({_describe(exc)})") from exc


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, IssuingError) else f"{type(exc).__name__}: {exc}"


def sources(namespaces: tuple[str, ...], collection: Callable[[str], str]) -> list[tuple[str, Callable[[str], bool]]]:
    """The paths to watch a collection (`collection(namespace)`, "" for every namespace; clients/kube_paths.py),
    each with the namespaces it serves: one cluster-wide watch for every namespace or for patterns (filtered
    here by domain/namespaces.py), one per namespace for exact names (what namespaced RBAC grants)."""
    every: Callable[[str], bool] = lambda _namespace: True  # noqa: E731
    if not namespaces:
        return [(collection(""), every)]
    if any(is_namespace_pattern(ns) for ns in namespaces):
        return [(collection(""), namespace_matcher(namespaces))]

    def only(ns: str) -> Callable[[str], bool]:
        return lambda namespace: namespace == ns

    return [(collection(ns), only(ns)) for ns in dict.fromkeys(namespaces)]


def credential_sources(namespaces: tuple[str, ...]) -> list[tuple[str, Callable[[str], bool]]]:
    return sources(namespaces, paths.credentials)


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


class Consumer(Protocol):
    """What a watch of a namespaced collection hands its objects to: the credential controller
    (services/controller.py), the Secret deletions (`SecretDeletions`). Neither may raise (see the module)."""

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """One object as listed (`event_type` None) or watched (ADDED, MODIFIED, DELETED)."""

    def listed(self, seen: set[Key], serves: Callable[[str], bool]) -> None:
        """A complete list had `seen`, of the namespaces `serves` accepts (what is held beyond it was deleted)."""


class Watches:
    """The operator's watches, for the supervisor: `supervised(progress)` gives each as (name, factory,
    stall_after), for `Supervisor.add`."""

    def __init__(self, kube: KubeGateway, *, on_identity: OnEvent, on_identities_listed: OnListed,
                 credentials: Consumer, namespaces: tuple[str, ...], secrets: Consumer | None = None,
                 stall_after: float = STALL_AFTER) -> None:
        self._stall_after = stall_after
        self.identities = ListWatch(kube, paths.identities(),
                                    on_event=on_identity, on_listed=on_identities_listed)
        self.credentials = self._scoped(kube, credential_sources(namespaces), credentials)
        if secrets is not None:
            self.credentials += self._scoped(kube, sources(namespaces, paths.secrets), secrets,
                                             label_selector=SECRET_SELECTOR, metadata_only=True)

    @staticmethod
    def _scoped(kube: KubeGateway, paths: list[tuple[str, Callable[[str], bool]]], consumer: Consumer,
                label_selector: str = "", metadata_only: bool = False) -> list[ListWatch]:
        def scoped(serves: Callable[[str], bool]) -> tuple[OnEvent, OnListed]:
            def event(obj: Mapping[str, Any], kind: str | None) -> None:
                if serves(key_of(obj)[0]):
                    consumer.observe(obj, kind)

            return event, lambda seen: consumer.listed({k for k in seen if serves(k[0])}, serves)

        watches = []
        for path, serves in paths:
            event, listed = scoped(serves)
            watches.append(ListWatch(kube, path, on_event=event, on_listed=listed, label_selector=label_selector,
                                     metadata_only=metadata_only))
        return watches

    @property
    def all(self) -> list[ListWatch]:
        return [self.identities, *self.credentials]

    def supervised(self, progress: Callable[[str], None] = lambda _name: None) -> list[tuple[str, Factory, float]]:
        """Every watch as (name, factory, stall_after) for `Supervisor.add`; each watch's progress is reported
        as `progress(name)` (pass `supervisor.progress`). The credentials' and Secrets' watches wait for the
        identities' first complete list (a credential's pass resolves its identity from it); that wait is
        once: a restarted identity watch does not hold them back."""
        for watch in self.all:
            watch.on_progress = functools.partial(progress, watch.name)
        return [(self.identities.name, self.identities.run, self._stall_after)] + [
            (watch.name, self._after_identities(watch), self._stall_after) for watch in self.credentials]

    def _after_identities(self, watch: ListWatch) -> Factory:
        async def run() -> None:
            await self.identities.listed.wait()
            await watch.run()

        return run
