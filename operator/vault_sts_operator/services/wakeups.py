"""What wakes a credential, decided when an event arrives: the scheduler's entries for credentials.

- A CR seen for the first time whose status says it was issued for its current generation is scheduled at
  `status.renewalTime` (written after the Secret, so never later than the Secret's own renewal): a restart reads
  no Secret and calls no STS for credentials that are not due.
- Any other new CR, a spec change (generation), a new `vaultsts.io/rotate` value, a change of its identity, its
  Secret deleted, or `wake()`: a pass at once. Status-only updates (our own patches) wake nothing.
- While another replica is active (the scheduler is paused), every event re-schedules its CR from the status the
  active replica wrote, as on first sight (a wake queued meanwhile must not run once this replica takes over).

After a pass, the scheduler itself schedules the next one from what the pass returned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vault_sts_operator.domain.object_meta import Key
from vault_sts_operator.services.credential_cache import CredentialCache, Sighting
from vault_sts_operator.services.scheduler import Scheduler


class CredentialWakeups:
    def __init__(self, cache: CredentialCache, scheduler: Scheduler[Key], clock: Callable[[], datetime]) -> None:
        self._cache = cache
        self._scheduler = scheduler
        self._clock = clock

    def observed(self, key: Key, sighting: Sighting, *, paused: bool) -> None:
        """The cache stored a new or changed CR (`CredentialCache.store`)."""
        if (sighting.first or paused) and sighting.renew_at is not None:
            # Exactly at the renewal time, not capped like a pass's own sleep: until then nothing is read.
            self._scheduler.forget(key)  # (a wake queued while paused)
            self._scheduler.schedule(key, (sighting.renew_at - self._clock()).total_seconds())
        else:
            self._scheduler.wake(key)

    def wake(self, key: Key) -> None:
        """Run a pass for this credential now (e.g. its Secret was changed by someone else)."""
        if key in self._cache:
            self._scheduler.wake(key)

    def secret_deleted(self, key: Key) -> None:
        """The credential's Secret was deleted (by hand): forget what this process knew of it, so the pass reads
        instead of trusting its memory, finds no Secret and issues one again."""
        cached = self._cache.get(key)
        if cached is not None:
            cached.secret = None
            cached.secret_deletions += 1
            self._scheduler.wake(key)  # after the pass in flight, if one is

    def identity_changed(self, identity: str) -> None:
        """The identity's spec or readiness changed: its credentials re-decide now."""
        for key in self._cache.with_identity(identity):
            self._scheduler.wake(key)
