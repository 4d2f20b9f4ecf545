"""The operator's STS and Vault clients honour HTTP(S)_PROXY and NO_PROXY, as the chart README says.

A small forwarding proxy on 127.0.0.1 records what passes through it. A child process builds the
operator's own clients (StsGateway's boto3 client, a VaultSession) with the proxy variables set and
makes a call that spends nothing (GetCallerIdentity, a KV read); then again with NO_PROXY naming the
targets. The STS emulator is plain http (HTTP_PROXY applies, absolute-form requests); the stack's Vault
is https (HTTPS_PROXY applies: requests tunnels with CONNECT, and TLS runs end to end through it).
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devstack.seed import seed_identity

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, sys
from vault_sts_operator.api.specs import TokenAuth, SecretKeyRef, VaultConnection
from vault_sts_operator.clients.sts import StsGateway
from vault_sts_operator.clients.vault import VaultSession
from vault_sts_operator.clients.vault_auth import TokenLogin

sts = StsGateway()._client("us-east-1", os.environ["T_STS"], os.environ["T_KEY"], os.environ["T_SECRET"], None,
                           carries_code=False)
print("caller", sts.get_caller_identity()["Arn"])
connection = VaultConnection(address=os.environ["T_VAULT"], auth=TokenAuth(SecretKeyRef("x", "y", "z")))
session = VaultSession(connection, TokenLogin(token=lambda: os.environ["T_TOKEN"]),
                       verify=os.environ.get("T_VAULT_CA") or True)
key = session.read_access_key("secret", os.environ["T_PATH"], "access_key_id", "secret_access_key")
print("kv", key.access_key_id)
"""


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Forward)
        self.seen: list[str] = []


class Forward(BaseHTTPRequestHandler):
    """Forwards absolute-form requests (what clients send to an HTTP proxy) and records the target."""

    server: Recorder

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.server.seen.append(f"{self.command} {target.netloc}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = do_PUT = _forward

    def do_CONNECT(self) -> None:
        """A tunnel for https targets: the proxy sees the host, never the bytes TLS protects."""
        self.server.seen.append(f"CONNECT {self.path}")
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        conns = [self.connection, upstream]
        try:
            while True:
                readable, _, broken = select.select(conns, [], conns, 10)
                if broken or not readable:
                    return
                for conn in readable:
                    data = conn.recv(65536)
                    if not data:
                        return
                    (upstream if conn is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()


@pytest.fixture
def proxy() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_child(stack, seeded, key: dict[str, str], **proxy_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(proxy_env, PYTHONPATH=str(ROOT / "operator"), T_STS=stack.sts_endpoint, T_VAULT=stack.vault_addr,
               T_TOKEN=stack.vault_token, T_PATH=seeded.kv_path, T_KEY=key["AccessKeyId"],
               T_SECRET=key["SecretAccessKey"], T_VAULT_CA=str(stack.vault_ca or ""))
    return subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_sts_and_vault_clients_go_through_the_proxy_unless_no_proxy(stack, proxy, unique):
    seeded = seed_identity(stack, f"proxy-{unique}")
    key = stack.emulator().create_access_key(seeded.name)
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    sts_host, vault_host = urlsplit(stack.sts_endpoint).netloc, urlsplit(stack.vault_addr).netloc

    through = run_child(stack, seeded, key, HTTP_PROXY=url, HTTPS_PROXY=url)
    assert through.returncode == 0, through.stderr
    assert f"caller {seeded.user_arn}" in through.stdout and f"kv {seeded.access_key_id}" in through.stdout
    assert f"POST {sts_host}" in proxy.seen, proxy.seen
    vault_verb = "CONNECT" if stack.vault_addr.startswith("https://") else "GET"
    assert any(seen.endswith(vault_host) and seen.startswith(vault_verb) for seen in proxy.seen), proxy.seen

    proxy.seen.clear()
    bypass = run_child(stack, seeded, key, HTTP_PROXY=url, HTTPS_PROXY=url, NO_PROXY="127.0.0.1,localhost")
    assert bypass.returncode == 0, bypass.stderr
    assert f"kv {seeded.access_key_id}" in bypass.stdout
    assert proxy.seen == []
