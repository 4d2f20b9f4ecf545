"""The operator's endpoint for node agents (mode PodIdentity; docs/design/pod-identity.md 4.2, 4.3, 6.2).

`POST /v1/pod-identity/credentials` over HTTPS, `Authorization: Bearer <the agent's own token>`, body
`{"token": "<the pod's token>"}` (at most 16 KiB). Every replica listens; only the leader answers with
credentials (a standby says 503 NotLeader; the leader publishes itself as the Service's only endpoint,
services/leader_endpoint.py). The answer is decided in this order, each refusal with its code
(domain/pod_identity.py): the agent's token, the pod's token, the pod's node against the agent's, the binding
(spec.delivery.serviceAccounts, services/credential_store.py), the credential's state, then the credentials this
process holds, or, when it holds none (after a restart or failover), a pass woken for them, waited on for at most
`wait_seconds` (the agent answers its SDK within 700 ms whatever happens here, and the SDK retries).

Both tokens are reviewed by the API server (TokenReview with the audience each must carry); a review is cached
for 60 s (never past the token's own expiry) under the SHA-256 of the token, so an agent asking every few
minutes per pod costs at most one review per token per minute. Tokens are never logged or kept.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from vault_sts_operator import metrics
from vault_sts_operator.clients.kube import ReviewedUser
from vault_sts_operator.domain import pod_identity as pi
from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.delivery import container_credentials, fingerprint
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.rate import Rate
from vault_sts_operator.services.credential_store import PodIdentityStore, Stored
from vault_sts_operator.services.metrics_server import CertificateFiles, bearer_token

log = logging.getLogger(__name__)

PATH = "/v1/pod-identity/credentials"
MAX_BODY = 16 * 1024
REVIEW_TTL = 60.0
REVIEW_CACHE_ENTRIES = 10_000
# A pod token's review is trusted for the agent's own cache this long; the agent asks again after it.
REVALIDATE_AFTER_SECONDS = 300
# Requests per node: one node's agent (a burst of pods starting, or a compromised node) cannot starve the others.
NODE_RATE, NODE_BURST = 50.0, 100
# Agent-token reviews not answered from the cache, per client address. The port is reachable from any pod unless
# podIdentity.networkPolicy.agentFrom narrows it, and a token forged with the agent's claims passes the pre-check:
# without this bound every such request would be one TokenReview, the API server's work spent on the operator's
# own flow (priority and fairness). An agent needs one uncached review a minute; a burst covers agents that
# share an address (SNAT) restarting together.
PEER_REVIEW_RATE, PEER_REVIEW_BURST = 2.0, 20
PEER_ENTRIES = 4096
# Credentials with less than this left are not handed out: an SDK would refresh on every call (the operator
# renews at least 20 minutes before expiry, so this only happens when a rotation fails for long).
MIN_TTL_SECONDS = 15


class Reviewer(Protocol):
    """What the reviews need of clients.kube.KubeGateway (metrics_server.Reviewer also asks for may_access)."""

    async def review_token(self, token: str, audiences: Sequence[str] = ()) -> ReviewedUser | None: ...


def _unverified_exp(token: str) -> float | None:
    """The `exp` claim of a JWT, read without checking the signature: used only to stop caching a review (that
    the API server made) past the token's own expiry."""
    try:
        exp = pi.unverified_claims(token).get("exp")
    except ValueError:
        return None
    return float(exp) if isinstance(exp, int | float) else None


class TokenReviews:
    """TokenReviews, cached by the SHA-256 of the token, at most `concurrency` in flight, one per token at a time."""

    def __init__(self, reviewer: Reviewer, *, concurrency: int = 16, ttl: float = REVIEW_TTL,
                 entries: int = REVIEW_CACHE_ENTRIES, clock: Callable[[], float] = time.time) -> None:
        self._reviewer = reviewer
        self._gate = asyncio.Semaphore(concurrency)
        self._ttl, self._entries, self._clock = ttl, entries, clock
        self._cache: collections.OrderedDict[str, tuple[pi.Review, float]] = collections.OrderedDict()
        self._flight: dict[str, asyncio.Future[pi.Review]] = {}

    @staticmethod
    def _key(token: str, audience: str) -> str:
        return hashlib.sha256(f"{audience}\x00{token}".encode()).hexdigest()

    def cached(self, token: str, audience: str) -> bool:
        """Would review() answer without asking the API server (a current entry, or a review in flight)?"""
        key = self._key(token, audience)
        hit = self._cache.get(key)
        return (hit is not None and hit[1] > self._clock()) or key in self._flight

    async def review(self, token: str, audience: str, *, kind: str) -> pi.Review:
        key = self._key(token, audience)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            self._cache.move_to_end(key)
            metrics.TOKEN_REVIEWS.labels(kind=kind, cached="true").inc()
            return hit[0]
        flight = self._flight.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        future: asyncio.Future[pi.Review] = asyncio.get_running_loop().create_future()
        self._flight[key] = future
        try:
            async with self._gate:
                user = await self._reviewer.review_token(token, [audience])
            metrics.TOKEN_REVIEWS.labels(kind=kind, cached="false").inc()
            review = pi.Review(authenticated=False) if user is None else pi.Review(
                authenticated=True, username=user.username, audiences=user.audiences, extra=user.extra)
            exp = _unverified_exp(token)
            until = now + self._ttl if exp is None else min(now + self._ttl, exp)
            self._cache[key] = (review, until)
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
            future.set_result(review)
            return review
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._flight[key]


