"""The /metrics endpoint, on aiohttp.

Secure by default, as controller-runtime's metrics server is (``filters.WithAuthenticationAndAuthorization``):
HTTPS, and a scrape must carry ``Authorization: Bearer <token>`` that the API server authenticates
(TokenReview) and authorizes for ``get`` on the non-resource URL ``/metrics`` (SubjectAccessReview). The
series name every credential and identity, so any pod that reaches the port must not read them.

- 401 without a token, or with one the API server does not authenticate; 403 when the token's user may
  not ``get /metrics``; 503 when the API server cannot be asked (not cached).
- Decisions are cached under the token's SHA-256, never the token: allowed for 2 minutes, refused for
  30 seconds (controller-runtime: 1 minute for the token, 5 minutes allowed and 30 seconds refused for the
  access). At most a few reviews run at once, and one per token at a time, however many scrapes wait.
- The certificate: ``tls.crt`` / ``tls.key`` from a directory (``--metrics-cert-dir``, e.g. cert-manager's
  Secret mounted), read again when the files change; else a self-signed one made at start, as
  controller-runtime does when it is given none (by a child process: `cryptography` stays out of the operator).
- ``--metrics-secure=false``: plain HTTP and no authentication, for clusters that protect the port
  otherwise (a NetworkPolicy, a sidecar proxy).

No token value is logged, raised or kept: the cache holds digests, and the log names the user only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import hashlib
import logging
import ssl
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from vault_sts_operator.clients.kube import ReviewedUser
from vault_sts_operator.domain.errors import KubernetesError
from vault_sts_operator.services.self_signed_cert import CERT_NAME, KEY_NAME

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# CERT_NAME, KEY_NAME: tls.crt and tls.key, a kubernetes.io/tls Secret's keys (cert-manager writes these)


class Reviewer(Protocol):
    """The API server's delegated authentication and authorization (clients.kube.KubeGateway)."""

    async def review_token(self, token: str, audiences: Sequence[str] = ()) -> ReviewedUser | None: ...

    async def may_access(self, user: ReviewedUser, *, path: str, verb: str) -> bool: ...


class Decision(enum.IntEnum):
    ALLOWED = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403


@dataclass(frozen=True)
class _Cached:
    decision: Decision
    expires: float


