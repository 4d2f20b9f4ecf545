"""KubeRest against a small HTTP server on loopback: one re-login on 401 for calls and watches alike, errors as
ApiError (also a connection that drops while the body is read), and a watch stream split across chunks."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from vault_sts_operator.clients.kube_config import ConnectionInfo
from vault_sts_operator.clients.kube_rest import ApiError, KubeRest

Scenario = Callable[[KubeRest, list[str]], Awaitable[Any]]


async def _watch(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    events = b'{"type":"ADDED","object":{"n":1}}\n{"type":"MODIFIED",' + b'"object":{"n":2}}\n'
    for piece in (events[:10], events[10:45], events[45:], b'{"type":"BOOKMARK","object":{"n":3}}'):
        await response.write(piece)  # the last line has no newline before the server ends the stream
    await response.write_eof()
    return response


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"accept": request.headers.get("Accept")})


async def _missing(request: web.Request) -> web.Response:
    return web.Response(status=404, reason="Not Found")


async def _drop(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "100"})
    await response.prepare(request)
    await response.write(b'{"partial": ')
    assert request.transport is not None
    request.transport.close()  # the connection goes before the promised body
    return response


def _run(scenario: Scenario) -> tuple[Any, list[str]]:
    async def main() -> tuple[Any, list[str]]:
        seen: list[str] = []  # the Authorization header of every request, in order
        valid = {"Bearer t2"}

        @web.middleware
        async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
            seen.append(request.headers.get("Authorization", ""))
            if request.headers.get("Authorization") not in valid:
                return web.Response(status=401)
            return await handler(request)

        app = web.Application(middlewares=[auth])
        app.router.add_get("/ok", _ok)
        app.router.add_get("/missing", _missing)
        app.router.add_get("/watch", _watch)
        app.router.add_get("/drop", _drop)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        tokens = iter(["t1", "t2", "t3"])
        rest = KubeRest(lambda: ConnectionInfo(server=f"http://127.0.0.1:{port}", token=next(tokens)))
        try:
            return await scenario(rest, seen), seen
        finally:
            await rest.close()
            await runner.cleanup()

    return asyncio.run(main())


def test_a_call_logs_in_again_once_on_401_and_sends_its_accept_header() -> None:
    async def scenario(rest: KubeRest, seen: list[str]) -> Any:
        first = await rest.request("GET", "/ok", accept="application/x-test")
        second = await rest.request("GET", "/ok")
        return first, second

    (first, second), seen = _run(scenario)
    assert first == {"accept": "application/x-test"} and second == {"accept": "application/json"}
    assert seen == ["Bearer t1", "Bearer t2", "Bearer t2"]  # one login after the 401, kept afterwards


def test_errors_are_api_errors_with_their_status() -> None:
    async def scenario(rest: KubeRest, seen: list[str]) -> Any:
        failures = []
        for path in ("/missing", "/drop"):
            with pytest.raises(ApiError) as info:
                await rest.request("GET", path)
            failures.append(info.value.status)
        return failures

    failures, _ = _run(scenario)
    assert failures == [404, 0]  # 0: the connection dropped while the body was read


def test_a_watch_logs_in_again_and_yields_every_line_across_chunks() -> None:
    async def scenario(rest: KubeRest, seen: list[str]) -> Any:
        events: AsyncIterator[dict[str, Any]] = rest.stream("/watch", read_timeout=5)
        return [event async for event in events]

    events, seen = _run(scenario)
    assert [(e["type"], e["object"]["n"]) for e in events] == [("ADDED", 1), ("MODIFIED", 2), ("BOOKMARK", 3)]
    assert seen == ["Bearer t1", "Bearer t2"]


def test_a_watch_that_never_authenticates_raises_401() -> None:
    async def scenario(rest: KubeRest, seen: list[str]) -> Any:
        login = rest._login
        rest._login = lambda: dataclasses.replace(login(), token="bad")
        with pytest.raises(ApiError) as info:
            async for _ in rest.stream("/watch", read_timeout=5):
                pass
        return info.value.status

    status, seen = _run(scenario)
    assert status == 401
    assert seen == ["Bearer bad", "Bearer bad"]  # one re-login, refused again: no third try