class _Answer(Exception):
    """A refusal, as the agent is told it (never a token or a key in the message)."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class PodIdentityServer:
    def __init__(self, *, store: PodIdentityStore, reviewer: Reviewer, leading: Callable[[], bool],
                 audience: str, agent_audience: str, agent_account: tuple[str, str], port: int,
                 host: str = "0.0.0.0", tls: ssl.SSLContext | None,  # noqa: S104 (agents come from every node)
                 certificates: CertificateFiles | None = None, wait_seconds: float = 0.6,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store, self._leading, self._clock = store, leading, clock
        self._reviews = TokenReviews(reviewer)
        self._audience, self._agent_audience, self._agent_account = audience, agent_audience, agent_account
        self._host, self._port, self._tls, self._certificates = host, port, tls, certificates
        self._wait = wait_seconds
        self._runner: web.AppRunner | None = None
        self._granted: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._node_rates: dict[str, Rate] = {}  # keyed by authenticated node names only: bounded by the cluster
        self._peer_rates: collections.OrderedDict[str, Rate] = collections.OrderedDict()  # LRU, PEER_ENTRIES
        self.bound_port = 0

    async def run(self) -> None:
        """A supervised task: serve until cancelled."""
        await self.start()
        try:
            while True:
                await asyncio.sleep(60)
                if self._certificates is not None:
                    self._certificates.reload_if_changed()
        finally:
            await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls)
        await site.start()
        addresses = self._runner.addresses
        self.bound_port = int(addresses[0][1]) if addresses else self._port
        log.info("pod identity: agents served on %s://%s:%d%s", "https" if self._tls else "http", self._host,
                 self.bound_port, PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            body = await self._answer(request)
            metrics.POD_IDENTITY_REQUESTS.labels(result=pi.GRANTED).inc()
            return web.json_response(body)
        except _Answer as refused:
            metrics.POD_IDENTITY_REQUESTS.labels(result=refused.code).inc()
            headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after is not None else None
            return web.json_response({"code": refused.code, "message": refused.message}, status=refused.status,
                                     headers=headers)
        finally:
            metrics.POD_IDENTITY_SECONDS.observe(time.monotonic() - started)

    async def _answer(self, request: web.Request) -> dict[str, Any]:
        if not self._leading():
            raise _Answer(503, pi.NOT_LEADER, "this replica is not the leader; retry", retry_after=1)
        agent_token = bearer_token(request.headers.get("Authorization", ""))
        try:
            payload = await request.json()
        except (ValueError, web.HTTPRequestEntityTooLarge):
            raise _Answer(400, pi.BAD_REQUEST, 'the body must be JSON {"token": "<pod token>"} of at most '
                                               f"{MAX_BODY} bytes") from None
        pod_token = payload.get("token") if isinstance(payload, dict) else None
        if not agent_token or not isinstance(pod_token, str) or not pod_token:
            raise _Answer(400 if agent_token else 401, pi.BAD_REQUEST if agent_token else pi.AGENT_UNAUTHENTICATED,
                          "an agent's bearer token and the pod's token are both required")
        node = await self._agent_node(agent_token, request.remote)
        try:
            pod_review = await self._reviews.review(pod_token, self._audience, kind="pod")
        except IssuingError as exc:
            raise _review_failed(exc) from None
        pod = pi.pod_subject(pod_review, audience=self._audience)
        if isinstance(pod, pi.Refusal):
            raise _Answer(pod.status, pod.code, pod.message)
        mismatch = pi.node_refusal(pod, node)
        if mismatch is not None:
            log.warning("pod identity: the agent on node %s asked for pod %s/%s, which runs on node %s: refused "
                        "(a node asking for another node's pod is an incident)", node, pod.namespace, pod.pod_name,
                        pod.node)
            raise _Answer(mismatch.status, mismatch.code, mismatch.message)
        name = self._store.serving(pod.namespace, pod.service_account)
        if name is None:
            refusal = pi.not_bound(pod)
            raise _Answer(refusal.status, refusal.code, refusal.message)
        stored = await self._credentials((pod.namespace, name))
        creds = stored.creds
        grant = (pod.pod_uid, creds.access_key_id)
        if grant not in self._granted:
            self._granted[grant] = None
            while len(self._granted) > REVIEW_CACHE_ENTRIES:
                self._granted.popitem(last=False)
            log.info("pod identity: credentials %s of %s/%s to pod %s/%s (ServiceAccount %s) on node %s",
                     fingerprint(creds.access_key_id), pod.namespace, name, pod.namespace, pod.pod_name,
                     pod.service_account, node)
        answer = container_credentials(access_key_id=creds.access_key_id, secret_access_key=creds.secret_access_key,
                                       session_token=creds.session_token, expiration=creds.expiration)
        account = _account_of(creds.assumed_role_arn)
        if account:
            answer["AccountId"] = account
        return {**answer, "credential": f"{pod.namespace}/{name}", "revalidateAfter": REVALIDATE_AFTER_SECONDS}

    async def _agent_node(self, agent_token: str, peer: str | None) -> str:
        """The asking agent's node, from its own token: pre-checked, paced per address while not cached, reviewed;
        then the node's own request rate."""
        precheck = pi.agent_token_precheck(agent_token, audience=self._agent_audience, agent=self._agent_account,
                                           now=time.time())
        if precheck is not None:
            raise _Answer(precheck.status, precheck.code, precheck.message)
        if not self._reviews.cached(agent_token, self._agent_audience) and not self._peer_allows(peer):
            raise _Answer(429, pi.THROTTLED, "too many agent tokens to review from this address; retry", retry_after=1)
        try:
            agent_review = await self._reviews.review(agent_token, self._agent_audience, kind="agent")
        except IssuingError as exc:
            raise _review_failed(exc) from None
        node = pi.agent_node(agent_review, audience=self._agent_audience, agent=self._agent_account)
        if isinstance(node, pi.Refusal):
            raise _Answer(node.status, node.code, node.message)
        rate = self._node_rates.setdefault(node, Rate(NODE_RATE, NODE_BURST))
        if not rate.allow(time.monotonic()):
            raise _Answer(429, pi.THROTTLED, f"more than {NODE_RATE:.0f} requests per second from node {node}; retry",
                          retry_after=1)
        return node

    def _peer_allows(self, peer: str | None) -> bool:
        """May this client address have one more agent token reviewed? (PEER_REVIEW_RATE; at most PEER_ENTRIES
        addresses are remembered, the least recently seen forgotten first.)"""
        key = peer or ""
        rate = self._peer_rates.get(key)
        if rate is None:
            rate = self._peer_rates[key] = Rate(PEER_REVIEW_RATE, PEER_REVIEW_BURST)
            while len(self._peer_rates) > PEER_ENTRIES:
                self._peer_rates.popitem(last=False)
        else:
            self._peer_rates.move_to_end(key)
        return rate.allow(time.monotonic())

    async def _credentials(self, key: tuple[str, str]) -> Stored:
        """What this process holds for the credential, or what the pass woken for it issues within the wait."""
        stored = self._store.get(key)
        if stored is not None and (stored.creds.expiration - self._clock()).total_seconds() > MIN_TTL_SECONDS:
            return stored
        refused = self._store.refusal(key)
        if refused is not None:
            raise _refusal(*refused)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self._store.want(key)), self._wait)
        except TimeoutError:
            raise _Answer(503, pi.NOT_READY, "the credentials are being issued; retry", retry_after=1) from None
        if outcome.stored is not None and \
                (outcome.stored.creds.expiration - self._clock()).total_seconds() > MIN_TTL_SECONDS:
            return outcome.stored
        raise _refusal(outcome.reason or pi.NOT_READY, outcome.message or "the credentials are not issued")


def _review_failed(exc: IssuingError) -> _Answer:
    """The API server could not review a token (the message never holds the token)."""
    log.warning("pod identity: a token review failed: %s", exc.message)
    return _Answer(503, pi.NOT_READY, "the operator could not review the tokens; retry", retry_after=1)


def _refusal(reason: str, message: str) -> _Answer:
    """A pass's failure as the agent is told it: configuration reasons are 403 (the SDK stops), others 503."""
    if reason in reasons.USER_ACTION_REQUIRED or reason == pi.NOT_BOUND:
        return _Answer(403, pi.NOT_ALLOWED if reason != pi.NOT_BOUND else pi.NOT_BOUND,
                       f"the credential is not served ({reason}): {message}")
    return _Answer(503, pi.NOT_READY, f"the credential is not ready ({reason}); retry", retry_after=1)


def _account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[4].isdigit() else ""
