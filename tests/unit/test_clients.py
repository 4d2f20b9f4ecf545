"""Client plumbing with real parts: TLS material, temporary files, a real HTTP server for Vault."""

from __future__ import annotations

import datetime
import http.server
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vault_sts_operator.api.specs import SecretKeyRef, TokenAuth, VaultConnection
from vault_sts_operator.clients import vault as vault_client
from vault_sts_operator.clients.kube_config import ConnectionInfo
from vault_sts_operator.clients.kube_rest import ssl_context
from vault_sts_operator.clients.vault import VaultSession, ca_file_for
from vault_sts_operator.clients.vault_auth import Login


def self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def temp_files(prefix: str) -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")}


def test_kube_tls_from_kubeconfig_data_leaves_no_temp_file() -> None:
    cert, key = self_signed()
    before = temp_files("vso-kube-")
    for _ in range(5):  # every (re)connect builds a context
        info = ConnectionInfo(server="https://127.0.0.1:1", ca_data=cert, certificate_data=cert, private_key_data=key)
        context = ssl_context(info)
        assert context is not False and not isinstance(context, bool)
        assert context.get_ca_certs()  # the CA from the kubeconfig, loaded from memory
    assert temp_files("vso-kube-") == before
    assert ssl_context(ConnectionInfo(server="https://x", insecure=True)) is False


def test_one_ca_file_per_bundle() -> None:
    cert, _ = self_signed()
    other, _ = self_signed()
    first = ca_file_for(cert.decode())
    assert ca_file_for(cert.decode()) == first  # a reconnect with the same CA writes nothing new
    assert ca_file_for(other.decode()) != first
    assert Path(first).read_bytes() == cert
    assert oct(os.stat(first).st_mode & 0o777) == "0o600"


class _Vault(http.server.BaseHTTPRequestHandler):
    """A tiny Vault: GET /v1/secret/data/<path> answers; some paths are denied; every login is counted."""

    protocol_version = "HTTP/1.1"
    logins = 0
    requests = 0
    drop_next = False

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, code: int, body: dict[str, object], *, close: bool = False) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        if close:
            self.close_connection = True

    def do_GET(self) -> None:
        type(self).requests += 1
        if type(self).drop_next:  # a proxy that closed the idle keep-alive connection: no answer at all
            type(self).drop_next = False
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if "denied" in self.path:
            self._send(403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]})
            return
        self._send(200, {"data": {"data": {"id": "AKIA", "secret": "s"}, "metadata": {"version": 1}}})


class CountingLogin:
    method = "token"

    def login(self, client: object) -> Login:
        _Vault.logins += 1
        return Login(token=f"t{_Vault.logins}", ttl_seconds=0, renewable=False)


@pytest.fixture
def vault_server() -> Iterator[str]:
    _Vault.logins = _Vault.requests = 0
    _Vault.drop_next = False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Vault)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def session(address: str) -> VaultSession:
    connection = VaultConnection(address=address, auth=TokenAuth(token_ref=SecretKeyRef("t", "ns", "k")))
    return VaultSession(connection, CountingLogin())  # type: ignore[arg-type]


def test_a_policy_denied_path_does_not_log_in_each_pass(vault_server: str) -> None:
    vault = session(vault_server)
    for _ in range(5):
        with pytest.raises(vault_client.VaultError) as caught:
            vault.read_access_key("secret", "denied", "id", "secret")
        assert caught.value.reason == "VaultPermissionDenied"
    # One login, one re-login after the first refusal (the token might have been revoked), then none.
    assert _Vault.logins == 2
    assert vault.read_access_key("secret", "ok", "id", "secret").access_key_id == "AKIA"
    assert _Vault.logins == 2


def test_threads_refused_together_log_in_once(vault_server: str) -> None:
    vault = session(vault_server)
    vault.read_access_key("secret", "ok", "id", "secret")
    assert _Vault.logins == 1
    generation = vault._generation
    barrier = threading.Barrier(8)

    def refused() -> None:
        barrier.wait()
        vault._relogin_after_refusal(generation)  # what each thread does after a 403 on the same token

    threads = [threading.Thread(target=refused) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _Vault.logins == 2


def test_an_idempotent_read_survives_a_dropped_keep_alive_connection(vault_server: str) -> None:
    vault = session(vault_server)
    vault.read_access_key("secret", "ok", "id", "secret")
    _Vault.drop_next = True
    assert vault.read_access_key("secret", "ok", "id", "secret").access_key_id == "AKIA"
    assert _Vault.requests == 3  # the dropped one and its single retry
