"""A throwaway CA and the certificates and keys the stack needs, made with ``cryptography``.

Kept across ``down``/``up`` (only regenerated when missing or within a week of expiry), so a
kubeconfig written once stays valid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
RENEW_WITHIN = dt.timedelta(days=7)
APISERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 10.244.0.1: VSO_NODE_HOST_IP, where pods reach the apiserver inside the node's network namespace
# (devstack/netns.py); 10.96.0.1: the `kubernetes` Service.
APISERVER_IPS = ("127.0.0.1", "10.96.0.1", "10.244.0.1")
NODE_NAME = "vso-node"


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    controller_manager: CertPair
    vault: CertPair  # the stack's Vault (OpenBao or HashiCorp Vault) serving over TLS
    sa_key: Path
    sa_pub: Path
    scheduler: CertPair
    kubelet: CertPair  # the node's client identity (Node authorizer)
    kube_proxy: CertPair
    kubelet_client: CertPair  # kube-apiserver -> kubelet (logs, exec)


def ensure_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertPair(directory / "ca.crt", directory / "ca.key")
    fresh_ca = not _valid(ca.cert)
    if fresh_ca:
        _write_ca(ca)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)

    def leaf(name: str, subject: x509.Name, server: bool) -> CertPair:
        pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
        if fresh_ca or not _valid(pair.cert) or (server and not _has_ip_sans(pair.cert, APISERVER_IPS)):
            _write_leaf(pair, subject, ca_cert, ca_key, server=server)
        return pair

    pki = Pki(
        ca=ca,
        apiserver=leaf("apiserver", _name("kube-apiserver"), server=True),
        admin=leaf("admin", _name("vso-admin", "system:masters"), server=False),
        controller_manager=leaf("kube-controller-manager", _name("system:kube-controller-manager"), False),
        vault=leaf("vault", _name("vault"), server=True),
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        scheduler=leaf("kube-scheduler", _name("system:kube-scheduler"), False),
        kubelet=leaf("kubelet", _name(f"system:node:{NODE_NAME}", "system:nodes"), False),
        kube_proxy=leaf("kube-proxy", _name("system:kube-proxy"), False),
        kubelet_client=leaf(
            "apiserver-kubelet-client", _name("kube-apiserver-kubelet-client", "system:masters"), False
        ),
    )
    if not (pki.sa_key.is_file() and pki.sa_pub.is_file()):
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(pki.sa_key, key)
        pki.sa_pub.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return pki


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _valid(cert_path: Path) -> bool:
    if not cert_path.is_file() or not cert_path.with_suffix(".key").is_file():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_WITHIN


def _has_ip_sans(cert_path: Path, ips: tuple[str, ...]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(ips) <= present


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _write_ca(pair: CertPair) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name("vault-sts-operator dev CA")
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pair.key, key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_leaf(
    pair: CertPair,
    subject: x509.Name,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in APISERVER_DNS]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in APISERVER_IPS]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(pair.key, key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
