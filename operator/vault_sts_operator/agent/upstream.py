"""The agent's one outbound call: POST the pod's token to the operator's Pod Identity endpoint over HTTPS.

The agent authenticates with its own projected token (audience vaultsts.io/pod-identity-agent), read again for
every call because the kubelet rotates it; the operator reviews both tokens and takes the node from the agent's.
The operator's certificate is verified against --ca-file under --server-name: the agent reaches the Service by
its cluster IP (environment variables the kubelet sets, no DNS on a hostNetwork pod), so the name to check is
given apart from the URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from vault_sts_operator.agent.cache import Credentials, Refusal
from vault_sts_operator.domain.timefmt import format_time, parse_time

log = logging.getLogger(__name__)

PATH = "/v1/pod-identity/credentials"
SDK_FIELDS = ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
MAX_MESSAGE = 512
MAX_ANSWER = 64 * 1024
# Connections to the operator at most: its per-node bucket allows 50 calls/s and a call takes milliseconds, while
# every TLS connection costs memory on every node (32 connections measured 8 MB more RSS than 8 after a burst).
CONNECTIONS = 8


@dataclass(frozen=True)
class Granted:
    credential: str  # namespace/name
    credentials: Credentials
    revalidate_after: float | None


@dataclass(frozen=True)
class Unavailable:
    reason: str  # for the agent's log: never a token or key


Outcome = Granted | Refusal | Unavailable


class Upstream:
    def __init__(self, *, url: str, ca_file: str, server_name: str, token_file: str,
                 budget_seconds: float = 5.0, attempts: int = 3) -> None:
        self._url = url.rstrip("/") + PATH
        self._ca_file = ca_file
        self._server_name = server_name or None
        self._token_file = token_file
        self._budget = budget_seconds
        self._attempts = attempts
        self._ssl: ssl.SSLContext | None = None
        self._ca_mtime = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def load_ca(self) -> None:
        """Read the operator's CA (again when the file changed: cert-manager rotates it). Raises OSError or
        ssl.SSLError when it cannot be read, which keeps the agent unready."""
        if not self._url.startswith("https://"):
            self._ssl = None
            return
        mtime = os.stat(self._ca_file).st_mtime if self._ca_file else 0.0
        if self._ssl is not None and mtime == self._ca_mtime:
            return
        context = ssl.create_default_context(cafile=self._ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ssl, self._ca_mtime = context, mtime
        if self._session is not None:  # new connections verify against the new CA
            old, self._session = self._session, None
            closing = asyncio.get_running_loop().create_task(old.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=CONNECTIONS,
                                             keepalive_timeout=60, ttl_dns_cache=30)
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, pod_token: str) -> Outcome:
        """Ask the operator for the pod's credentials within the background budget, retrying an unavailable
        operator with jitter (a failover, a 503 NotLeader of a standby); a refusal is final."""
        deadline = time.monotonic() + self._budget
        outcome: Outcome = Unavailable("no attempt")
        for attempt in range(self._attempts):
            left = deadline - time.monotonic()
            if left <= 0.05:
                break
            outcome, retry_after = await self._once(pod_token, left)
            if not isinstance(outcome, Unavailable) or attempt + 1 == self._attempts:
                break
            pause = min(retry_after if retry_after is not None else 0.25 * 2 ** attempt, 1.0)
            pause *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
            if deadline - time.monotonic() <= pause:
                break
            await asyncio.sleep(pause)
        return outcome

    async def _once(self, pod_token: str, timeout: float) -> tuple[Outcome, float | None]:
        try:
            self.load_ca()
            with open(self._token_file) as handle:
                agent_token = handle.read().strip()
        except (OSError, ssl.SSLError) as exc:
            return Unavailable(f"cannot read the agent's token or the CA: {type(exc).__name__}: "
                               f"{getattr(exc, 'strerror', None) or exc.__class__.__name__}"), None
        try:
            async with self._client().post(
                    self._url, json={"token": pod_token}, headers={"Authorization": f"Bearer {agent_token}"},
                    server_hostname=self._server_name, timeout=aiohttp.ClientTimeout(total=timeout),
                    allow_redirects=False) as response:
                status = response.status
                raw = await response.content.read(MAX_ANSWER + 1)
                retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            return Unavailable("the operator did not answer in time"), None
        except aiohttp.ClientError as exc:  # connection refused, TLS failure, reset: the text names no token
            return Unavailable(f"cannot reach the operator: {type(exc).__name__}"), None
        try:
            body: Any = json.loads(raw) if len(raw) <= MAX_ANSWER else None
        except ValueError:
            body = None
        return _outcome(status, body), retry_after


def _seconds(text: str | None) -> float | None:
    try:
        return max(0.0, float(text)) if text else None
    except ValueError:
        return None


def _outcome(status: int, body: Any) -> Outcome:
    if status == 200:
        return _granted(body)
    if status in (401, 403):
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        return Refusal(status=status, code=code if isinstance(code, str) and code else
                       ("PodTokenInvalid" if status == 401 else "Forbidden"),
                       message=message[:MAX_MESSAGE] if isinstance(message, str) else f"the operator answered {status}")
    code = body.get("code") if isinstance(body, dict) else None
    return Unavailable(f"the operator answered {status}" + (f" {code[:64]}" if isinstance(code, str) else ""))


def _granted(body: Any) -> Outcome:
    if not isinstance(body, dict) or not all(isinstance(body.get(key), str) and body[key] for key in SDK_FIELDS):
        return Unavailable("the operator's 200 answer lacks a credential field")
    credential = body.get("credential")
    if not isinstance(credential, str) or not credential:
        return Unavailable("the operator's 200 answer names no credential")
    try:
        expiration = parse_time(body["Expiration"])
    except ValueError:
        return Unavailable("the operator's Expiration is not RFC 3339")
    answer = {key: body[key] for key in SDK_FIELDS}
    answer["Expiration"] = format_time(expiration)  # whole seconds, Z: what every SDK parses
    account = body.get("AccountId")
    if isinstance(account, str) and account:
        answer["AccountId"] = account
    revalidate = body.get("revalidateAfter")
    revalidate_after = float(revalidate) if isinstance(revalidate, int | float) and not isinstance(
        revalidate, bool) and revalidate > 0 else None
    return Granted(credential=credential, credentials=Credentials(answer=answer, expires_at=expiration.timestamp()),
                   revalidate_after=revalidate_after)
