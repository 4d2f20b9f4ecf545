"""services/supervisor.py: a task that fails is logged and restarted with backoff; one that keeps failing, or
raises Fatal, stops the process; a task without progress is reported stalled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from vault_sts_operator.services.supervisor import Backoff, Fatal, Supervisor, SupervisorStopped

FAST = Backoff(initial=0.01, factor=2.0, cap=0.05, jitter=0.5)


def test_a_failing_task_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError("a malformed watch line")
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sup = Supervisor(backoff=FAST)
        sup.add("watch credentials", flaky)
        sup.start()
        for _ in range(100):
            if len(runs) >= 3:
                break
            await asyncio.sleep(0.01)
        assert sup.restarts() == {"watch credentials": 2}
        await sup.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert len(runs) == 3
    failed = [r for r in caplog.records if "task watch credentials failed" in r.getMessage()]
    assert len(failed) == 2 and failed[0].exc_info is not None and "malformed" in str(failed[0].exc_info[1])


def test_a_task_that_keeps_failing_stops_the_process() -> None:
    async def broken() -> None:
        raise RuntimeError("always")

    async def scenario() -> None:
        sup = Supervisor(backoff=FAST, max_failures=3, failure_window=60)
        sup.add("scheduler", broken)
        sup.start()
        with pytest.raises(SupervisorStopped, match="scheduler failed 3 times"):
            await asyncio.wait_for(sup.wait(), 5)
        await sup.stop()

    asyncio.run(scenario())


def test_fatal_stops_at_once_and_a_returning_task_counts_as_a_failure() -> None:
    async def fatal() -> None:
        raise Fatal("the Lease's namespace is gone")

    returned: list[int] = []

    async def returns() -> None:
        returned.append(1)

    async def scenario() -> None:
        sup = Supervisor(backoff=FAST, max_failures=10)
        sup.add("returns", returns)
        sup.start()
        await asyncio.sleep(0.2)
        assert len(returned) >= 2  # started again: a long-running task must not return
        sup.add("election", fatal)
        with pytest.raises(SupervisorStopped, match="election: the Lease's namespace is gone"):
            await asyncio.wait_for(sup.wait(), 5)
        await sup.stop()

    asyncio.run(scenario())


def test_stalled_names_tasks_without_progress() -> None:
    now = [0.0]

    async def idle() -> None:
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sup = Supervisor(clock=lambda: now[0])
        sup.add("watch identities", idle, stall_after=600)
        sup.add("metrics", idle)  # no bound
        sup.start()
        await asyncio.sleep(0)
        now[0] = 500.0
        assert sup.stalled() == []
        now[0] = 700.0
        assert sup.stalled() == ["watch identities (no progress for 700s)"]
        sup.progress("watch identities")
        assert sup.stalled() == []
        await sup.stop()

    asyncio.run(scenario())
