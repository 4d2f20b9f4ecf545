"""The credential scheduler follows kopf's peering: a watch of the peering object(s), the rule of
domain/peering.py, and the scheduler paused or resumed on each change.

kopf pauses its own watches (MFAIdentities here) the moment its watch of the peering object shows a
peer of higher priority. Credentials are not kopf's (services/watch.py), so the scheduler must follow
the same object just as closely: an earlier version polled it every 5 s, and two replicas started
together both issued for up to that long (the node suite's failover test caught it). A watch reacts in
milliseconds; entries that expire with no event (a replica killed without saying goodbye) are
re-checked at their deadline, as kopf does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.config import is_namespace_pattern
from vault_sts_operator.domain.peering import decide, has_own_entry
from vault_sts_operator.services.tasks import cancel_and_wait
from vault_sts_operator.services.watch import Key, ListWatch

log = logging.getLogger(__name__)

# How long a replica that finds a live peer of lower priority waits, from the moment its own entry
# appeared, before it runs passes: that peer's watch shows the entry within milliseconds and pauses its
# scheduler; a pass it had already started (a few hundred ms; one that waits for a fresh TOTP period
# is kept apart by the per-device Lease) finishes meanwhile.
TAKEOVER_GRACE_SECONDS = 5.0


class Pausable(Protocol):
    def pause(self) -> None: ...
    def resume(self) -> None: ...


def peering_paths(namespaces: tuple[str, ...]) -> list[tuple[str, str]]:
    """(collection path, namespace) of every peering object a replica takes part in: kopf peers per
    namespace when given exact namespaces, cluster-wide otherwise (the chart refuses patterns with peering)."""
    exact = [ns for ns in dict.fromkeys(namespaces) if not is_namespace_pattern(ns)]
    if not exact:
        return [("/apis/kopf.dev/v1/clusterkopfpeerings", "")]
    return [(f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings", ns) for ns in exact]


class PeeringGate:
    def __init__(self, kube: KubeGateway, scheduler: Pausable, *, name: str, priority: int,
                 namespaces: tuple[str, ...], clock: Callable[[], datetime],
                 grace_seconds: float = TAKEOVER_GRACE_SECONDS) -> None:
        self._scheduler = scheduler
        self._name = name
        self._priority = priority
        self._clock = clock
        self._grace = grace_seconds
        self._places = [namespace for _path, namespace in peering_paths(namespaces)]
        self._statuses: dict[str, Mapping[str, Any] | None] = dict.fromkeys(self._places)
        self._entered_at: datetime | None = None
        self._changed = asyncio.Event()
        self._active: bool | None = None
        self.watches = [ListWatch(kube, path, on_event=self._on_event, on_listed=self._on_listed)
                        for path, _namespace in peering_paths(namespaces)]
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the watches say --------------------------------------------------------------------
    def _on_event(self, obj: Mapping[str, Any], event_type: str | None) -> None:
        meta = obj.get("metadata") or {}
        place = str(meta.get("namespace") or "")
        if meta.get("name") != self._name or place not in self._statuses:
            return
        self._statuses[place] = None if event_type == "DELETED" else dict(obj.get("status") or {})
        self._changed.set()

    def _on_listed(self, seen: set[Key]) -> None:
        for place in self._places:
            if (place, self._name) not in seen and self._statuses.get(place) is not None:
                self._statuses[place] = None
                self._changed.set()

    # -- the decision ----------------------------------------------------------------------------
    def evaluate(self) -> datetime | None:
        """Pause or resume the scheduler from what the watches last showed; when to look again unprompted."""
        now = self._clock()
        statuses = [self._statuses[place] for place in self._places]
        if all(has_own_entry(status, self._priority, now) for status in statuses):
            self._entered_at = self._entered_at or now
        else:
            self._entered_at = None
        verdict = decide(statuses, self._priority, now, entered_at=self._entered_at, grace_seconds=self._grace)
        if verdict.active != self._active:
            log.info("peering %s: %s; %s", self._name, verdict.why,
                     "running credential passes" if verdict.active else "no credential pass runs here")
            self._active = verdict.active
        if verdict.active:
            self._scheduler.resume()
        else:
            self._scheduler.pause()
        return verdict.recheck_at

    async def _follow(self) -> None:
        while True:
            recheck_at = self.evaluate()
            self._changed.clear()
            timeout = None if recheck_at is None else max((recheck_at - self._clock()).total_seconds(), 0.0) + 0.05
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._scheduler.pause()  # until the peering object says this replica is the one
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(watch.run(), name=f"watch {watch.path}") for watch in self.watches]
        self._tasks.append(loop.create_task(self._follow(), name="peering-gate"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
