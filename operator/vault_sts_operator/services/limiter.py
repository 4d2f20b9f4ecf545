"""Bounded, fair concurrency for STS calls.

A global limit protects STS (and botocore's connection pool); a per-identity limit
below it keeps one identity with a thousand credentials from taking every slot, so
another identity's credentials still get through. Waiters are served first come,
first served (asyncio semaphores are FIFO).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from vault_sts_operator.domain.rate import Rate

T = TypeVar("T")


class FairLimiter:
    def __init__(self, total: int, per_key_share: float = 0.75) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_key_limit = max(1, int(total * per_key_share))
        self._per_key: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        mine = self._per_key.setdefault(key, asyncio.Semaphore(self._per_key_limit))
        async with mine, self._total:
            yield


class FairLock:
    """A lock whose waiters are served by key (tenant): the key served least recently goes first.

    Guards a shared MFA device: a code per 30-second period is all it gives, so a FIFO lock would let
    a namespace with fifty `mfa: direct` credentials make every other namespace wait 25 minutes.
    Here a namespace that asks while another one is being served goes next, whatever the other one
    still has queued; within one key, waiters are first come, first served.
    (asyncio has no fair lock; this one is small: a deque of waiters per key, and the turn each key
    was last served, kept only while the key waits or holds the lock.)
    """

    def __init__(self) -> None:
        self._held = False
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._served: dict[str, int] = {}  # key -> turn it was last served
        self._turn = 0

    def _grant(self, key: str) -> None:
        self._turn += 1
        self._served = {k: v for k, v in self._served.items() if k in self._queues}
        self._served[key] = self._turn

    async def acquire(self, key: str) -> None:
        if not self._held and not self._queues:
            self._held = True
            self._grant(key)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the lock was handed over just as the waiter was cancelled
            else:
                self._discard(key, future)
            raise

    def _discard(self, key: str, future: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._queues[key]

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("FairLock released while not held")
        self._release()

    def _release(self) -> None:
        while self._queues:
            # min() keeps the first of equals: keys never served (or pruned) go in the order they queued
            key = min(self._queues, key=lambda k: self._served.get(k, 0))
            queue = self._queues[key]
            future = queue.popleft()
            if not queue:
                del self._queues[key]
            if not future.done():
                self._grant(key)
                future.set_result(None)  # ownership passes straight to the waiter
                return
        self._held = False

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()


class BlockingCalls:
    """Blocking client calls (boto3) run in worker threads, at most `total` at once, fairly per key, and (with a
    `rate`) started no faster than it allows."""

    def __init__(self, total: int, rate: Rate | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.limiter = FairLimiter(total)
        self._rate = rate
        self._clock, self._sleep = clock, sleep

    async def run(self, key: str, fn: Callable[[], T]) -> T:
        async with self.limiter.slot(key):
            if self._rate is not None:
                wait = self._rate.reserve(self._clock())
                if wait > 0:
                    await self._sleep(wait)
            return await asyncio.to_thread(fn)
