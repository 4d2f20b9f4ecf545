"""The scheduler: one timer heap, a bounded pool of workers, one pass per key at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from vault_sts_operator.services.credential_cache import fingerprint, scheduled_renewal
from vault_sts_operator.services.scheduler import Scheduler


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


def test_keys_run_in_due_order_once_each() -> None:
    ran: list[str] = []

    async def work(key: str) -> float | None:
        ran.append(key)
        return None

    async def main() -> None:
        scheduler: Scheduler[str] = Scheduler(work, workers=1)
        scheduler.start()
        for key, delay in (("c", 0.15), ("a", 0.05), ("b", 0.1)):
            scheduler.schedule(key, delay)
        scheduler.schedule("a", 0.2)  # rescheduled: the earlier due time is dropped
        await asyncio.sleep(0.35)
        await scheduler.stop()

    run(main)
    assert ran == ["b", "c", "a"]


def test_workers_bound_concurrency_and_never_run_a_key_twice_at_once() -> None:
    running: set[int] = set()
    peak = 0
    overlaps = 0
    done = 0

    async def work(key: int) -> float | None:
        nonlocal peak, overlaps, done
        if key in running:
            overlaps += 1
        running.add(key)
        peak = max(peak, len(running))
        await asyncio.sleep(0.01)
        running.discard(key)
        done += 1
        return None

    async def main() -> None:
        scheduler: Scheduler[int] = Scheduler(work, workers=4)
        scheduler.start()
        for key in range(40):
            scheduler.wake(key)
            scheduler.wake(key)  # queued once
        await asyncio.sleep(0.005)
        scheduler.wake(0)  # woken while it may run: runs again after, not alongside
        await asyncio.sleep(0.3)
        await scheduler.stop()

    run(main)
    assert peak == 4
    assert overlaps == 0
    assert 40 <= done <= 41


def test_wake_while_running_runs_once_more() -> None:
    calls = 0

    async def main() -> None:
        async def work(key: str) -> float | None:
            nonlocal calls
            calls += 1
            if calls == 1:
                scheduler.wake(key)
                scheduler.wake(key)
            await asyncio.sleep(0.01)
            return 3600.0

        scheduler: Scheduler[str] = Scheduler(work, workers=2)
        scheduler.start()
        scheduler.wake("k")
        await asyncio.sleep(0.1)
        assert "k" in scheduler and len(scheduler) == 1  # and due again in an hour
        await scheduler.stop()

    run(main)
    assert calls == 2


def test_forget_cancels_and_pause_holds_passes() -> None:
    ran: list[str] = []

    async def work(key: str) -> float | None:
        ran.append(key)
        return None

    async def main() -> None:
        scheduler: Scheduler[str] = Scheduler(work, workers=2)
        scheduler.start()
        scheduler.schedule("gone", 0.02)
        scheduler.forget("gone")
        scheduler.pause()
        scheduler.schedule("held", 0.01)
        scheduler.wake("woken")
        await asyncio.sleep(0.1)
        assert ran == []
        scheduler.resume()
        await asyncio.sleep(0.05)
        await scheduler.stop()

    run(main)
    assert sorted(ran) == ["held", "woken"]


def test_a_failing_pass_is_retried_later_not_hot() -> None:
    calls = 0

    async def work(key: str) -> float | None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    async def main() -> None:
        scheduler: Scheduler[str] = Scheduler(work, workers=1)
        scheduler.start()
        scheduler.wake("k")
        await asyncio.sleep(0.1)
        assert "k" in scheduler
        await scheduler.stop()

    run(main)
    assert calls == 1


def test_ten_thousand_sleeping_keys_cost_no_task_each() -> None:
    async def work(key: int) -> float | None:
        return None

    async def main() -> int:
        scheduler: Scheduler[int] = Scheduler(work, workers=16)
        scheduler.start()
        started = time.perf_counter()
        for key in range(10_000):
            scheduler.schedule(key, 3600 + key)
        took = time.perf_counter() - started
        tasks = len(asyncio.all_tasks())
        await scheduler.stop()
        assert took < 1.0
        return tasks

    assert run(main) <= 16 + 1  # the workers and the test itself


def _cr(status: dict[str, Any], generation: int = 2, rotate: str = "") -> dict[str, Any]:
    return {"metadata": {"uid": "u", "generation": generation,
                         "annotations": {"vaultsts.io/rotate": rotate} if rotate else {}},
            "status": status}


READY = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 2,
         "accessKeyId": "ASIA1", "renewalTime": "2026-11-26T12:40:00Z"}


def test_restart_schedules_from_the_status() -> None:
    assert scheduled_renewal(_cr(READY)) == datetime(2026, 11, 26, 12, 40, tzinfo=UTC)
    assert scheduled_renewal(_cr(READY, generation=3)) is None  # spec changed since: a pass now
    assert scheduled_renewal(_cr(READY, rotate="x")) is None  # served or not: only the Secret knows
    assert scheduled_renewal(_cr({**READY, "conditions": [{"type": "Ready", "status": "False"}]})) is None
    assert scheduled_renewal(_cr({})) is None
    assert scheduled_renewal(_cr({**READY, "renewalTime": "garbage"})) is None


def test_fingerprint_ignores_status_only_changes() -> None:
    assert fingerprint(_cr(READY)) == fingerprint(_cr({}))
    assert fingerprint(_cr(READY)) != fingerprint(_cr(READY, generation=3))
    assert fingerprint(_cr(READY)) != fingerprint(_cr(READY, rotate="1"))
