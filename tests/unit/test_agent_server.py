"""The agent's server (agent/server.py, agent/upstream.py) on 127.0.0.1, against a small real HTTPS "operator"
started here (aiohttp, a CA and a certificate for vso-pod-identity.vso.svc made with `cryptography`) that records
what it is sent: the pod token is forwarded with the agent's own token, the second request is answered from the
cache, 401/403 pass through (and are repeated for 5 s without asking), an unreachable or slow operator gives 503
within the foreground budget, the certificate name is verified, below the margin one refresh runs while the copy is
served, probes and metrics answer; and no token, key or secret appears in any log line."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vault_sts_operator.agent.cache import Cache
from vault_sts_operator.agent.server import Address, Agent, Running, Settings
from vault_sts_operator.agent.upstream import Upstream

AUD = "vaultsts.io/pod-identity"
SERVER_NAME = "vso-pod-identity.vso.svc"
AGENT_TOKEN = "agent-token-eyJhbGciOiJSUzI1NiJ9.first"
AGENT_TOKEN_2 = "agent-token-eyJhbGciOiJSUzI1NiJ9.second"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
SESSION = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"
ROOT = Path(__file__).resolve().parents[2]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pod_token(name: str, *, aud: str = AUD, life: float = 3600) -> str:
    claims = {"aud": [aud], "exp": int(time.time() + life), "sub": f"system:serviceaccount:team:{name}"}
    header = _b64(json.dumps({"alg": "RS256"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(name.encode() * 8)}"


def expiration(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def grant(key: str = "AKIAEXAMPLEKEY000001", *, life: float = 3600, credential: str = "team/app") -> dict[str, Any]:
    return {"AccessKeyId": key, "SecretAccessKey": SECRET, "Token": SESSION, "Expiration": expiration(life),
            "AccountId": "123456789012", "credential": credential, "revalidateAfter": 300}


@dataclass
class FakeOperator:
    """The operator's endpoint as services/pod_identity_server.py answers: 200 with the SDK fields plus credential
    and revalidateAfter, or {code, message}."""

    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # by pod token
    default: tuple[int, dict[str, Any]] = (200, {})
    queue: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # answered first, in order
    delay: float = 0.0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((request.headers.get("Authorization", ""), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        status, answer = (self.queue.pop(0) if self.queue else
                          self.answers.get(body.get("token"), self.default))
        return web.json_response(answer or grant(), status=status,
                                 headers={"Retry-After": "1"} if status == 503 else None)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and the operator's serving certificate for SERVER_NAME, signed by it."""
    directory = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(SERVER_NAME)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": str(directory / "ca.crt"), "crt": str(directory / "tls.crt"), "key": str(directory / "tls.key")}
    Path(paths["ca"]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(paths["crt"]).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(paths["key"]).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Harness:
    operator: FakeOperator
    agent: Agent
    running: Running
    client: aiohttp.ClientSession
    token_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.ports()[0]}/v1/credentials"

    @property
    def probe(self) -> str:
        return f"http://127.0.0.1:{self.running.probe_ports()[0]}"

    async def get(self, token: str | None, *, host: str | None = None, method: str = "GET",
                  url: str | None = None) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        headers = {} if token is None else {"Authorization": token}
        if host is not None:
            headers["Host"] = host
        async with self.client.request(method, url or self.url, headers=headers) as response:
            return response.status, await response.json(content_type=None), dict(response.headers)


Scenario = Callable[[Harness], Awaitable[None]]


