"""One scheduler for every credential: a timer heap feeding a bounded pool of workers.

The shape of cert-manager's `pkg/scheduler` plus a work queue: each key has at most one due
time; a single event-loop timer fires for the earliest one and moves every due key to a FIFO
queue; a fixed number of worker tasks run passes. A key is never run twice at once: waking a
key while its pass runs runs it once more right after. Per key, the scheduler holds one heap
entry and one dict slot; ten thousand sleeping credentials cost no task, future or timer each.

While paused (another replica is active) no pass starts; due keys wait for `resume()`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from vault_sts_operator.services.tasks import cancel_and_wait

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
# A pass over one key: seconds until the next pass, or None to stop scheduling the key.
Work = Callable[[K], Awaitable[float | None]]

# A pass that raises (a bug) is retried after this long, not in a hot loop.
ERROR_RETRY_SECONDS = 30.0


class Scheduler(Generic[K]):
    def __init__(self, work: Work[K], *, workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._work = work
        self._workers = workers
        self._clock = clock
        self._due: dict[K, float] = {}  # key -> due time; heap entries not matching it are stale
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._again: set[K] = set()  # woken while running: run again right after
        self._queue_ready = asyncio.Event()
        self._active = asyncio.Event()
        self._active.set()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._worker(), name=f"scheduler-worker-{i}")
                       for i in range(self._workers)]
        self._arm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def run(self) -> None:
        """A supervised task (services/supervisor.py): the workers until cancelled; a worker that ends (it
        catches every error of a pass, so only a bug of its own) ends the run, and the supervisor starts it again."""
        self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def drain(self, timeout: float) -> bool:
        """After `pause()`: wait until no pass runs (at most `timeout` seconds); False when some still ran."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._running and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not self._running

    def pause(self) -> None:
        if self._active.is_set():
            log.info("scheduling paused")
            self._active.clear()

    def resume(self) -> None:
        if not self._active.is_set():
            log.info("scheduling resumed")
            self._active.set()

    @property
    def paused(self) -> bool:
        return not self._active.is_set()

    # -- keys ------------------------------------------------------------------------------------
    def schedule(self, key: K, delay: float) -> None:
        """Run `key` in `delay` seconds (replacing its due time). No effect while it runs or is queued."""
        if key in self._running or key in self._queued:
            return
        due = self._clock() + max(delay, 0.0)
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        if len(self._heap) > 2 * len(self._due) + 1024:  # drop stale entries now and then
            self._heap = [(d, s, k) for d, s, k in self._heap if self._due.get(k) == d]
            heapq.heapify(self._heap)
        if self._timer is None or due < self._timer.when():
            self._arm()

    def wake(self, key: K) -> None:
        """Run `key` as soon as a worker is free (once more after the pass in flight, if one is)."""
        if key in self._running:
            self._again.add(key)
            return
        self._due.pop(key, None)
        self._enqueue(key)

    def forget(self, key: K) -> None:
        """Stop scheduling `key`; a pass in flight finishes, and is not followed by another."""
        self._due.pop(key, None)
        self._again.discard(key)
        if key in self._queued:
            self._queued.discard(key)  # its queue entry is skipped

    def __contains__(self, key: object) -> bool:
        return key in self._due or key in self._queued or key in self._running

    def __len__(self) -> int:
        return len(self._due) + len(self._queued) + len(self._running - self._due.keys() - self._queued)

    # -- internals -------------------------------------------------------------------------------
    def _enqueue(self, key: K) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._queue_ready.set()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        if self._heap:
            loop = asyncio.get_running_loop()
            # The clock is monotonic like the loop's; convert through "now" for injected clocks.
            self._timer = loop.call_at(loop.time() + max(self._heap[0][0] - self._clock(), 0.0), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:
                del self._due[key]
                self._enqueue(key)
        self._arm()

    async def _next_key(self) -> K:
        while True:
            await self._active.wait()
            while self._queue:
                key = self._queue.popleft()
                if key in self._queued:  # else: forgotten while queued
                    self._queued.discard(key)
                    return key
            self._queue_ready.clear()
            await self._queue_ready.wait()

    async def _worker(self) -> None:
        while True:
            key = await self._next_key()
            if not self._active.is_set():  # paused while this worker waited: put the key back
                self._enqueue(key)
                continue
            self._running.add(key)
            try:
                delay = await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the worker or loop hot
                log.exception("unexpected error in a pass over %s; retrying in %.0fs", key, ERROR_RETRY_SECONDS)
                delay = ERROR_RETRY_SECONDS
            finally:
                self._running.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._enqueue(key)
            elif delay is not None:
                self.schedule(key, delay)
