"""The agent's HTTP side: the container-credentials endpoint the SDKs call, and the probe listener.

Every request is answered within --upstream-timeout (600 ms by default) whatever the operator does: the JS SDK
gives up after 1 s and the Go SDK has no timeout of its own (docs/design/pod-identity.md 1.3). A fetch that takes
longer goes on in the background (one per token, one refresh per credential) and the SDK's retry, about a second
later, finds its result in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from vault_sts_operator.agent.cache import Cache, Credentials, Hit, Miss, Refusal
from vault_sts_operator.agent.precheck import PodToken, TokenRefused, canonical_host, check_token, host_allowed
from vault_sts_operator.agent.upstream import CONNECTIONS, Granted, Outcome, Unavailable
from vault_sts_operator.domain.rate import Rate

log = logging.getLogger(__name__)

CREDENTIALS_PATH = "/v1/credentials"
SHUTDOWN_SECONDS = 5.0
PRUNE_SECONDS = 60.0
MAX_FETCHES = 256  # fetches in flight at most; beyond, 503 at once (a pod minting junk tokens cannot pile them up)
MAX_HEADER_BYTES = 32 * 1024  # above the 16 KiB token limit, so an oversized token gets our 401, not a bare 400


class Fetcher(Protocol):
    async def fetch(self, pod_token: str) -> Outcome: ...


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """`HOST:PORT` or `[IPV6]:PORT`."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r} is not HOST:PORT (an IPv6 address in brackets: [fd00:ec2::23]:80)")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"{text!r}: an IPv6 address goes in brackets ([fd00:ec2::23]:80)")
        return cls(host=host.strip("[]"), port=int(port))

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    listen: tuple[Address, ...]
    probe: Address | None
    audience: str = "vaultsts.io/pod-identity"
    upstream_timeout: float = 0.6
    rate: float = 1000.0
    burst: int = 500


