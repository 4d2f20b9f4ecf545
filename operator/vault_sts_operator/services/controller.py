"""Every AssumedRoleCredential on one scheduler: what the watch says, when each is due, one pass each.

`CredentialController` is what the credential watch hands its objects to (services/watch.py `Consumer`):
`observe(body, event_type)` for each object listed or watched, `listed(seen, serves)` after each complete list.
It coordinates four small units and runs the passes:

- the cache (services/credential_cache.py): each CR as compact JSON, bounded per CR, and what passes learnt;
- scheduling at event time (services/wakeups.py): what an event, an identity change or a deleted Secret wakes;
- the metrics source (services/credential_series.py): the per-credential series, rendered from the cache;
- the old-finalizer migration (services/legacy_finalizer.py).

The scheduler (services/scheduler.py) runs `_pass` for a due credential on a bounded pool of workers: the CR is
parsed from the cache and handed to the reconciler (services/reconciler.py: gather, decide, act, report), with
the identity catalog to resolve its MFAIdentity from and what the cache knows of its Secret; what the pass
returns goes back to the cache and says when the next pass is due.

Deletion forgets the CR (its timer, its cached body, its series); so does a list that no longer has it (deleted
while no watch was open). While another replica is active (the scheduler is paused), no pass runs; events keep
the cache current.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from vault_sts_operator.api.specs import IdentitySpec
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain.object_meta import Key, key_of
from vault_sts_operator.services.credential_cache import CredentialCache
from vault_sts_operator.services.credential_series import CredentialSeries
from vault_sts_operator.services.credential_store import PodIdentityStore
from vault_sts_operator.services.legacy_finalizer import LegacyFinalizers
from vault_sts_operator.services.reconciler import CredentialReconciler
from vault_sts_operator.services.scheduler import Scheduler
from vault_sts_operator.services.wakeups import CredentialWakeups

log = logging.getLogger(__name__)


class Identities(Protocol):
    """Where a pass resolves its MFAIdentity (services/identity_catalog.py)."""

    def resolve(self, name: str) -> IdentitySpec: ...


class CredentialController:
    def __init__(self, *, reconciler: CredentialReconciler, kube: KubeGateway, identities: Identities, workers: int,
                 trust_known_secret: bool = True, store: PodIdentityStore | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._reconciler = reconciler
        # Mode PodIdentity's bindings follow the watch on every replica (a standby that takes over knows them).
        self._store = store
        self._identities = identities
        # With the Secret watch on, a Secret deleted by hand is reported (secret_deleted), so a pass may trust
        # what it last wrote. Without it (--no-watch-secrets), every pass reads its Secret by name: that read
        # is the only way a deleted Secret is noticed.
        self._trust_known_secret = trust_known_secret
        self.cache = CredentialCache()
        self.scheduler: Scheduler[Key] = Scheduler(self._pass, workers=workers)
        self.wakeups = CredentialWakeups(self.cache, self.scheduler, clock)
        self.series = CredentialSeries(self.cache, active=lambda: not self.scheduler.paused)
        self.series.register()
        self._finalizers = LegacyFinalizers(kube)
        if store is not None:
            store.set_waker(self.wakeups.wake)

    # -- what the watch says (services/watch.py Consumer) ------------------------------------------
    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        key = key_of(body)
        self._finalizers.observe(key, body, event_type)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.forget(key)
            return
        # While another replica is active, its status writes are the truth: every event re-decides the key.
        paused = self.scheduler.paused
        if self._store is not None:
            self._store.observe(key, body)
        sighting = self.cache.store(key, body, keep_unchanged=not paused)
        if sighting is not None:
            self.wakeups.observed(key, sighting, paused=paused)

    def listed(self, seen: set[Key], serves: Callable[[str], bool]) -> None:
        """A complete list of the namespaces ``serves`` accepts: forget what it no longer has."""
        for key in [k for k in self.cache if serves(k[0]) and k not in seen]:
            log.info("%s/%s is gone (deleted while the watch was away); forgetting it", *key)
            self.forget(key)

    # -- what else wakes a credential -------------------------------------------------------------
    def secret_deleted(self, namespace: str, name: str) -> None:
        """The Secret watch saw the credential's Secret deleted (services/watch.py SecretDeletions)."""
        self.wakeups.secret_deleted((namespace, name))

    def identity_changed(self, identity: str) -> None:
        """The identity catalog or its verification saw the identity change: its credentials re-decide now."""
        self.wakeups.identity_changed(identity)

    def forget(self, key: Key) -> None:
        if self._store is not None:
            self._store.forget(key)
        self.cache.forget(key)
        self.scheduler.forget(key)

    def __len__(self) -> int:
        return len(self.cache)

    # -- one pass --------------------------------------------------------------------------------
    async def _pass(self, key: Key) -> float | None:
        cached = self.cache.get(key)
        if cached is None:
            return None
        deletions = cached.secret_deletions
        result = await self._reconciler.reconcile(self.cache.body(cached), self._identities.resolve,
                                                  self.cache.failures(key), secret_absent=cached.fresh,
                                                  known=cached.secret if self._trust_known_secret else None)
        current = self.cache.get(key)
        if current is None or result.gone:  # deleted during the pass (or before it, unseen)
            # Also drops what the pass put in the Pod Identity store after the deletion forgot the key.
            self.forget(key)
            return None
        if current.fingerprint[0] != cached.fingerprint[0]:  # deleted and created again meanwhile: start over
            return 0.0
        # The Secret this pass wrote (or read) was deleted while it ran, after that write: the pass the deletion
        # queued must read it, not trust it (else it is back only at the next renewal).
        secret = result.secret if current.secret_deletions == deletions else None
        self.cache.passed(key, current, failures=result.failures, reason=result.reason, renewal=result.renewal,
                          secret=secret, status=result.status, ready=result.ready)
        return result.sleep_seconds
