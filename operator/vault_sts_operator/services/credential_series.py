"""The metric series of every credential the controller holds, rendered at scrape time from its cache.

`CredentialSeries.register()` makes the cache the source of the per-credential series (ready, reason, renewal,
expiry: metrics.CREDENTIALS) and of the gauges of credentials scheduled and of this replica's activity. Nothing is
kept per series: a credential the cache forgets has no series at the next scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vault_sts_operator import metrics
from vault_sts_operator.services.credential_cache import CredentialCache


class CredentialSeries:
    def __init__(self, cache: CredentialCache, *, active: Callable[[], bool]) -> None:
        self._cache = cache
        self._active = active  # this replica runs passes (it leads)

    def register(self) -> None:
        metrics.SCHEDULED_CREDENTIALS.set_function(lambda: len(self._cache))
        metrics.ACTIVE.set_function(lambda: 1.0 if self._active() else 0.0)
        metrics.CREDENTIALS.source = self.states

    def states(self) -> Iterator[metrics.CredentialState]:
        for (namespace, name), cached in self._cache.items():
            yield metrics.CredentialState(namespace, name, cached.expiration, cached.ready, cached.reason,
                                          cached.renewal)
