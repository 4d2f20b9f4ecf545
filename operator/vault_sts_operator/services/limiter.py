"""Bounded, fair concurrency for STS calls.

A global limit protects STS (and botocore's connection pool); a per-identity limit
below it keeps one identity with a thousand credentials from taking every slot, so
another identity's credentials still get through. Waiters are served first come,
first served (asyncio semaphores are FIFO).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")


class FairLimiter:
    def __init__(self, total: int, per_key_share: float = 0.75) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_key_limit = max(1, int(total * per_key_share))
        self._per_key: dict[str, asyncio.Semaphore] = {}

    @property
    def per_key_limit(self) -> int:
        return self._per_key_limit

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        mine = self._per_key.setdefault(key, asyncio.Semaphore(self._per_key_limit))
        async with mine, self._total:
            yield


class BlockingCalls:
    """Blocking client calls (boto3) run in worker threads, at most `total` at once, fairly per key."""

    def __init__(self, total: int) -> None:
        self.limiter = FairLimiter(total)

    async def run(self, key: str, fn: Callable[[], T]) -> T:
        async with self.limiter.slot(key):
            return await asyncio.to_thread(fn)
