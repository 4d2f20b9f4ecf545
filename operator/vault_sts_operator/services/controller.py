"""Every AssumedRoleCredential on one scheduler: what the watch says, when each is due, one pass each.

The credential watch (services/watch.py) feeds `observe()` (it only records and enqueues); the
scheduler runs passes on a bounded pool of workers. Per credential the controller keeps the CR as compact JSON (no
managedFields; the body is parsed again only for a pass) and the count of failed passes.

- A CR seen for the first time whose status says it was issued for its current generation is
  scheduled at `status.renewalTime` (written after the Secret, so never later than the Secret's
  own renewal): a restart reads no Secret and calls no STS for credentials that are not due.
- A new CR with an empty status is issued without reading its Secret first.
- A spec change (generation), a new `vaultsts.io/rotate` value, `wake()` or a change of its
  identity runs a pass at once. Status-only updates (our own patches) wake nothing.
- Deletion forgets the CR: its timer, its cached body and its per-credential metrics. There is no
  finalizer: the Secret goes with the CR through its owner reference. The finalizer an older
  version (a kopf daemon per CR) added is removed when such a CR is first seen, so that deleting
  it does not hang.
- A list that no longer has a CR (deleted while no watch was open) forgets it too (`listed`).
- While another replica is active (kopf peering, services/peering.py), no pass runs; the watch keeps this replica's
  record current, and each event re-schedules its CR from the status the active replica wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from vault_sts_operator import metrics
from vault_sts_operator.api import constants as c
from vault_sts_operator.api import reasons
from vault_sts_operator.api.conditions import find_condition
from vault_sts_operator.api.timefmt import parse_time
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.sts_limits import MAX_SPEC_BYTES, OVERSIZED_SPEC
from vault_sts_operator.services.gatherer import IdentityResolver, KnownSecret
from vault_sts_operator.services.reconciler import CredentialReconciler
from vault_sts_operator.services.scheduler import Scheduler

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
MAX_ROTATE_VALUE = 128  # longer vaultsts.io/rotate values are kept (and recorded on the Secret) as their hash


class _Cached:
    """One CR as the watch last showed it (plus the status our own passes wrote since)."""

    __slots__ = ("expiration", "fingerprint", "fresh", "identity", "raw", "ready", "reason", "renewal", "secret")

    def __init__(self, raw: bytes, identity: str, fingerprint: tuple[object, ...], fresh: bool) -> None:
        self.raw = raw
        self.identity = identity
        self.fingerprint = fingerprint
        self.fresh = fresh  # no Secret issued for it yet, as far as its status tells
        self.secret: KnownSecret | None = None  # the Secret as this process last wrote or read it
        # For the metrics (metrics.CredentialSeries renders them at scrape time):
        self.expiration: float | None = None  # Unix time its credentials expire
        self.ready: bool | None = None  # its Ready condition, as the status showed it or a pass left it
        self.reason = ""  # that condition's reason (interned: a handful of distinct values)
        self.renewal: float | None = None  # Unix time of its next scheduled rotation


def fingerprint(body: Mapping[str, Any]) -> tuple[object, ...]:
    """What must trigger a pass: a new object (uid), a spec change (generation), a new rotate request."""
    meta = body.get("metadata") or {}
    return meta.get("uid"), meta.get("generation"), (meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION)


def bounded_rotate(value: object) -> str | None:
    """The rotate annotation as the controller keeps it: a long value (a tenant's metadata is bounded by nothing
    but the object's size) is kept as its hash. A pass only compares it with the one its Secret records."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= MAX_ROTATE_VALUE:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _encode(compact: Mapping[str, Any]) -> bytes:
    return json.dumps(compact, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def _compact(body: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """What a pass needs of the CR, and its compact JSON: bounded per CR whatever the object's size.

    Of the metadata only the names, uid, generation and the rotate annotation (hashed when long); the spec whole
    unless its JSON exceeds MAX_SPEC_BYTES (more than the CRD's limits allow: a CR created before them, or with
    validation off), then a marker that parse_credential refuses as InvalidSpec before anything is read or sent.
    """
    meta = body.get("metadata") or {}
    rotate = bounded_rotate((meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION))
    compact: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                     "generation": meta.get("generation"),
                     "annotations": {c.ROTATE_ANNOTATION: rotate} if rotate is not None else {}},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    raw = _encode(compact)
    if len(raw) > MAX_SPEC_BYTES:
        size = len(_encode(compact["spec"]))
        if size > MAX_SPEC_BYTES:
            compact["spec"] = {OVERSIZED_SPEC: size}
            raw = _encode(compact)
    return compact, raw


def scheduled_renewal(body: Mapping[str, Any]) -> datetime | None:
    """`status.renewalTime` when the status says the current generation was issued and is Ready."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    ready = find_condition(status.get("conditions"), reasons.READY)
    if (ready is None or ready.get("status") != "True" or status.get("observedGeneration") != meta.get("generation")
            or not status.get("renewalTime") or not status.get("accessKeyId")):
        return None
    if (meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION):
        return None  # whether the request was served is recorded on the Secret: read it
    try:
        return parse_time(str(status["renewalTime"]))
    except ValueError:
        return None


def _status_expiration(body: Mapping[str, Any]) -> float | None:
    try:
        return parse_time(str(body["status"]["expiration"])).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class CredentialController:
    def __init__(self, *, reconciler: CredentialReconciler, kube: KubeGateway, workers: int,
                 trust_known_secret: bool = True,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._reconciler = reconciler
        # With the Secret watch on, a Secret deleted by hand is reported (secret_deleted), so a pass may trust
        # what it last wrote. Without it (--no-watch-secrets), every pass reads its Secret by name: that read
        # is the only way a deleted Secret is noticed.
        self._trust_known_secret = trust_known_secret
        self._kube = kube
        self._clock = clock
        self._objects: dict[Key, _Cached] = {}
        self._failures: dict[Key, int] = {}
        self.resolve: IdentityResolver | None = None  # set by the handlers from kopf's identity index
        self.scheduler: Scheduler[Key] = Scheduler(self._pass, workers=workers)
        self._chores: set[asyncio.Task[None]] = set()  # legacy finalizer removals in flight
        metrics.SCHEDULED_CREDENTIALS.set_function(lambda: len(self._objects))
        metrics.ACTIVE.set_function(lambda: 0.0 if self.scheduler.paused else 1.0)
        metrics.CREDENTIALS.source = self._series

    def _series(self) -> Iterator[metrics.CredentialState]:
        for (namespace, name), cached in list(self._objects.items()):
            yield metrics.CredentialState(namespace, name, cached.expiration, cached.ready, cached.reason,
                                          cached.renewal)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()

    # -- what the watch says -----------------------------------------------------------------------
    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        finalizers = list(meta.get("finalizers") or ())
        if c.FINALIZER in finalizers and event_type != "DELETED":
            self._remove_legacy_finalizer(key, finalizers)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.forget(key)
            return
        compact, raw = _compact(body)
        identity = str((compact["spec"].get("identityRef") or {}).get("name", ""))
        print_ = fingerprint(compact)
        old = self._objects.get(key)
        expiration = _status_expiration(compact)
        # While another replica is active, its status writes are the truth: every event re-decides the key from
        # them as on first sight (a wake queued meanwhile must not run once this replica takes over).
        paused = self.scheduler.paused
        if old is not None and old.fingerprint == print_ and not paused:
            old.raw = raw
            old.identity = identity
            old.expiration = expiration or old.expiration
            return
        renew_at = scheduled_renewal(compact)
        fresh = not compact["status"].get("accessKeyId") and not compact["status"].get("secretName")
        replacement = _Cached(raw, identity, print_, fresh=fresh)
        replacement.expiration = expiration
        if old is not None and old.fingerprint[0] == print_[0]:  # same object (uid): its Secret is still known
            replacement.secret = old.secret
            replacement.expiration = expiration or old.expiration
            replacement.ready, replacement.reason, replacement.renewal = old.ready, old.reason, old.renewal
        else:  # first sight (a restart): the series start from what the status says until a pass runs
            ready = find_condition(compact["status"].get("conditions"), reasons.READY)
            if ready is not None:
                replacement.ready = ready.get("status") == "True"
                replacement.reason = sys.intern(str(ready.get("reason") or ""))
            replacement.renewal = renew_at.timestamp() if renew_at is not None else None
        self._objects[key] = replacement
        self._failures.pop(key, None)
        if (old is None or paused) and renew_at is not None:
            # Exactly at the renewal time, not capped like a pass's own sleep: until then nothing is read.
            self.scheduler.forget(key)  # (a wake queued while paused)
            self.scheduler.schedule(key, (renew_at - self._clock()).total_seconds())
        else:
            self.scheduler.wake(key)

    def listed(self, seen: set[Key], serves: Callable[[str], bool]) -> None:
        """A complete list of the namespaces ``serves`` accepts: forget what it no longer has."""
        for key in [k for k in self._objects if serves(k[0]) and k not in seen]:
            log.info("%s/%s is gone (deleted while the watch was away); forgetting it", *key)
            self.forget(key)

    def _remove_legacy_finalizer(self, key: Key, finalizers: list[str]) -> None:
        async def remove() -> None:
            try:
                await self._kube.remove_finalizer(key[0], key[1], finalizers, c.FINALIZER)
            except IssuingError as exc:  # the next event of the object tries again
                log.warning("%s", exc.message)

        task = asyncio.get_running_loop().create_task(remove(), name=f"finalizer {key[0]}/{key[1]}")
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def forget(self, key: Key) -> None:
        self._objects.pop(key, None)  # its series go with it (the collector reads _objects)
        self._failures.pop(key, None)
        self.scheduler.forget(key)

    def wake(self, namespace: str, name: str) -> None:
        """Run a pass for this credential now (e.g. its Secret was changed by someone else)."""
        if (namespace, name) in self._objects:
            self.scheduler.wake((namespace, name))

    def secret_deleted(self, namespace: str, name: str) -> None:
        """The credential's Secret was deleted (by hand): forget what this process knew of it, so the
        pass reads instead of trusting its memory, finds no Secret and issues one again."""
        cached = self._objects.get((namespace, name))
        if cached is not None:
            cached.secret = None
            self.scheduler.wake((namespace, name))

    def identity_changed(self, identity: str) -> None:
        """The identity's spec or readiness changed: its credentials re-decide now."""
        for key, cached in self._objects.items():
            if cached.identity == identity:
                self.scheduler.wake(key)

    def __len__(self) -> int:
        return len(self._objects)

    # -- one pass --------------------------------------------------------------------------------
    async def _pass(self, key: Key) -> float | None:
        cached = self._objects.get(key)
        if cached is None or self.resolve is None:
            return None if cached is None else 1.0
        body = json.loads(cached.raw)
        result = await self._reconciler.reconcile(body, self.resolve, self._failures.get(key, 0),
                                                  secret_absent=cached.fresh,
                                                  known=cached.secret if self._trust_known_secret else None)
        current = self._objects.get(key)
        if result.gone:
            self.forget(key)
        if current is None or result.gone:  # deleted during the pass (or before it, unseen)
            return None
        if current.fingerprint[0] != cached.fingerprint[0]:  # deleted and created again meanwhile: start over
            return 0.0
        current.fresh = False
        current.ready = result.failures == 0
        current.reason = sys.intern(result.reason)
        if result.renewal is not None:  # a failed pass keeps the last one (as the status does)
            current.renewal = result.renewal
        if result.secret is not None:
            current.secret = result.secret
            current.expiration = result.secret.record.expiration.timestamp()
        if result.status:  # keep what this pass wrote until the watch brings it
            merged = json.loads(current.raw)
            merged["status"] = {**merged.get("status", {}), **result.status}
            current.raw = _encode(merged)
        if result.failures:
            self._failures[key] = result.failures
        else:
            self._failures.pop(key, None)
        return result.sleep_seconds
