"""One active replica, chosen by a coordination.k8s.io/v1 Lease in the operator's own namespace.

The loop is client-go's `LeaderElector.Run`: try to acquire every retry period (jittered), then renew every
retry period; a leader that has not renewed within the renew deadline stops leading (the scheduler pauses)
and goes back to acquiring. On a graceful shutdown the leader releases the Lease (empty holder), so the
other replica takes over within one retry period instead of a lease duration. Nothing in a tenant's
namespace takes part: the Lease lives where the operator runs, and its RBAC is the chart's Role there.

The per-device TOTP Lease (clients/leases.py) stays: during a partition two replicas may both believe
they lead for up to a lease duration, and that Lease is what keeps them from spending one code twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from vault_sts_operator.clients import kube_paths as paths
from vault_sts_operator.clients.kube_rest import ApiError, KubeRest
from vault_sts_operator.domain.leader import ElectionTiming, LeaseRecord, may_take, next_record, released
from vault_sts_operator.domain.timefmt import format_micro_time

log = logging.getLogger(__name__)

DEFAULT_TIMING = ElectionTiming()
JITTER_FACTOR = 1.2  # client-go's wait.JitterUntil factor for the retry period


class Pausable(Protocol):
    def pause(self) -> None: ...
    def resume(self) -> None: ...


def _record(lease: dict[str, Any] | None) -> LeaseRecord | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return LeaseRecord(holder=str(spec.get("holderIdentity") or ""),
                       lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                       acquire_time=str(spec.get("acquireTime") or ""), renew_time=str(spec.get("renewTime") or ""),
                       transitions=int(spec.get("leaseTransitions") or 0))


def _spec(record: LeaseRecord) -> dict[str, Any]:
    spec: dict[str, Any] = {"holderIdentity": record.holder or None,
                            "leaseDurationSeconds": record.lease_duration_seconds,
                            "renewTime": record.renew_time, "leaseTransitions": record.transitions}
    if record.acquire_time:
        spec["acquireTime"] = record.acquire_time
    return spec


class LeaderElector:
    def __init__(self, rest: KubeRest, scheduler: Pausable, *, namespace: str, name: str, identity: str,
                 timing: ElectionTiming = DEFAULT_TIMING, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._rest = rest
        self._scheduler = scheduler
        self._namespace, self._name, self._identity = namespace, name, identity
        self._timing = timing
        self._clock, self._wall = clock, wall
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._leading = False
        self._last_renewed = 0.0
        # One Lease write at a time, and none after release(): the run loop keeps running until the
        # supervisor stops it, and must neither race the release's write nor take the released Lease back.
        self._writing = asyncio.Lock()
        self._released = False

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def path(self) -> str:
        return paths.leases(self._namespace, self._name)

    # -- one attempt -------------------------------------------------------------------------------------
    async def try_acquire_or_renew(self) -> bool:
        """client-go's tryAcquireOrRenew: True when this replica holds the Lease after the call."""
        async with self._writing:
            if self._released:
                return False
            # Each attempt is bounded (client-go bounds a renewal by the renew deadline): an API server slow to
            # answer must not hold this replica past its deadline while believing it leads.
            try:
                async with asyncio.timeout(self._timing.renew_deadline / 2):
                    return await self._acquire_or_renew()
            except TimeoutError:
                log.warning("leader election: Lease %s/%s: no answer within %.1fs", self._namespace, self._name,
                            self._timing.renew_deadline / 2)
                return False

    async def _acquire_or_renew(self) -> bool:
        try:
            lease: dict[str, Any] | None = await self._rest.request("GET", self.path)
        except ApiError as exc:
            if exc.status != 404:
                log.warning("leader election: reading Lease %s/%s: %s", self._namespace, self._name, exc)
                return False
            lease = None
        now = self._clock()
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if not may_take(record, me=self._identity, observed_at=self._observed_at, now=now):
            return False
        new = next_record(record, me=self._identity, now_text=format_micro_time(self._wall()),
                          lease_duration=self._timing.lease_duration)
        try:
            if lease is None:
                await self._rest.request("POST", self.path.rsplit("/", 1)[0], {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": self._namespace}, "spec": _spec(new)})
            else:
                meta = {"name": self._name, "namespace": self._namespace,
                        "resourceVersion": lease["metadata"]["resourceVersion"]}
                await self._rest.request("PUT", self.path, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": _spec(new)})
        except ApiError as exc:  # 409: someone else wrote it first; they lead
            if exc.status != 409:
                log.warning("leader election: writing Lease %s/%s: %s", self._namespace, self._name, exc)
            return False
        self._observed, self._observed_at = new, self._clock()
        return True

    # -- the loop ----------------------------------------------------------------------------------------
    def _jittered(self) -> float:
        return self._timing.retry_period * (1 + random.random() * (JITTER_FACTOR - 1))  # noqa: S311

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("leader election: %s leads (Lease %s/%s); running credential passes", self._identity,
                     self._namespace, self._name)
            self._scheduler.resume()
        else:
            log.warning("leader election: %s no longer leads (Lease %s/%s); no credential pass runs here",
                        self._identity, self._namespace, self._name)
            self._scheduler.pause()

    async def run(self) -> None:
        """Forever: acquire, then renew until a renewal misses the deadline; then acquire again."""
        # Not leading until this run holds the Lease, also when the supervisor restarts a run that led (the
        # scheduler must pause, and resume only once the Lease is renewed again).
        self._set_leading(False)
        self._scheduler.pause()
        while True:
            while not await self.try_acquire_or_renew():
                await asyncio.sleep(self._jittered())
            self._last_renewed = self._clock()
            self._set_leading(True)
            while True:
                await asyncio.sleep(self._timing.retry_period)
                if await self._renew_within_deadline():
                    continue
                self._set_leading(False)
                break

    async def _renew_within_deadline(self) -> bool:
        """Renew; retried every retry period until the renew deadline (counted from the last renewal)."""
        while True:
            if await self.try_acquire_or_renew() and self._observed is not None \
                    and self._observed.holder == self._identity:
                self._last_renewed = self._clock()
                return True
            if self._observed is not None and self._observed.holder not in ("", self._identity):
                return False  # another replica took it (our renewals were too late): stop at once
            if self._clock() - self._last_renewed >= self._timing.renew_deadline:
                return False
            await asyncio.sleep(self._timing.retry_period / 4)

    async def release(self) -> None:
        """Give the Lease up (graceful shutdown): the other replica takes it within a retry period.

        As client-go's release: read the Lease afresh (a renewal cancelled in flight may have changed its
        resourceVersion), and write the empty holder only while this replica still holds it."""
        async with self._writing:
            self._released = True
            leading = self._leading
            self._set_leading(False)
            if not leading:
                return
            try:
                lease = await self._rest.request("GET", self.path)
                record = _record(lease)
                if record is None or record.holder != self._identity:
                    log.info("leader election: Lease %s/%s is no longer ours; nothing to release",
                             self._namespace, self._name)
                    return
                meta = {"name": self._name, "namespace": self._namespace,
                        "resourceVersion": lease["metadata"]["resourceVersion"]}
                await self._rest.request("PUT", self.path, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                    "spec": _spec(released(record, now_text=format_micro_time(self._wall())))})
                log.info("leader election: released Lease %s/%s", self._namespace, self._name)
            except ApiError as exc:  # taken over or changed meanwhile: nothing to release
                log.info("leader election: could not release Lease %s/%s: %s", self._namespace, self._name, exc)
