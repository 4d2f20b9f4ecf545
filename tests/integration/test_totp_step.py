"""TOTP step bookkeeping against HashiCorp Vault's response shape, with a 2 s period on the real OpenBao.

HashiCorp Vault's `totp/code` says nothing of when it generated the code; OpenBao adds `generated`.
A small proxy in front of the stack's OpenBao removes that field (HashiCorp Vault's shape) and adds
latency on both sides of the request, so some reads straddle a period boundary. The client must
record every code it returns against the step it really belongs to (checked against the seed), and
drop the reads whose step it cannot tell.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pyotp
import pytest
import requests

import devstack.seed
from devstack.env import StackEnv
from devstack.seed import seed_identity
from vault_sts_operator import metrics
from vault_sts_operator.api.specs import SecretKeyRef, TokenAuth, VaultConnection
from vault_sts_operator.clients.vault import VaultSession
from vault_sts_operator.clients.vault_auth import TokenLogin

PERIOD = 2
LATENCY = 0.2  # on each side of the request: 0.4 s of a 2 s period, so about one read in five straddles


class HashiCorpShapedProxy:
    def __init__(self, upstream: str, ca_file: str | None) -> None:
        proxy = self
        self.forwarded = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(LATENCY)
                upstream_response = requests.get(upstream + self.path, timeout=10, verify=ca_file or True, headers={
                    k: v for k, v in self.headers.items() if k.lower().startswith("x-vault")})
                proxy.forwarded += 1
                body = upstream_response.content
                if "/code/" in self.path and upstream_response.ok:
                    payload = upstream_response.json()
                    for field in ("generated", "expire_time"):
                        payload.get("data", {}).pop(field, None)
                    body = json.dumps(payload).encode()
                time.sleep(LATENCY)
                self.send_response(upstream_response.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(stack: StackEnv) -> Iterator[HashiCorpShapedProxy]:
    running = HashiCorpShapedProxy(stack.vault_addr, str(stack.vault_ca) if stack.vault_ca else None)
    yield running
    running.close()


def test_codes_read_across_a_period_boundary_are_dropped_not_misfiled(stack: StackEnv, vault: Any,
                                                                       proxy: HashiCorpShapedProxy,
                                                                       unique: str) -> None:
    captured: list[str] = []
    original = devstack.seed.new_totp_seed

    def capture() -> str:
        captured.append(original())
        return captured[-1]

    with mock.patch.object(devstack.seed, "new_totp_seed", capture):
        seeded = seed_identity(stack, f"step-{unique}", totp_period=PERIOD, roles=[])
    totp = pyotp.TOTP(captured[0], interval=PERIOD)
    raw = vault.read(f"{seeded.totp_mount}/code/{seeded.totp_key}")["data"]
    # OpenBao's shape has it, HashiCorp Vault's not; either way the proxy serves HashiCorp Vault's
    assert ("generated" in raw) == (stack.vault_flavor == "openbao")
    root = vault.token
    session = VaultSession(
        VaultConnection(address=proxy.address, auth=TokenAuth(SecretKeyRef("unused", "unused", "unused"))),
        TokenLogin(token=lambda: root))
    dropped = metrics.VAULT_CALLS.labels(operation="totp_code", outcome="ambiguous_step")
    dropped_before = dropped._value.get()

    codes = []
    deadline = time.monotonic() + 8 * PERIOD
    while time.monotonic() < deadline:
        codes.append(session.totp_code(seeded.totp_mount, seeded.totp_key, PERIOD))
    misfiled = [(c.step, c.code) for c in codes if totp.at(c.step * PERIOD) != c.code]
    assert len(codes) >= 15
    assert misfiled == [], misfiled
    assert all(c.period == PERIOD for c in codes)
    assert dropped._value.get() - dropped_before >= 1, "no read straddled a boundary: the test proved nothing"