def _run(tmp_path: Path, pki: dict[str, str], scenario: Scenario, *, operator: FakeOperator | None = None,
         operator_down: bool = False, server_name: str = SERVER_NAME, cache: Cache | None = None) -> FakeOperator:
    fake = operator or FakeOperator()
    token_file = tmp_path / "agent-token"
    token_file.write_text(AGENT_TOKEN + "\n")

    async def main() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki["crt"], pki["key"])
        app = web.Application()
        app.router.add_post("/v1/pod-identity/credentials", fake.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = _free_port()
        if not operator_down:
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        upstream = Upstream(url=f"https://127.0.0.1:{port}", ca_file=pki["ca"], server_name=server_name,
                            token_file=str(token_file))
        upstream.load_ca()
        agent = Agent(Settings(listen=(Address("127.0.0.1", 0),), probe=Address("127.0.0.1", 0)), upstream,
                      cache=cache)
        running = Running(agent)
        await running.start()
        try:
            async with aiohttp.ClientSession() as client:
                await scenario(Harness(fake, agent, running, client, token_file))
        finally:
            await running.stop()
            await upstream.close()
            await runner.cleanup()

    asyncio.run(main())
    return fake


SDK_KEYS = {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "AccountId"}


def _no_secret_logged(caplog: pytest.LogCaptureFixture, *tokens: str) -> None:
    text = caplog.text + "".join(str(record.args) for record in caplog.records)
    for secret in (*tokens, AGENT_TOKEN, AGENT_TOKEN_2, SECRET, SESSION, "AKIAEXAMPLEKEY"):
        assert secret not in text


def test_the_pod_token_is_forwarded_with_the_agents_token_and_the_answer_cached(
        tmp_path: Path, pki: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    one, two = pod_token("app-1"), pod_token("app-2")

    async def scenario(h: Harness) -> None:
        status, body, headers = await h.get(one)
        assert status == 200 and set(body) == SDK_KEYS and headers["Content-Type"].startswith("application/json")
        assert (body["AccessKeyId"], body["SecretAccessKey"], body["Token"], body["AccountId"]) == (
            "AKIAEXAMPLEKEY000001", SECRET, SESSION, "123456789012")
        assert body["Expiration"].endswith("Z") and len(body["Expiration"]) == 20
        assert h.operator.calls == [(f"Bearer {AGENT_TOKEN}", {"token": one})]
        status, again, _ = await h.get(one)
        assert (status, again) == (200, body) and len(h.operator.calls) == 1  # from the cache
        h.token_file.write_text(AGENT_TOKEN_2)  # the kubelet rotated the agent's token: read at the next call
        status, other, _ = await h.get(f"Bearer {two}")
        assert (status, other) == (200, body)
        assert h.operator.calls[1] == (f"Bearer {AGENT_TOKEN_2}", {"token": two})
        assert h.agent.cache.sizes() == {"tokens": 2, "credentials": 1, "refusals": 0}

    _run(tmp_path, pki, scenario)
    _no_secret_logged(caplog, one, two)


def test_refusals_pass_through_with_their_code_and_are_repeated_for_a_while_without_asking(
        tmp_path: Path, pki: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    expired, unbound = pod_token("gone"), pod_token("stranger")
    fake = FakeOperator(answers={
        expired: (401, {"code": "PodTokenInvalid", "message": "the pod's token is not valid (expired or deleted)"}),
        unbound: (403, {"code": "NotBound", "message": "ServiceAccount team/stranger is bound to no credential"})})

    async def scenario(h: Harness) -> None:
        for _ in range(3):
            assert (await h.get(expired))[:2] == (401, {
                "code": "PodTokenInvalid", "message": "the pod's token is not valid (expired or deleted)"})
            assert (await h.get(unbound))[:2] == (403, {
                "code": "NotBound", "message": "ServiceAccount team/stranger is bound to no credential"})
        assert len(h.operator.calls) == 2

    _run(tmp_path, pki, scenario, operator=fake)
    _no_secret_logged(caplog, expired, unbound)


def test_wrong_host_bad_tokens_paths_and_methods_are_refused_without_asking_the_operator(
        tmp_path: Path, pki: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good, other_audience = pod_token("app"), pod_token("app", aud="vault")

    async def scenario(h: Harness) -> None:
        status, body, _ = await h.get(good, host="10.244.0.1")
        assert (status, body["code"]) == (403, "InvalidHost")
        status, body, _ = await h.get(good, host="169.254.170.23:80")  # not what this agent listens on
        assert (status, body["code"]) == (403, "InvalidHost")
        oversized = good + "A" * 20_000  # above 16 KiB, below the header limit the agent gives aiohttp
        for token in (None, "not-a-jwt", other_audience, pod_token("app", life=-5), oversized):
            status, body, _ = await h.get(token)
            assert (status, body["code"]) == (401, "PodTokenInvalid") and AUD in body["message"]
        assert (await h.get(good, url=h.url.replace("/v1/credentials", "/latest/meta-data")))[0] == 404
        assert (await h.get(good, method="POST"))[0] == 405
        assert h.operator.calls == []

    _run(tmp_path, pki, scenario)
    _no_secret_logged(caplog, good, other_audience)


def test_an_unreachable_operator_is_503_unavailable_within_the_budget(
        tmp_path: Path, pki: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = pod_token("app")

    async def scenario(h: Harness) -> None:
        started = time.monotonic()
        status, body, headers = await h.get(token)
        assert (status, body["code"], headers["Retry-After"]) == (503, "Unavailable", "1")
        assert time.monotonic() - started < 1.0

    _run(tmp_path, pki, scenario, operator_down=True)
    _no_secret_logged(caplog, token)


def test_a_certificate_for_another_name_is_not_trusted(tmp_path: Path, pki: dict[str, str]) -> None:
    async def scenario(h: Harness) -> None:
        status, body, _ = await h.get(pod_token("app"))
        assert (status, body["code"]) == (503, "Unavailable")
        await asyncio.sleep(0.3)
        assert h.operator.calls == []  # the handshake failed: the tokens were never sent

    _run(tmp_path, pki, scenario, server_name="someone-else.vso.svc")


def test_operator_503_is_unavailable_to_the_sdk(tmp_path: Path, pki: dict[str, str]) -> None:
    async def scenario(h: Harness) -> None:
        status, body, headers = await h.get(pod_token("app"))
        assert (status, body["code"], headers["Retry-After"]) == (503, "Unavailable", "1")

    _run(tmp_path, pki, scenario, operator=FakeOperator(default=(503, {"code": "NotLeader", "message": "standby"})))


def test_a_slow_operator_answers_503_in_time_and_the_retry_finds_the_result(
        tmp_path: Path, pki: dict[str, str]) -> None:
    token = pod_token("app")

    async def scenario(h: Harness) -> None:
        h.operator.delay = 0.9
        started = time.monotonic()
        answers = await asyncio.gather(*(h.get(token) for _ in range(3)))  # joined on one fetch
        assert [a[0] for a in answers] == [503] * 3 and time.monotonic() - started < 0.95
        await asyncio.sleep(0.5)  # as an SDK's retry, a second later
        status, body, _ = await h.get(token)
        assert status == 200 and body["AccessKeyId"] == "AKIAEXAMPLEKEY000001"
        assert len(h.operator.calls) == 1

    _run(tmp_path, pki, scenario)


def test_below_the_margin_the_copy_is_served_while_one_refresh_runs(tmp_path: Path, pki: dict[str, str]) -> None:
    token, other = pod_token("app-1"), pod_token("app-2")
    fake = FakeOperator(queue=[(200, grant("AKIAEXAMPLEKEY000OLD", life=1000)),
                               (200, grant("AKIAEXAMPLEKEY000OLD", life=1000))])

    async def scenario(h: Harness) -> None:
        assert (await h.get(token))[1]["AccessKeyId"] == "AKIAEXAMPLEKEY000OLD"
        assert (await h.get(other))[1]["AccessKeyId"] == "AKIAEXAMPLEKEY000OLD"
        h.operator.delay = 0.3
        answers = await asyncio.gather(*(h.get(t) for t in (token, other) * 5))
        assert {(a[0], a[1]["AccessKeyId"]) for a in answers} == {(200, "AKIAEXAMPLEKEY000OLD")}
        await asyncio.sleep(0.5)
        assert len(h.operator.calls) == 3  # two first fetches, one refresh for the credential
        for t in (token, other):
            assert (await h.get(t))[1]["AccessKeyId"] == "AKIAEXAMPLEKEY000001"
        assert len(h.operator.calls) == 3

    _run(tmp_path, pki, scenario, operator=fake)


def test_an_operator_outage_after_validation_serves_the_copy(tmp_path: Path, pki: dict[str, str]) -> None:
    token = pod_token("app")

    async def scenario(h: Harness) -> None:
        assert (await h.get(token))[0] == 200
        await asyncio.sleep(0.25)  # revalidation due
        h.operator.default = (503, {"code": "NotLeader", "message": "failover"})
        status, body, _ = await h.get(token)
        assert status == 200 and body["AccessKeyId"] == "AKIAEXAMPLEKEY000001"
        assert len(h.operator.calls) >= 2  # it did ask
        while h.agent._fetches:  # the background fetch retries the 503 for up to 5 s
            await asyncio.sleep(0.05)
        # a refusal on revalidation is final
        h.operator.default = (403, {"code": "NotBound", "message": "unbound"})
        await asyncio.sleep(0.25)
        assert (await h.get(token))[:2] == (403, {"code": "NotBound", "message": "unbound"})

    _run(tmp_path, pki, scenario, cache=Cache(revalidate_seconds=0.2))


def test_probes_and_metrics(tmp_path: Path, pki: dict[str, str]) -> None:
    async def scenario(h: Harness) -> None:
        await h.get(pod_token("app"))
        await h.get(None)
        for path, status in (("/healthz", 200), ("/readyz", 200)):
            async with h.client.get(h.probe + path) as response:
                assert response.status == status
        async with h.client.get(h.probe + "/metrics") as response:
            text = await response.text()
        assert 'vault_sts_agent_requests_total{code="200"} 1.0' in text
        assert 'vault_sts_agent_requests_total{code="401"} 1.0' in text
        assert 'vault_sts_agent_cache_entries{kind="tokens"} 1.0' in text
        assert "vault_sts_agent_upstream_seconds_count 1.0" in text
        assert "process_resident_memory_bytes" in text

    _run(tmp_path, pki, scenario)


def _wait_ready(url: str, process: subprocess.Popen[bytes], deadline: float = 10.0) -> None:
    import urllib.request

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the agent did not become ready")


def test_agent_serve_runs_from_the_cli_and_stops_on_sigterm(tmp_path: Path, pki: dict[str, str]) -> None:
    """`python -m vault_sts_operator agent serve`: ready without an operator, 503 to the SDK, exit 0 on SIGTERM."""
    listen, probe, dead = _free_port(), _free_port(), _free_port()
    token_file = tmp_path / "token"
    token_file.write_text(AGENT_TOKEN)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "VSO_TEST_SERVICE_HOST": "127.0.0.1",
           "VSO_TEST_SERVICE_PORT": str(dead)}
    process = subprocess.Popen(
        [sys.executable, "-m", "vault_sts_operator", "agent", "serve", "--listen", f"127.0.0.1:{listen}",
         "--probe-listen", f"127.0.0.1:{probe}", "--operator-service-env", "vso-test", "--server-name", SERVER_NAME,
         "--ca-file", pki["ca"], "--token-file", str(token_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{probe}/readyz", process)
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{listen}/v1/credentials",
                                         headers={"Authorization": pod_token("app")})
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=3)
        assert failed.value.code == 503 and json.loads(failed.value.read())["code"] == "Unavailable"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    text = output.decode()
    assert process.returncode == 0, text
    assert f"agent listening on 127.0.0.1:{listen}" in text and "stopping" in text
    assert AGENT_TOKEN not in text


def test_sigterm_lets_a_request_in_flight_finish_and_refuses_new_connections(
        tmp_path: Path, pki: dict[str, str]) -> None:
    async def scenario(h: Harness) -> None:
        h.operator.delay = 0.3
        url = h.url
        in_flight = asyncio.get_running_loop().create_task(h.get(pod_token("app")))
        await asyncio.sleep(0.1)
        await h.running.stop()  # what SIGTERM runs
        status, body, _ = await in_flight
        assert status == 200 and body["AccessKeyId"] == "AKIAEXAMPLEKEY000001"
        assert not h.running.ready
        with pytest.raises(aiohttp.ClientConnectionError):
            await h.get(pod_token("app"), url=url)

    _run(tmp_path, pki, scenario)
