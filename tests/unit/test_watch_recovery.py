"""services/watch.py recovering from what a real stream does, and under the supervisor.

The stream tests run the real client (clients/kube_rest.py's line parsing, clients/kube.py's ERROR events)
against a loopback HTTP server that plays the API server: a 410 sent as an ERROR event, a line cut mid-event.
The supervisor tests show an exception in `on_event` ending the run, the supervisor starting it again, and
the new run listing, so that every object is handed over again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.clients.kube_config import ConnectionInfo
from vault_sts_operator.clients.kube_rest import KubeRest
from vault_sts_operator.domain.backoff import ExponentialBackoff
from vault_sts_operator.services.supervisor import Backoff, Supervisor
from vault_sts_operator.services.watch import STALL_AFTER, ListWatch, SecretDeletions, Watches

PATH = "/apis/vaultsts.io/v1alpha1/assumedrolecredentials"
FAST = ExponentialBackoff(initial=0.01, cap=0.02)


def item(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team", "resourceVersion": rv}}


class FakeApiServer:
    """Lists answer `lists` in turn (the last one again once they run out); each watch plays the next of
    `streams` (raw bytes, then the stream ends) or, when none is left, stays open and silent."""

    def __init__(self, lists: list[tuple[str, list[dict[str, Any]]]], streams: list[bytes]) -> None:
        self.lists = lists
        self.streams = streams
        self.requests: list[str] = []  # "list" or "watch <resourceVersion>"
        self.closing = asyncio.Event()  # ends the watches left open

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            self.requests.append("list")
            version, items = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
            return web.json_response({"kind": "AssumedRoleCredentialList", "apiVersion": "vaultsts.io/v1alpha1",
                                      "metadata": {"resourceVersion": version}, "items": items})
        self.requests.append(f"watch {request.query.get('resourceVersion')}")
        assert request.query.get("allowWatchBookmarks") == "true"
        response = web.StreamResponse()
        await response.prepare(request)
        if not self.streams:
            await self.closing.wait()
            return response
        await response.write(self.streams.pop(0))
        await response.write_eof()
        return response


def line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


async def serving(server: FakeApiServer, scenario: Callable[[KubeGateway], Any]) -> Any:
    app = web.Application()
    app.router.add_get(PATH, server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rest = KubeRest(lambda: ConnectionInfo(server=f"http://127.0.0.1:{port}", token="t"))
    try:
        return await scenario(KubeGateway(rest))
    finally:
        server.closing.set()
        await rest.close()
        await runner.cleanup()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_an_error_event_with_410_lists_again_with_a_consistent_list() -> None:
    server = FakeApiServer(lists=[("10", [item("a", "5"), item("b", "6")]), ("20", [item("a", "5")])],
                           streams=[line("ADDED", item("c", "11"))
                                    + line("ERROR", {"kind": "Status", "code": 410, "message": "too old"})])
    seen: list[tuple[str, str | None]] = []
    listed: list[set[tuple[str, str]]] = []

    async def scenario(kube: KubeGateway) -> ListWatch:
        watch = ListWatch(kube, PATH, on_event=lambda o, t: seen.append((o["metadata"]["name"], t)),
                          on_listed=listed.append, backoff=FAST)
        task = asyncio.create_task(watch.run())
        await until(lambda: server.requests == ["list", "watch 10", "list", "watch 20"])
        await stop(task)
        return watch

    watch = asyncio.run(serving(server, scenario))
    assert seen == [("a", None), ("b", None), ("c", "ADDED"), ("a", None)]
    assert listed == [{("team", "a"), ("team", "b")}, {("team", "a")}]  # b and c gone while no watch was open
    assert watch.lists == 2 and watch.failures == 0 and watch.version == "20"


def test_a_stream_cut_mid_event_is_logged_and_watched_again_from_the_last_good_version(
        caplog: pytest.LogCaptureFixture) -> None:
    server = FakeApiServer(lists=[("10", [item("a", "5")])],
                           streams=[line("MODIFIED", item("a", "11")) + b'{"type":"MODIFIED","object":{"meta',
                                    b"not json at all\n",
                                    line("ADDED", item("b", "12"))])
    seen: list[tuple[str, str | None]] = []

    async def scenario(kube: KubeGateway) -> ListWatch:
        watch = ListWatch(kube, PATH, on_event=lambda o, t: seen.append((o["metadata"]["name"], t)),
                          on_listed=lambda keys: None, backoff=FAST)
        task = asyncio.create_task(watch.run())
        await until(lambda: len(server.requests) == 5)  # the last watch stays open
        assert not task.done()
        await stop(task)
        return watch

    with caplog.at_level("WARNING", logger="vault_sts_operator.services.watch"):
        watch = asyncio.run(serving(server, scenario))
    assert server.requests == ["list", "watch 10", "watch 11", "watch 11", "watch 12"]  # never a relist
    assert seen == [("a", None), ("a", "MODIFIED"), ("b", "ADDED")]
    assert watch.failures == 2 and watch.lists == 1
    failures = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(failures) == 2 and all("JSONDecodeError" in m and "from resourceVersion 11" in m for m in failures)


def test_an_exception_in_on_event_restarts_the_watch_under_the_supervisor_and_relists() -> None:
    server = FakeApiServer(lists=[("10", [item("a", "5"), item("b", "6")])], streams=[])
    seen: list[tuple[str, str | None]] = []
    progress: list[str] = []
    broken = [True]

    def on_event(o: Any, t: str | None) -> None:
        seen.append((o["metadata"]["name"], t))
        if o["metadata"]["name"] == "b" and broken:
            broken.pop()
            raise RuntimeError("a bug in observe")

    async def scenario(kube: KubeGateway) -> tuple[ListWatch, dict[str, int]]:
        supervisor = Supervisor(backoff=Backoff(initial=0.01, jitter=0.0))
        def on_progress() -> None:
            progress.append(watch.name)
            supervisor.progress(watch.name)

        watch = ListWatch(kube, PATH, on_event=on_event, on_listed=lambda keys: None, on_progress=on_progress)
        supervisor.add(watch.name, watch.run, stall_after=STALL_AFTER)
        supervisor.start()
        await until(lambda: server.requests == ["list", "list", "watch 10"])
        restarts = supervisor.restarts()
        assert supervisor.stalled() == []
        await supervisor.stop()
        return watch, restarts

    watch, restarts = asyncio.run(serving(server, scenario))
    # the failed object, and every other, is handed over again by the second run's list
    assert seen == [("a", None), ("b", None), ("a", None), ("b", None)]
    assert restarts == {f"watch {PATH}": 1} and watch.lists == 1
    assert progress == [watch.name] * 2  # the second run's page and complete list (the first run's page failed)


class PathKube:
    """Every collection lists `items` (none for Secrets) and then watches silently until cancelled."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.identities_listed = asyncio.Event()
        self.release = asyncio.Event()

    async def list_page(self, path: str, *, limit: int, continue_token: str = "", label_selector: str = "",
                        metadata_only: bool = False) -> dict[str, Any]:
        self.calls.append(f"list {path}")
        if path.endswith("mfaidentities"):
            await self.release.wait()  # the identities' list is slow
        return {"kind": "List", "metadata": {"resourceVersion": "7"}, "items": []}

    async def watch(self, path: str, resource_version: str, *, timeout_seconds: int, label_selector: str = "",
                    metadata_only: bool = False) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(f"watch {path}")
        yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}}
        await asyncio.sleep(3600)


