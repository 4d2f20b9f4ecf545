"""The /metrics server (services/metrics_server.py) on loopback, against a small fake of the API server's
TokenReview and SubjectAccessReview endpoints reached through the operator's own client (KubeRest, KubeGateway):
401 without or with a bad token, 403 without `get /metrics`, 200 with it; decisions cached under the token's
digest; 503 (not cached) when the API server fails; plain HTTP with the switch; a certificate from files, reloaded;
no token in any log line. The real API server's answers: tests/e2e/test_metrics_auth.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import gzip
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, Counter

from vault_sts_operator.cli import _parser, config_from_args
from vault_sts_operator.clients.kube import KubeGateway, ReviewedUser
from vault_sts_operator.clients.kube_config import ConnectionInfo
from vault_sts_operator.clients.kube_rest import KubeRest
from vault_sts_operator.domain.errors import KubernetesError
from vault_sts_operator.services import metrics_server as ms
from vault_sts_operator.services.metrics_server import AccessReviews, Decision, MetricsServer, build_metrics_server

READER = "reader-token-0123456789abcdef"  # a user bound to get /metrics
STRANGER = "stranger-token-0123456789abcdef"  # authenticated, not allowed
BOGUS = "bogus-token-0123456789abcdef"  # not a token the API server knows
OPERATOR = "operator-own-token-0123456789"  # what the operator presents to the API server
TOKENS = (READER, STRANGER, BOGUS, OPERATOR)


class FakeApi:
    """TokenReview and SubjectAccessReview as kube-apiserver answers them (authorization.k8s.io/v1)."""

    def __init__(self) -> None:
        self.users = {READER: {"username": "system:serviceaccount:monitoring:prometheus", "uid": "u-1",
                               "groups": ["system:serviceaccounts", "system:authenticated"],
                               "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]}},
                      STRANGER: {"username": "system:serviceaccount:team-a:app", "groups": ["system:authenticated"]}}
        self.allowed = {"system:serviceaccount:monitoring:prometheus"}
        self.reviews: list[dict[str, Any]] = []
        self.access: list[dict[str, Any]] = []
        self.status = 0  # non-zero: every review answers with this status
        self.delay = 0.0

    async def _tokenreviews(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {OPERATOR}":
            return web.Response(status=401)
        body = await request.json()
        self.reviews.append(body)
        await asyncio.sleep(self.delay)
        if self.status:
            return web.Response(status=self.status, reason="Internal Server Error")
        user = self.users.get(body["spec"]["token"])
        status = {"authenticated": True, "user": user} if user else {"error": "invalid bearer token"}
        return web.json_response({**body, "status": status}, status=201)

    async def _subjectaccessreviews(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.access.append(body)
        spec = body["spec"]
        allowed = (spec["user"] in self.allowed
                   and spec["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"})
        return web.json_response({**body, "status": {"allowed": allowed}}, status=201)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._tokenreviews)
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._subjectaccessreviews)
        return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("vault_sts_operator_rotations", "Credentials issued", ["namespace"], registry=registry
            ).labels(namespace="team-a").inc()
    Counter("vault_sts_operator_other", "Another family", registry=registry).inc()
    return registry


Scenario = Callable[[MetricsServer, FakeApi, aiohttp.ClientSession, str], Awaitable[Any]]


def _run(scenario: Scenario, *, secure: bool = True, cert_dir: str = "",
         reviews: Callable[[KubeGateway], AccessReviews] | None = None) -> Any:
    async def main() -> Any:
        fake = FakeApi()
        api, api_port = await _serve(fake.app())
        rest = KubeRest(lambda: ConnectionInfo(server=f"http://127.0.0.1:{api_port}", token=OPERATOR))
        kube = KubeGateway(rest)
        server = build_metrics_server(port=0, host="127.0.0.1", secure=secure, cert_dir=cert_dir, reviewer=kube,
                                      registry=_registry())
        if reviews is not None:
            server._reviews = reviews(kube)
        await server.start()
        url = f"{server.scheme}://127.0.0.1:{server.bound_port}/metrics"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client:
                return await scenario(server, fake, client, url)
        finally:
            await server.stop()
            await rest.close()
            await api.cleanup()

    return asyncio.run(main())


async def _get(client: aiohttp.ClientSession, url: str, token: str = "", **headers: str) -> tuple[int, str]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with client.get(url, headers=headers) as response:
        return response.status, await response.text()


def test_no_token_or_a_bad_one_is_401_an_unbound_user_403_and_a_reader_gets_the_metrics(caplog) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        assert url.startswith("https://")
        answers = {name: await _get(client, url, token) for name, token in
                   (("none", ""), ("bogus", BOGUS), ("stranger", STRANGER), ("reader", READER))}
        async with client.get(url, headers={"Authorization": f"Basic {READER}"}) as response:
            answers["basic"] = (response.status, await response.text())
        return answers, fake

    answers, fake = _run(scenario)
    assert {k: v[0] for k, v in answers.items()} == {"none": 401, "bogus": 401, "stranger": 403, "reader": 200,
                                                      "basic": 401}
    assert 'vault_sts_operator_rotations_total{namespace="team-a"} 1.0' in answers["reader"][1]
    assert not any("vault_sts_operator" in text for status, text in answers.values() if status != 200)
    # no token, and a scheme other than Bearer, never reach the API server; each token is reviewed once
    assert [r["spec"]["token"] for r in fake.reviews] == [BOGUS, STRANGER, READER]
    assert all(r["apiVersion"] == "authentication.k8s.io/v1" and r["kind"] == "TokenReview" for r in fake.reviews)
    # the SubjectAccessReview names the reviewed user (uid, groups, extra too) and the non-resource URL
    assert [a["spec"] for a in fake.access] == [
        {"user": "system:serviceaccount:team-a:app", "groups": ["system:authenticated"],
         "nonResourceAttributes": {"path": "/metrics", "verb": "get"}},
        {"user": "system:serviceaccount:monitoring:prometheus", "uid": "u-1",
         "groups": ["system:serviceaccounts", "system:authenticated"],
         "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]},
         "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}]
    assert "system:serviceaccount:team-a:app may not get /metrics (403)" in caplog.text
    for token in TOKENS:
        assert token not in caplog.text


def test_decisions_are_cached_under_the_tokens_digest_allowed_longer_than_refused() -> None:
    now = [1000.0]

    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        reviews = server._reviews
        assert reviews is not None
        statuses = [(await _get(client, url, t))[0] for t in (READER, READER, STRANGER, STRANGER, BOGUS, BOGUS)]
        assert len(fake.reviews) == 3 and statuses == [200, 200, 403, 403, 401, 401]
        keys = set(reviews._cache)
        assert keys == {hashlib.sha256(t.encode()).hexdigest() for t in (READER, STRANGER, BOGUS)}
        assert not any(t in repr(reviews._cache) for t in TOKENS)
        now[0] += 31  # refusals expire after 30 s, the allowed token stays
        assert [(await _get(client, url, t))[0] for t in (READER, STRANGER, BOGUS)] == [200, 403, 401]
        assert [r["spec"]["token"] for r in fake.reviews[3:]] == [STRANGER, BOGUS]
        fake.allowed.clear()  # the ClusterRoleBinding removed: the reader is refused once its entry expires
        now[0] += 90
        assert (await _get(client, url, READER))[0] == 403
        return True

    assert _run(scenario, reviews=lambda kube: AccessReviews(kube, clock=lambda: now[0]))


def test_the_cache_is_bounded_and_concurrent_scrapes_share_one_review() -> None:
    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        fake.delay = 0.2
        statuses = await asyncio.gather(*(_get(client, url, READER) for _ in range(20)))
        assert [s for s, _ in statuses] == [200] * 20 and len(fake.reviews) == 1
        fake.delay = 0
        for n in range(5):
            assert (await _get(client, url, f"made-up-{n}"))[0] == 401
        reviews = server._reviews
        assert reviews is not None and len(reviews._cache) == 3  # the newest three; the reader's went first
        assert AccessReviews.key(READER) not in reviews._cache
        return True

    assert _run(scenario, reviews=lambda kube: AccessReviews(kube, max_entries=3))


def test_an_api_server_that_fails_is_503_and_not_cached(caplog) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        fake.status = 500
        failed = await _get(client, url, READER)
        fake.status = 0
        return failed, await _get(client, url, READER), len(fake.reviews)

    failed, after, reviews = _run(scenario)
    assert failed[0] == 503 and "vault_sts_operator" not in failed[1]
    assert after[0] == 200 and reviews == 2
    assert "reviewing a bearer token (TokenReview): HTTP 500" in caplog.text
    for token in TOKENS:
        assert token not in caplog.text


def test_a_review_that_takes_too_long_is_503() -> None:
    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        fake.delay = 1.0
        return (await _get(client, url, READER))[0]

    assert _run(scenario, reviews=lambda kube: AccessReviews(kube, timeout=0.2)) == 503


def test_the_switch_serves_plain_http_without_authentication() -> None:
    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        return url, await _get(client, url), fake.reviews

    url, (status, text), reviews = _run(scenario, secure=False)
    assert url.startswith("http://") and status == 200 and "vault_sts_operator_rotations_total" in text
    assert reviews == []


def test_formats_names_and_compression_as_prometheus_client_serves_them() -> None:
    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        auth = {"Authorization": f"Bearer {READER}"}
        async with client.get(url, headers={**auth, "Accept": "application/openmetrics-text; version=1.0.0"}
                              ) as response:
            openmetrics = response.headers["Content-Type"], await response.text()
        async with client.get(url + "?name[]=vault_sts_operator_other_total", headers=auth) as response:
            only = await response.text()
        async with client.get(url, headers={**auth, "Accept-Encoding": "gzip"}, auto_decompress=False) as response:
            packed = response.headers.get("Content-Encoding"), await response.read()
        async with client.post(url, headers=auth) as response:
            posted = response.status
        async with client.get(url.replace("/metrics", "/"), headers=auth) as response:
            elsewhere = response.status
        return openmetrics, only, packed, posted, elsewhere

    (ctype, text), only, (encoding, body), posted, elsewhere = _run(scenario)
    assert ctype.startswith("application/openmetrics-text") and text.rstrip().endswith("# EOF")
    assert "vault_sts_operator_other_total" in only and "rotations" not in only
    assert encoding == "gzip" and b"vault_sts_operator_rotations_total" in gzip.decompress(body)
    assert (posted, elsewhere) == (405, 404)


def _certificate(directory: Path, common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    (directory / "tls.crt").write_bytes(pem)
    return pem


def _served_pem(port: int) -> bytes:
    return ssl.get_server_certificate(("127.0.0.1", port)).encode()


def _same_cert(a: bytes, b: bytes) -> bool:
    return x509.load_pem_x509_certificate(a) == x509.load_pem_x509_certificate(b)


def test_a_certificate_from_files_is_served_and_reloaded_when_they_change(tmp_path) -> None:
    first = _certificate(tmp_path, "first")

    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        served = [await asyncio.to_thread(_served_pem, server.bound_port)]
        assert server._certificates is not None and not server._certificates.reload_if_changed()
        second = _certificate(tmp_path, "second")
        assert server._certificates.reload_if_changed()
        served.append(await asyncio.to_thread(_served_pem, server.bound_port))
        # verified against the file's certificate, as a ServiceMonitor's tlsConfig.ca does
        context = ssl.create_default_context(cadata=second.decode())
        async with client.get(url.replace("127.0.0.1", "localhost"), ssl=context,
                              headers={"Authorization": f"Bearer {READER}"}) as response:
            return served, second, response.status

    (before, after), second, status = _run(scenario, cert_dir=str(tmp_path))
    assert _same_cert(before, first) and _same_cert(after, second) and status == 200


def test_a_missing_certificate_fails_the_start(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        build_metrics_server(port=0, secure=True, cert_dir=str(tmp_path), reviewer=FakeReviewer())


def test_the_self_signed_certificate_names_the_host_and_loopback() -> None:
    async def scenario(server: MetricsServer, fake: FakeApi, client: aiohttp.ClientSession, url: str) -> Any:
        return await asyncio.to_thread(_served_pem, server.bound_port)

    cert = x509.load_pem_x509_certificate(_run(scenario))
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in alt.get_values_for_type(x509.DNSName)
    assert {str(a) for a in alt.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=300)


class FakeReviewer:
    async def review_token(self, token: str, audiences: Any = ()) -> ReviewedUser | None:
        return None

    async def may_access(self, user: ReviewedUser, *, path: str, verb: str) -> bool:
        return False


def test_decide_answers_without_a_server() -> None:
    async def main() -> list[Decision]:
        reviews = AccessReviews(FakeReviewer())
        return [await reviews.decide("x"), await reviews.decide("x")]

    assert asyncio.run(main()) == [Decision.UNAUTHENTICATED] * 2


@pytest.mark.parametrize(("header", "token"), [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", ""),
                                               ("", ""), ("Bearer", "")])
def test_bearer_token(header: str, token: str) -> None:
    assert ms.bearer_token(header) == token


@pytest.mark.parametrize(("argv", "secure"), [([], True), (["--metrics-secure=false"], False),
                                              (["--metrics-secure", "false"], False), (["--metrics-secure"], True),
                                              (["--metrics-secure=0"], False), (["--metrics-secure=true"], True)])
def test_the_switch_reads_as_go_flags_do(argv: list[str], secure: bool) -> None:
    config = config_from_args(_parser().parse_args(["run", *argv, "--metrics-cert-dir", "/certs"]))
    assert config.metrics_secure is secure and config.metrics_cert_dir == "/certs"


def test_the_switch_refuses_other_words(capsys) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--metrics-secure=maybe"])
    assert "not a boolean" in capsys.readouterr().err


class SlowFailingReviewer(FakeReviewer):
    async def review_token(self, token: str, audiences: Any = ()) -> ReviewedUser | None:
        await asyncio.sleep(0.1)
        raise KubernetesError("reviewing a bearer token (TokenReview): HTTP 0 unreachable (ClientConnectorError)")


def test_a_review_that_fails_after_every_scrape_gave_up_is_not_reported_again(caplog) -> None:
    async def main() -> None:
        reviews = AccessReviews(SlowFailingReviewer(), timeout=0.02)
        with pytest.raises(KubernetesError, match="in time"):
            await reviews.decide(READER)
        await asyncio.sleep(0.2)  # the shielded review fails with nobody waiting
        assert not reviews._inflight and not reviews._cache

    asyncio.run(main())
    gc.collect()
    assert "never retrieved" not in caplog.text


def test_the_operator_never_loads_cryptography_for_its_certificate() -> None:
    """A child interpreter makes the certificate: `cryptography` costs about 10 MB resident once imported."""
    import subprocess
    import sys

    code = ("import sys; from vault_sts_operator.services.metrics_server import self_signed_context; "
            "self_signed_context(); print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_certificate_that_cannot_be_made_fails_the_start(monkeypatch) -> None:
    monkeypatch.setattr(ms.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match="self-signed certificate"):
        ms.self_signed_context()
