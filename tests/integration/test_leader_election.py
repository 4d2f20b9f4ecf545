"""Leader election (services/leader.py) on the stack's real API server: two electors in one process, short
timings. A leader killed without a word is replaced once its Lease runs out; one that shuts down gracefully
hands over within a retry period; a renewal that misses the deadline stops the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from typing import Any

from devstack.env import StackEnv
from vault_sts_operator.clients import kube_paths as paths
from vault_sts_operator.clients.kube_config import default_login
from vault_sts_operator.clients.kube_rest import ApiError, KubeRest
from vault_sts_operator.domain.leader import ElectionTiming
from vault_sts_operator.services.leader import LeaderElector

TIMING = ElectionTiming(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)


class Recorder:
    """Stands for the scheduler: what the elector told it, and when."""

    def __init__(self) -> None:
        self.paused = True
        self.changes: list[tuple[float, bool]] = []

    def pause(self) -> None:
        self.paused = True
        self.changes.append((time.monotonic(), False))

    def resume(self) -> None:
        self.paused = False
        self.changes.append((time.monotonic(), True))


async def _until(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _failover_and_handover(rest: KubeRest, name: str, tasks: list[asyncio.Task[None]]) -> dict[str, float]:
    a_sched, b_sched, c_sched = Recorder(), Recorder(), Recorder()
    a = LeaderElector(rest, a_sched, namespace="default", name=name, identity="a", timing=TIMING)
    b = LeaderElector(rest, b_sched, namespace="default", name=name, identity="b", timing=TIMING)
    a_task = asyncio.create_task(a.run())
    tasks.append(a_task)
    await _until(lambda: a.leading, 10)
    tasks.append(asyncio.create_task(b.run()))
    await asyncio.sleep(TIMING.lease_duration + 1)  # b keeps trying; a renews
    assert a.leading and not b.leading and b_sched.paused and not a_sched.paused
    a_task.cancel()  # killed: no release
    killed_at = time.monotonic()
    await _until(lambda: b.leading, TIMING.lease_duration + 3)
    failover = time.monotonic() - killed_at
    assert not b_sched.paused
    c = LeaderElector(rest, c_sched, namespace="default", name=name, identity="c", timing=TIMING)
    tasks.append(asyncio.create_task(c.run()))
    await asyncio.sleep(1.0)
    assert not c.leading
    # Graceful shutdown as runtime.serve does it: release while b's election loop still runs (the
    # supervisor stops it afterwards). The loop must neither race the release nor take the Lease back.
    await b.release()
    released_at = time.monotonic()
    assert b_sched.paused
    await _until(lambda: c.leading, TIMING.lease_duration)
    handover = time.monotonic() - released_at
    await asyncio.sleep(4 * TIMING.retry_period)  # b's loop goes on trying: it must stay out
    lease = await rest.request("GET", c.path)
    assert c.leading and not b.leading and b_sched.paused
    assert lease["spec"]["holderIdentity"] == "c" and lease["spec"]["leaseTransitions"] == 2
    return {"failover": failover, "handover": handover}


def test_one_leader_failover_and_handover(stack: StackEnv) -> None:
    os.environ["KUBECONFIG"] = str(stack.kubeconfig)
    name = f"leader-{uuid.uuid4().hex[:8]}"

    async def scenario() -> dict[str, float]:
        rest = KubeRest(default_login())
        tasks: list[asyncio.Task[None]] = []
        try:
            return await _failover_and_handover(rest, name, tasks)
        finally:  # a failed assertion must not leave electors running or the session open
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(ApiError):
                await rest.request("DELETE", paths.leases("default", name))
            await rest.close()

    figures = asyncio.run(scenario())
    print(f"\nleader election (lease {TIMING.lease_duration}s, retry {TIMING.retry_period}s): "
          f"failover {figures['failover']:.2f}s, handover {figures['handover']:.2f}s")
    assert TIMING.lease_duration - 0.5 <= figures["failover"] <= TIMING.lease_duration + 2 * TIMING.retry_period
    assert figures["handover"] <= 2 * TIMING.retry_period * 1.2
