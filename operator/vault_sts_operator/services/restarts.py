"""Rollout restarts of consumers after a rotation, debounced.

Several credentials that feed one Deployment often rotate within seconds of each
other; each rotation asks for a restart, and one restart per window serves them
all. Restarts follow rotations only: an operator restart issues nothing, so it
restarts nothing. Only workloads that opt in are restarted (domain/consumers.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from vault_sts_operator import metrics
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain.consumers import not_opted_in_message, opted_in
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.timefmt import format_time

log = logging.getLogger(__name__)

Target = tuple[str, str, str]  # (kind, namespace, name)
FailureReporter = Callable[[str], Awaitable[None]]  # gets a message naming the workload


class RolloutRestarter:
    def __init__(self, kube: KubeGateway, *, debounce_seconds: float = 10.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._kube = kube
        self._debounce = debounce_seconds
        self._clock = clock
        self._pending: dict[Target, asyncio.Task[None]] = {}

    def request(self, target: Target, on_failure: FailureReporter, *, credential: str) -> bool:
        """Ask for a restart of `target` on behalf of `credential`; False when one is already pending (debounced)."""
        if target in self._pending:
            return False
        self._pending[target] = asyncio.get_running_loop().create_task(
            self._restart_later(target, on_failure, credential))
        return True

    async def _restart_later(self, target: Target, on_failure: FailureReporter, credential: str) -> None:
        try:
            await asyncio.sleep(self._debounce)
            kind, namespace, name = target
            meta = await self._kube.workload_metadata(kind, namespace, name)
            if meta is None:
                await on_failure(f"{kind} {name} was not restarted: it does not exist")
                return
            if not opted_in(meta.get("annotations"), credential):
                metrics.ROLLOUT_RESTARTS_REFUSED.labels(kind=kind).inc()
                await on_failure(not_opted_in_message(kind, name, credential))
                log.warning("%s/%s: %s", namespace, credential, not_opted_in_message(kind, name, credential))
                return
            await self._kube.restart_workload(kind, namespace, name, format_time(self._clock()),
                                              str(meta.get("resourceVersion") or ""))
            metrics.ROLLOUT_RESTARTS.labels(kind=kind).inc()
            log.info("restarted %s %s/%s after a credential rotation", kind, namespace, name)
        except IssuingError as exc:
            await on_failure(exc.message)
        finally:
            self._pending.pop(target, None)

    async def drain(self) -> None:
        """Wait for pending restarts (tests; shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)
