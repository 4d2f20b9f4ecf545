"""The operator's list-and-watch (services/watch.py) on the stack's real API server, under the supervisor, with
short randomised watch timeouts: an object there before is listed, one created during the watch arrives as
ADDED, the server's bookmarks advance the version, each watch the server ends is followed by the next from
the last version, and the supervisor sees progress throughout (nothing stalls, nothing restarts)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from devstack.env import StackEnv
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.clients.kube_config import default_login
from vault_sts_operator.clients.kube_rest import KubeRest
from vault_sts_operator.services.supervisor import Supervisor
from vault_sts_operator.services.watch import ListWatch

COLLECTION = "/api/v1/namespaces/default/configmaps"
MIN_WATCH_TIMEOUT = 6.0  # watches of 6 to 12 s: several end and restart within the test


async def _until(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_a_real_watch_lists_sees_a_new_object_bookmarks_and_reports_progress(stack: StackEnv) -> None:
    os.environ["KUBECONFIG"] = str(stack.kubeconfig)
    tag = uuid.uuid4().hex[:8]

    def config_map(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": f"watch-{tag}-{name}", "labels": {"watch-test": tag}}, "data": {"n": name}}

    async def scenario() -> dict[str, Any]:
        rest = KubeRest(default_login())
        events: list[tuple[float, str | None, str]] = []
        listed: list[set[tuple[str, str]]] = []
        progress: list[float] = []
        supervisor = Supervisor()
        await rest.request("POST", COLLECTION, config_map("before"))
        try:
            def on_progress() -> None:
                progress.append(time.monotonic())
                supervisor.progress(watch.name)

            watch = ListWatch(KubeGateway(rest), COLLECTION, label_selector=f"watch-test={tag}",
                              on_event=lambda o, t: events.append((time.monotonic(), t, o["metadata"]["name"])),
                              on_listed=listed.append, on_progress=on_progress, min_watch_timeout=MIN_WATCH_TIMEOUT)
            supervisor.add(watch.name, watch.run, stall_after=2 * 2 * MIN_WATCH_TIMEOUT)
            supervisor.start()
            await _until(lambda: watch.lists == 1, 10)
            listed_version = int(watch.version)
            await asyncio.sleep(0.5)  # the watch is open
            created_at = time.monotonic()
            await rest.request("POST", COLLECTION, config_map("during"))
            await _until(lambda: any(e[2].endswith("-during") for e in events), 10)
            arrived = next(e[0] for e in events if e[2].endswith("-during")) - created_at
            await _until(lambda: watch.bookmarks >= 1, 4 * MIN_WATCH_TIMEOUT)
            started = time.monotonic()
            await asyncio.sleep(2 * MIN_WATCH_TIMEOUT)  # at least one more watch ends and is started again
            gaps = [b - a for a, b in itertools.pairwise(progress)]
            return {"events": [(t, name) for _at, t, name in events], "listed": listed, "arrived": arrived,
                    "bookmarks": watch.bookmarks, "failures": watch.failures, "lists": watch.lists,
                    "listed_version": listed_version, "version": int(watch.version),
                    "progress_last_window": sum(1 for p in progress if p >= started),
                    "longest_gap": max(gaps), "stalled": supervisor.stalled(), "restarts": supervisor.restarts()}
        finally:
            await supervisor.stop()
            for name in ("before", "during"):
                await rest.request("DELETE", f"{COLLECTION}/watch-{tag}-{name}")
            await rest.close()

    result = asyncio.run(scenario())
    print(f"\nwatch on the real API server: {result}")
    before, during = f"watch-{tag}-before", f"watch-{tag}-during"
    assert result["listed"] == [{("default", before)}]
    assert result["events"] == [(None, before), ("ADDED", during)]
    assert result["arrived"] < 2.0
    assert result["bookmarks"] >= 1 and result["version"] > result["listed_version"]
    assert result["failures"] == 0 and result["lists"] == 1  # every watch went on from the last version
    assert result["progress_last_window"] >= 1 and result["longest_gap"] < 2 * MIN_WATCH_TIMEOUT + 1
    assert result["stalled"] == [] and set(result["restarts"].values()) == {0}