class AgentMetrics:
    """The agent's own registry (served on the probe listener): nothing of the operator's metrics module."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes: the per-node cost
        self.requests = Counter("vault_sts_agent_requests", "Requests to /v1/credentials by HTTP status",
                                ["code"], registry=self.registry)
        self.cache_entries = Gauge("vault_sts_agent_cache_entries",
                                   "Entries in the agent's cache: tokens (by digest), credentials, refusals",
                                   ["kind"], registry=self.registry)
        self.upstream_seconds = Histogram("vault_sts_agent_upstream_seconds",
                                          "Time of one fetch from the operator (retries included)",
                                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.6, 1.0, 2.5, 5.0),
                                          registry=self.registry)


def _json(status: int, body: Mapping[str, str], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(dict(body), status=status, headers=headers)


def _error(status: int, code: str, message: str, *, retry: bool = False) -> web.Response:
    return _json(status, {"code": code, "message": message}, {"Retry-After": "1"} if retry else None)


class Agent:
    """Request handling: Host check, rate, token pre-check, cache, single-flight fetches from the operator."""

    def __init__(self, settings: Settings, upstream: Fetcher, *, cache: Cache | None = None,
                 clock: Callable[[], float] = time.time, metrics: AgentMetrics | None = None) -> None:
        self.settings = settings
        self.cache = cache or Cache()
        self.metrics = metrics or AgentMetrics()
        self._upstream = upstream
        self._clock = clock
        self._hosts = frozenset(canonical_host(address.host) for address in settings.listen)
        self._rate = Rate(settings.rate, settings.burst)  # allow(): refused requests take no slot
        self._fetches: dict[str, asyncio.Task[Outcome]] = {}  # by token digest: one fetch per token
        self._refreshes: set[asyncio.Task[None]] = set()
        self._calls = asyncio.Semaphore(CONNECTIONS)  # calls to the operator at once
        for kind in ("tokens", "credentials", "refusals"):
            self.metrics.cache_entries.labels(kind).set_function(self._size_of(kind))

    def _size_of(self, kind: str) -> Callable[[], float]:
        return lambda: self.cache.sizes()[kind]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        self.metrics.requests.labels(str(response.status)).inc()
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if request.path != CREDENTIALS_PATH:
            return _error(404, "NotFound", f"the agent serves only GET {CREDENTIALS_PATH}")
        if request.method != "GET":
            return _error(405, "MethodNotAllowed", f"the agent serves only GET {CREDENTIALS_PATH}")
        if not host_allowed(request.headers.get("Host"), self._hosts):
            return _error(403, "InvalidHost", "the request is not addressed to the agent's address "
                          f"({', '.join(sorted(self._hosts))})")
        now = self._clock()
        if not self._rate.allow(time.monotonic()):
            return _error(429, "TooManyRequests", "the node's agent is over its request rate", retry=True)
        try:
            token = check_token(request.headers.get("Authorization"), audience=self.settings.audience, now=now)
        except TokenRefused as refused:
            return _error(401, "PodTokenInvalid", str(refused))
        found = self.cache.lookup(token.digest, now)
        if isinstance(found, Refusal):
            return _error(found.status, found.code, found.message)
        if isinstance(found, Hit):
            if found.refresh and self.cache.begin_refresh(found.credential):
                self._start_refresh(found.credential, token)
            return self._granted(found.credentials)
        return await self._foreground(token, found)

    async def _foreground(self, token: PodToken, miss: Miss) -> web.Response:
        task = self._fetch(token)
        if task is None:
            outcome: Outcome = Unavailable("too many fetches in flight")
        else:
            try:
                outcome = await asyncio.wait_for(asyncio.shield(task), self.settings.upstream_timeout)
            except TimeoutError:
                outcome = Unavailable("the operator did not answer within the foreground budget")
        if isinstance(outcome, Granted):
            return self._granted(outcome.credentials)
        if isinstance(outcome, Refusal):
            return _error(outcome.status, outcome.code, outcome.message)
        if miss.fallback is not None:  # validated before, copy still usable: an operator outage stays invisible
            return self._granted(miss.fallback)
        return _error(503, "Unavailable", "the operator could not be asked for credentials; retry", retry=True)

    def _granted(self, credentials: Credentials) -> web.Response:
        return _json(200, credentials.answer)

    def _fetch(self, token: PodToken) -> asyncio.Task[Outcome] | None:
        """The token's one fetch from the operator (joined by every request with that token while it runs); its
        result goes into the cache even when no request waits for it any more."""
        task = self._fetches.get(token.digest)
        if task is not None:
            return task
        if len(self._fetches) >= MAX_FETCHES:
            return None
        task = asyncio.get_running_loop().create_task(self._run_fetch(token))
        self._fetches[token.digest] = task
        task.add_done_callback(lambda _: self._fetches.pop(token.digest, None))
        return task

    async def _run_fetch(self, token: PodToken) -> Outcome:
        started = time.monotonic()
        try:
            async with self._calls:
                outcome = await self._upstream.fetch(token.value)
        except Exception as exc:  # a bug in a fetch must not reach the SDK as a hang
            outcome = Unavailable(f"fetch failed: {type(exc).__name__}")
        self.metrics.upstream_seconds.observe(time.monotonic() - started)
        now = self._clock()
        if isinstance(outcome, Granted):
            self.cache.store(token.digest, token_expires_at=token.expires_at, credential=outcome.credential,
                             credentials=outcome.credentials, now=now, revalidate_after=outcome.revalidate_after)
            log.debug("token %s... granted %s", token.short, outcome.credential)
        elif isinstance(outcome, Refusal):
            self.cache.refuse(token.digest, outcome, now)
            log.info("token %s... refused by the operator: %s %s", token.short, outcome.status, outcome.code)
        else:
            log.warning("token %s...: operator unavailable: %s", token.short, outcome.reason)
        return outcome

    def _start_refresh(self, credential: str, token: PodToken) -> None:
        async def refresh() -> None:
            try:
                task = self._fetch(token)
                if task is not None:
                    await task
            finally:
                self.cache.end_refresh(credential, self._clock())

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            self.cache.prune(self._clock())

    async def drain(self) -> None:
        """Let background fetches finish (bounded by their own budget), then stop."""
        pending = [*self._fetches.values(), *self._refreshes]
        if pending:
            await asyncio.wait(pending, timeout=SHUTDOWN_SECONDS)
        for task in pending:
            task.cancel()


def credentials_app(agent: Agent) -> web.Application:
    app = web.Application(client_max_size=1024)  # the SDKs send no body
    app.router.add_route("*", "/{tail:.*}", agent.handle)
    return app


def probe_app(agent: Agent, ready: Callable[[], bool]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ready\n") if ready() else web.Response(status=503, text="not ready\n")

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(agent.metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class Running:
    """The agent's listeners, started; `ready` once every mandatory address is bound (and, before that, the CA
    was loaded by the caller)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.ready = False
        self.bound: list[Address] = []
        self._runner = web.AppRunner(credentials_app(agent), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS,
                                     max_field_size=MAX_HEADER_BYTES, keepalive_timeout=75)
        self._probe_runner = web.AppRunner(probe_app(agent, lambda: self.ready), access_log=None,
                                           shutdown_timeout=1.0)
        self._prune: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.agent.settings
        await self._probe_runner.setup()
        if settings.probe is not None:
            await web.TCPSite(self._probe_runner, settings.probe.host, settings.probe.port,
                              reuse_address=True).start()
        await self._runner.setup()
        for address in settings.listen:
            try:
                await web.TCPSite(self._runner, address.host, address.port, reuse_address=True).start()
            except OSError as exc:
                if not address.ipv6:
                    raise
                # The node has IPv6 off (init-link then skipped the address): the IPv4 address serves every SDK.
                log.warning("not listening on %s: %s", address, exc.strerror or exc)
                continue
            self.bound.append(address)
        self._prune = asyncio.get_running_loop().create_task(self.agent.prune_forever())
        self.ready = True
        log.info("agent listening on %s", ", ".join(str(address) for address in self.bound))

    def ports(self) -> list[int]:
        """The ports actually bound (a test listens on port 0)."""
        return [address[1] for address in self._runner.addresses]

    def probe_ports(self) -> list[int]:
        return [address[1] for address in self._probe_runner.addresses]

    async def stop(self) -> None:
        """SIGTERM: unready, stop accepting, let in-flight requests finish (SHUTDOWN_SECONDS), then the rest."""
        self.ready = False
        await self._runner.cleanup()
        await self.agent.drain()
        if self._prune is not None:
            self._prune.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune
        await self._probe_runner.cleanup()