class AccessReviews:
    """Whether a bearer token may read /metrics, asked of the API server and remembered briefly.

    Keyed by the token's SHA-256 (a digest cannot be replayed as a token). Bounded: the oldest entries go
    first, so a flood of made-up tokens costs memory no more than ``max_entries`` digests; each such token
    still costs one TokenReview, at most ``concurrency`` at a time."""

    def __init__(self, reviewer: Reviewer, *, allow_ttl: float = 120.0, deny_ttl: float = 30.0,
                 max_entries: int = 1024, concurrency: int = 4, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reviewer = reviewer
        self._allow_ttl, self._deny_ttl = allow_ttl, deny_ttl
        self._max_entries = max_entries
        self._timeout = timeout
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Decision]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self.reviews = 0  # TokenReviews asked (tests and the debug log)

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    async def decide(self, token: str) -> Decision:
        """Raises KubernetesError when the API server could not be asked (or did not answer in time)."""
        key = self.key(token)
        cached = self._cache.get(key)
        if cached is not None:
            if cached.expires > self._clock():
                return cached.decision
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._review(key, token))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        try:
            # shielded: a scrape that gives up does not cancel the review others wait on
            return await asyncio.wait_for(asyncio.shield(task), self._timeout)
        except TimeoutError:
            raise KubernetesError("the API server did not review the bearer token in time") from None

    def _settled(self, key: str, task: asyncio.Task[Decision]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure every waiter gave up on is not reported again at exit

    async def _review(self, key: str, token: str) -> Decision:
        async with self._slots:
            self.reviews += 1
            user = await self._reviewer.review_token(token)
            if user is None:
                decision = Decision.UNAUTHENTICATED
                log.debug("metrics: a bearer token the API server does not authenticate (401)")
            elif await self._reviewer.may_access(user, path=METRICS_PATH, verb="get"):
                decision = Decision.ALLOWED
            else:
                decision = Decision.FORBIDDEN
                log.info("metrics: %s may not get %s (403); bind it to the metrics-reader ClusterRole",
                         user.username, METRICS_PATH)
        ttl = self._allow_ttl if decision is Decision.ALLOWED else self._deny_ttl
        self._cache[key] = _Cached(decision, self._clock() + ttl)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return decision


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; '' for none or another scheme."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


# -- certificates ---------------------------------------------------------------------------------------------
def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def self_signed_context(hosts: Sequence[str] = (), *, timeout: float = 60.0) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (ECDSA P-256, a year) for `hosts`, the host name,
    localhost and the loopback addresses. A child interpreter makes it (services/self_signed_cert.py), so
    `cryptography` (about 10 MB resident) never loads into the operator; the key stays on disk only for the
    moment the context reads it, in a private temporary directory (Python's ssl loads keys from files only)."""
    context = _server_context()
    with tempfile.TemporaryDirectory(prefix="vso-metrics-") as private:  # mode 0700
        done = subprocess.run(  # noqa: S603 (this interpreter, this package's module, no shell)
            [sys.executable, "-m", "vault_sts_operator.services.self_signed_cert", private, *hosts],
            capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"could not make the metrics server's self-signed certificate: {tail}")
        context.load_cert_chain(Path(private, CERT_NAME), Path(private, KEY_NAME))
    return context


class CertificateFiles:
    """``tls.crt`` and ``tls.key`` in a directory, loaded into one server context and loaded again when
    they change (a renewed cert-manager Secret): the next handshakes use the new certificate."""

    def __init__(self, directory: str) -> None:
        self.cert, self.key = Path(directory, CERT_NAME), Path(directory, KEY_NAME)
        self.context = _server_context()
        self._stamp = self._current_stamp()
        self.context.load_cert_chain(self.cert, self.key)  # a missing or bad file fails the start

    def _current_stamp(self) -> tuple[int, ...]:
        stats = (self.cert.stat(), self.key.stat())  # follows the symlinks a Secret volume swaps
        return tuple(v for s in stats for v in (s.st_ino, s.st_mtime_ns, s.st_size))

    def reload_if_changed(self) -> bool:
        try:
            stamp = self._current_stamp()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:  # half-written during a swap: the next check retries
            log.warning("metrics: could not load the certificate from %s: %s", self.cert.parent, exc)
            return False
        self._stamp = stamp
        log.info("metrics: certificate reloaded from %s", self.cert.parent)
        return True


# -- the server -----------------------------------------------------------------------------------------------
_OPENMETRICS_EOF = b"# EOF\n"


class _OneFamily:
    """One collected family, as a registry for prometheus_client's encoders."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


class MetricsServer:
    """Serves `registry` at /metrics on `port` (0 for any free one: see ``bound_port``)."""

    def __init__(self, *, port: int, host: str = "0.0.0.0", reviews: AccessReviews | None,  # noqa: S104
                 tls: ssl.SSLContext | None, certificates: CertificateFiles | None = None,
                 registry: CollectorRegistry = REGISTRY, reload_seconds: float = 60.0) -> None:
        self._port, self._host = port, host
        self._reviews, self._tls, self._certificates = reviews, tls, certificates
        self._registry = registry
        self._reload_seconds = reload_seconds
        self._runner: web.AppRunner | None = None
        self._reloader: asyncio.Task[None] | None = None
        # One thread renders the text (at ten thousand credentials, tens of milliseconds): the event loop
        # stays free, and concurrent scrapes queue instead of rendering in parallel.
        self._render = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vso-metrics")
        self._render_stopped = False
        self.bound_port = 0

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    async def run(self) -> None:
        """A supervised task (services/supervisor.py): serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def start(self) -> None:
        if self._render_stopped:  # stopped before (a supervised restart): a fresh rendering thread
            self._render_stopped = False
            self._render = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vso-metrics")
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics, allow_head=False)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls)
        await site.start()
        addresses = self._runner.addresses  # (host, port, ...) of each bound socket
        self.bound_port = int(addresses[0][1]) if addresses else self._port
        if self._certificates is not None:
            self._reloader = asyncio.get_running_loop().create_task(self._watch_certificates())
        log.info("metrics: %s://%s:%d%s, %s", self.scheme, self._host, self.bound_port, METRICS_PATH,
                 "bearer token reviewed by the API server (TokenReview, SubjectAccessReview get /metrics)"
                 if self._reviews is not None else "no authentication (--metrics-secure=false)")

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            await asyncio.gather(self._reloader, return_exceptions=True)
            self._reloader = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._render.shutdown(wait=False, cancel_futures=True)
        self._render_stopped = True

    async def _watch_certificates(self) -> None:
        assert self._certificates is not None
        while True:
            await asyncio.sleep(self._reload_seconds)
            self._certificates.reload_if_changed()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if self._reviews is not None:
            refusal = await self._authorize(request)
            if refusal is not None:
                return refusal
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        names = request.query.getall("name[]", [])
        registry = self._registry.restricted_registry(names) if names else self._registry
        loop = asyncio.get_running_loop()
        families = await loop.run_in_executor(self._render, lambda: list(registry.collect()))
        # Streamed a family at a time: at ten thousand credentials the whole text is about 5 MB, and rendering it
        # whole (its lines, their join, the bytes, the TLS copies) took the process up by some 30 MB at each scrape
        # (benchmarks/FINDINGS.md, "Issue 18"). A family renders as prometheus_client renders it; OpenMetrics ends
        # the whole exposition, not each family, with "# EOF".
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_compression()  # gzip or deflate when the scraper accepts it
        await response.prepare(request)
        eof = b""
        for family in families:
            chunk = await loop.run_in_executor(self._render, encoder, _OneFamily(family))
            if chunk.endswith(_OPENMETRICS_EOF):
                chunk, eof = chunk[:-len(_OPENMETRICS_EOF)], _OPENMETRICS_EOF
            if chunk:
                await response.write(chunk)
        if not families and content_type.startswith("application/openmetrics-text"):
            eof = _OPENMETRICS_EOF
        await response.write(eof)
        await response.write_eof()
        return response

    async def _authorize(self, request: web.Request) -> web.Response | None:
        assert self._reviews is not None
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            return web.Response(status=401, text="Unauthorized: a bearer token is required\n",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        try:
            decision = await self._reviews.decide(token)
        except KubernetesError as exc:  # its message names the call and the status, never the token
            log.warning("metrics: %s", exc.message)
            return web.Response(status=503, text="Service Unavailable: the API server could not review the token\n")
        if decision is Decision.UNAUTHENTICATED:
            return web.Response(status=401, text="Unauthorized\n",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics", error="invalid_token"'})
        if decision is Decision.FORBIDDEN:
            return web.Response(status=403, text=f"Forbidden: get {METRICS_PATH} is not allowed\n")
        return None


def build_metrics_server(*, port: int, secure: bool, cert_dir: str, reviewer: Reviewer,
                         registry: CollectorRegistry = REGISTRY, host: str = "0.0.0.0",  # noqa: S104
                         ) -> MetricsServer:
    """The server the operator's flags describe (--metrics-port, --metrics-secure, --metrics-cert-dir)."""
    if not secure:
        return MetricsServer(port=port, host=host, reviews=None, tls=None, registry=registry)
    certificates = CertificateFiles(cert_dir) if cert_dir else None
    tls = certificates.context if certificates is not None else self_signed_context()
    return MetricsServer(port=port, host=host, reviews=AccessReviews(reviewer), tls=tls, certificates=certificates,
                         registry=registry)
