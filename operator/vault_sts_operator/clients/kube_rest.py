"""An async Kubernetes REST client on aiohttp.

The operator makes a handful of calls beyond its watches (Secrets by name, status patches, Events,
Leases, rollout restarts). This client needs nothing beyond aiohttp and no thread hop per call: the
official client's generated models cost about 20 MB and much CPU in argument validation, and
lightkube or kubernetes_asyncio would bring a second HTTP stack (httpx) or a second set of generated
models (see benchmarks/FINDINGS.md, "The Kubernetes client"). Credentials come from
clients/kube_config.py (in-cluster ServiceAccount or kubeconfig), read again when the API server
answers 401 (projected ServiceAccount tokens rotate).

TLS material is loaded into one in-memory SSLContext per login. Python's ssl module loads
a client certificate and key only from files, so those (kubeconfig `*-data` fields) are
written to private temporary files that are removed as soon as the context has read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp

from vault_sts_operator.clients.kube_config import ConnectionInfo, Login

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer. `message` is the API server's Status message (cut to 1 KiB; "" if none): it may
    quote the request, so callers that sent secret values redact it before showing it (clients/kube.py)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


STATUS_MESSAGE_MAX = 1024


def status_message(raw: bytes) -> str:
    """The `message` of a metav1.Status body, or ""."""
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:STATUS_MESSAGE_MAX] if message else ""


@contextlib.contextmanager
def _transient_file(data: bytes, suffix: str) -> Iterator[str]:
    """A private file holding `data` for as long as the block runs, then removed."""
    fd, path = tempfile.mkstemp(prefix="vso-kube-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def ssl_context(info: ConnectionInfo) -> ssl.SSLContext | bool:
    """The TLS settings of a login; False when the kubeconfig says insecure-skip-tls-verify."""
    if info.insecure:
        return False
    if info.ca_path:
        context = ssl.create_default_context(cafile=os.fsdecode(info.ca_path))
    elif info.ca_data:
        context = ssl.create_default_context(cadata=info.ca_data.decode())
    else:
        context = ssl.create_default_context()
    with contextlib.ExitStack() as files:
        cert = os.fsdecode(info.certificate_path) if info.certificate_path else (
            files.enter_context(_transient_file(info.certificate_data, ".crt"))
            if info.certificate_data else None)
        key = os.fsdecode(info.private_key_path) if info.private_key_path else (
            files.enter_context(_transient_file(info.private_key_data, ".key"))
            if info.private_key_data else None)
        if cert and key:
            context.load_cert_chain(cert, key)
    return context


async def _error_message(response: aiohttp.ClientResponse) -> str:
    try:
        return status_message(await response.read())
    except (aiohttp.ClientError, TimeoutError, OSError):
        return ""


class KubeRest:
    """One aiohttp session to the API server; create it inside the running event loop."""

    def __init__(self, login: Login, *, pool_size: int = 16, timeout: float = 30.0) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._pool_size = pool_size
        self._lock = asyncio.Lock()
        self._server = ""
        self._server_hostname: str | None = None  # the kubeconfig's tls-server-name
        self._session: aiohttp.ClientSession | None = None
        self._generation = 0

    async def _connect(self) -> None:
        info = self._login()
        headers = {"User-Agent": "vault-sts-operator", "Accept": JSON}
        token = info.current_token()
        if token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {token}"
        # Environment proxies / CA bundles are ignored (ConnectionInfo.trust_env=False).
        connector = aiohttp.TCPConnector(limit=self._pool_size, ssl=ssl_context(info))
        session = aiohttp.ClientSession(connector=connector, headers=headers, timeout=self._timeout,
                                        trust_env=bool(info.trust_env))
        old, self._session, self._server = self._session, session, info.server.rstrip("/")
        self._server_hostname = info.tls_server_name
        self._generation += 1
        if old is not None:
            await old.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _session_now(self) -> tuple[aiohttp.ClientSession, int]:
        if self._session is None:
            async with self._lock:
                if self._session is None:
                    await self._connect()
        assert self._session is not None
        return self._session, self._generation

    @contextlib.asynccontextmanager
    async def _response(self, method: str, path: str, *, data: str | None = None,
                        headers: Mapping[str, str] | None = None,
                        timeout: aiohttp.ClientTimeout | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """The 2xx response to one call, logged in again once on 401 (one login for every call refused
        with the old token). Any other answer raises ApiError; so does a connection failure, also while
        the caller reads the body."""
        options: dict[str, Any] = {"data": data, "headers": headers}
        if timeout is not None:  # (aiohttp reads an explicit None as "no timeout at all")
            options["timeout"] = timeout
        for attempt in (1, 2):
            session, generation = await self._session_now()
            options.pop("server_hostname", None)  # the kubeconfig's tls-server-name, known once logged in
            if self._server_hostname:
                options["server_hostname"] = self._server_hostname
            try:
                async with session.request(method, self._server + path, **options) as response:
                    if response.status == 401 and attempt == 1:
                        async with self._lock:
                            if self._generation == generation:
                                await self._connect()
                        continue
                    if response.status >= 300:
                        message = await _error_message(response) if 400 <= response.status < 500 else ""
                        raise ApiError(response.status, response.reason or "", message)
                    yield response
                    return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise ApiError(0, f"unreachable ({type(exc).__name__})") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = JSON,
                      accept: str = "", parse: bool = True) -> dict[str, Any]:
        """One call; raises ApiError for any non-2xx answer. Logs in again once on 401.

        With `parse` False the answer is read (the connection goes back to the pool) but not decoded, and {}
        is returned: for writes whose answer nobody reads (a status patch returns the whole object)."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type} if data is not None else {}
        if accept:
            headers["Accept"] = accept
        async with self._response(method, path, data=data, headers=headers) as response:
            raw = await response.read()
        return dict(json.loads(raw)) if raw and parse else {}

    async def stream(self, path: str, *, read_timeout: float, accept: str = "") -> AsyncIterator[dict[str, Any]]:
        """A watch: the JSON objects of a newline-delimited stream, until the server ends it.

        ``read_timeout`` bounds the silence between two chunks (the server sends bookmarks), not the
        stream's length. Raises ApiError as ``request`` does; logs in again once on 401.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total, sock_read=read_timeout)
        async with self._response("GET", path, headers={"Accept": accept} if accept else None,
                                  timeout=timeout) as response:
            pending = b""
            async for chunk in response.content.iter_any():
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.strip():
                        yield dict(json.loads(line))
            if pending.strip():
                yield dict(json.loads(pending))
