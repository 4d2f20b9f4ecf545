"""A self-signed server certificate for /metrics, written as ``tls.crt`` and ``tls.key`` into a directory.

Run as its own short-lived process (``python -m vault_sts_operator.services.self_signed_cert DIR [HOST...]``,
see ``metrics_server.self_signed_context``): `cryptography` costs about 10 MB resident once imported, for a
certificate made once; the operator never imports it. The key is ECDSA P-256, written with mode 0600."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

CERT_NAME, KEY_NAME = "tls.crt", "tls.key"


def write_self_signed(directory: str, hosts: Sequence[str] = (), *, days: int = 365) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = list(dict.fromkeys([*hosts, socket.gethostname(), "localhost"]))
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names if n]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vault-sts-operator-metrics")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    Path(directory, CERT_NAME).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(Path(directory, KEY_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


if __name__ == "__main__":
    write_self_signed(sys.argv[1], sys.argv[2:])