def test_watches_for_the_supervisor_wait_for_the_identities_and_report_progress_by_name() -> None:
    async def scenario() -> tuple[list[tuple[str, float]], list[str], dict[str, int]]:
        kube = PathKube()
        watches = Watches(kube, on_identity=lambda o, t: None, on_identities_listed=lambda keys: None,  # type: ignore[arg-type]
                          credentials=SecretDeletions(lambda ns, name: None), namespaces=("a", "b"),
                          secrets=SecretDeletions(lambda ns, name: None))
        supervisor = Supervisor()
        reported: dict[str, int] = {}

        def progress(name: str) -> None:
            reported[name] = reported.get(name, 0) + 1
            supervisor.progress(name)

        triples = watches.supervised(progress)
        for name, factory, stall_after in triples:
            supervisor.add(name, factory, stall_after=stall_after)
        supervisor.start()
        await asyncio.sleep(0.05)
        before = list(kube.calls)
        kube.release.set()
        await until(lambda: len(reported) == 5 and all(n >= 2 for n in reported.values()))
        await supervisor.stop()
        return [(name, stall) for name, _factory, stall in triples], before, reported

    triples, before, reported = asyncio.run(scenario())
    names = [name for name, _stall in triples]
    assert names == ["watch /apis/vaultsts.io/v1alpha1/mfaidentities",
                     "watch /apis/vaultsts.io/v1alpha1/namespaces/a/assumedrolecredentials",
                     "watch /apis/vaultsts.io/v1alpha1/namespaces/b/assumedrolecredentials",
                     "watch /api/v1/namespaces/a/secrets", "watch /api/v1/namespaces/b/secrets"]
    assert {stall for _name, stall in triples} == {STALL_AFTER} and STALL_AFTER == 1200
    assert before == ["list /apis/vaultsts.io/v1alpha1/mfaidentities"]  # nothing else before the identities
    assert set(reported) == set(names)  # each watch's progress under its own name
