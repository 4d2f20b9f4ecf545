"""Every long-running task of the operator under one supervisor: none can end unnoticed.

A bare `create_task` that raises ends for good, and nothing tells. Here each task (a watch, the scheduler, the leader
election, the metrics and health servers) is started by the supervisor; an unexpected exit is logged
with its exception and the task is started again after a jittered exponential backoff (client-go's
`wait.Backoff` with jitter: 1 s doubling to 30 s, +/-50 %). A task that fails `max_failures` times within
`failure_window` seconds, or raises `Fatal`, stops the supervisor: `wait()` raises SupervisorStopped, the process exits
non-zero and the kubelet restarts the pod, which is the right answer to a fault a restart of the task
could not mend.

Each task may report progress (`progress(name)`); `stalled()` names the ones that reported none for longer
than their bound, which the liveness probe turns into a failure (services/health.py).

Hand-written rather than taken from a library: aiotools' and anyio's task groups cancel every sibling when
one fails (what we want only for `Fatal`), and neither restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Fatal(Exception):
    """A task's failure that restarting the task cannot mend: the process exits."""


class SupervisorStopped(Exception):
    """`wait()` ended because a task could not be kept running (the message says which and why)."""


@dataclass
class _Task:
    name: str
    factory: Callable[[], Awaitable[None]]
    stall_after: float | None  # seconds without progress before the task counts as stalled (None: never)
    failures: list[float] = field(default_factory=list)  # monotonic times of recent failures
    last_progress: float = 0.0
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5  # +/- this share of the delay

    def delay(self, attempt: int) -> float:
        base = min(self.cap, self.initial * self.factor ** max(attempt - 1, 0))
        return base * (1 + self.jitter * (2 * random.random() - 1))  # noqa: S311 - not for secrets


class Supervisor:
    def __init__(self, *, backoff: Backoff = Backoff(), max_failures: int = 5, failure_window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff = backoff
        self._max_failures = max_failures
        self._window = failure_window
        self._clock = clock
        self._tasks: dict[str, _Task] = {}
        self._fatal: asyncio.Future[str] | None = None
        self._running = False

    def add(self, name: str, factory: Callable[[], Awaitable[None]], *, stall_after: float | None = None) -> None:
        """Register a task (before or after `start`): `factory()` makes one run of it; a run should not return."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        entry = _Task(name, factory, stall_after, last_progress=self._clock())
        self._tasks[name] = entry
        if self._running:
            self._launch(entry, delay=0.0)

    def progress(self, name: str) -> None:
        """The task is alive and doing its work (a watch event, a bookmark, a relist, a renewal)."""
        entry = self._tasks.get(name)
        if entry is not None:
            entry.last_progress = self._clock()

    def stalled(self) -> list[str]:
        now = self._clock()
        return [f"{t.name} (no progress for {now - t.last_progress:.0f}s)" for t in self._tasks.values()
                if t.stall_after is not None and now - t.last_progress > t.stall_after]

    def restarts(self) -> dict[str, int]:
        return {t.name: len(t.failures) for t in self._tasks.values()}

    # -- running -----------------------------------------------------------------------------------------
    def _launch(self, entry: _Task, delay: float) -> None:
        async def one_run() -> None:
            if delay:
                await asyncio.sleep(delay)
            entry.last_progress = self._clock()  # a fresh start is progress (the bound counts from here)
            await entry.factory()

        entry.task = asyncio.get_running_loop().create_task(one_run(), name=entry.name)
        entry.task.add_done_callback(lambda task: self._ended(entry, task))

    def _ended(self, entry: _Task, task: asyncio.Task[None]) -> None:
        if task.cancelled() or not self._running or self._fatal is None or self._fatal.done():
            return
        exc = task.exception()
        if isinstance(exc, Fatal):
            log.error("task %s failed and cannot recover: %s", entry.name, exc)
            self._fatal.set_result(f"{entry.name}: {exc}")
            return
        now = self._clock()
        entry.failures = [t for t in entry.failures if now - t < self._window] + [now]
        if exc is None:
            log.error("task %s ended unexpectedly; restarting it", entry.name)
        else:
            log.error("task %s failed; restarting it", entry.name, exc_info=exc)
        if len(entry.failures) >= self._max_failures:
            self._fatal.set_result(f"{entry.name} failed {len(entry.failures)} times within {self._window:.0f}s "
                                   f"(last: {type(exc).__name__ if exc else 'returned'})")
            return
        delay = self._backoff.delay(len(entry.failures))
        log.info("task %s restarts in %.1fs (failure %d of %d allowed within %.0fs)", entry.name, delay,
                 len(entry.failures), self._max_failures - 1, self._window)
        self._launch(entry, delay)

    def start(self) -> None:
        self._running = True
        self._fatal = asyncio.get_running_loop().create_future()
        for entry in self._tasks.values():
            self._launch(entry, delay=0.0)

    async def wait(self) -> None:
        """Until `stop()`; raises SupervisorStopped when a task could not be kept running."""
        assert self._fatal is not None, "start() first"
        try:
            reason = await self._fatal
        except asyncio.CancelledError:
            return
        raise SupervisorStopped(reason)

    async def stop(self) -> None:
        self._running = False
        if self._fatal is not None and not self._fatal.done():
            self._fatal.cancel()
        tasks = [t.task for t in self._tasks.values() if t.task is not None and not t.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
