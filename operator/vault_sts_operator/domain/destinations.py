"""Where the operator may connect: the platform's allow-list of Vault addresses and STS endpoints.

An MFAIdentity names a Vault address and an STS endpoint; the operator sends its own credentials (a
ServiceAccount JWT, a Vault token, an AppRole SecretID) to the first and TOTP codes and SigV4-signed
requests to the second. Whoever may write an MFAIdentity must not be able to point either at a host
of their choosing, so both are checked against lists the platform sets in the chart
(`allowedDestinations`), before any connection is opened (docs/security.md).

A destination is compared as scheme, host and port (the port made explicit: `https://vault` and
`https://vault:443` are the same). Entries of the allow-list are such URLs; in a host, `*` stands for
exactly one DNS label (`https://sts.*.amazonaws.com` matches `https://sts.eu-west-1.amazonaws.com`,
not `https://sts.evil.example.amazonaws.com`). No path, query, fragment or user info is accepted: a
Vault address or STS endpoint never needs one, and `https://vault.example@evil.example` must not read
as vault.example.

Pure: no I/O, nothing else of the package.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# AWS's public STS endpoints, in every partition: global, regional, FIPS and dual-stack
# (https://docs.aws.amazon.com/general/latest/gr/sts.html). What the chart allows by default.
AWS_STS_ENDPOINTS: tuple[str, ...] = (
    "https://sts.amazonaws.com",  # global (aws partition)
    "https://sts.*.amazonaws.com",  # regional: aws, aws-us-gov
    "https://sts-fips.*.amazonaws.com",
    "https://sts.*.api.aws",  # dual-stack
    "https://sts-fips.*.api.aws",
    "https://sts.*.amazonaws.com.cn",  # aws-cn
    "https://sts.*.c2s.ic.gov",  # aws-iso
    "https://sts.*.sc2s.sgov.gov",  # aws-iso-b
    "https://sts.*.cloud.adc-e.uk",  # aws-iso-e
    "https://sts.*.csp.hci.ic.gov",  # aws-iso-f
)

_DEFAULT_PORTS = {"https": 443, "http": 80}
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# AWS region names: what botocore accepts too (it refuses anything that is not a hostname label).
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,3}-[0-9]{1,2}")


class DestinationError(ValueError):
    """The URL is not a destination the operator can compare (its message says why)."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # lowercase, no trailing dot; an IPv6 address without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_destination(url: str, *, pattern: bool = False) -> Destination:
    """`url` as scheme, host and port; DestinationError when it is not a plain http(s) origin.

    With `pattern`, host labels may be `*` (one label each)."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise DestinationError(f"{url!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise DestinationError(f"{url!r} is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DestinationError(f"{url!r} carries user info (user@host): name the host alone")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise DestinationError(f"{url!r} has a path, query or fragment: name scheme, host and port only")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise DestinationError(f"{url!r} names no host")
    if not _valid_host(host, pattern=pattern):
        raise DestinationError(f"{url!r} has an invalid host {host!r}")
    return Destination(scheme=scheme, host=host, port=port if port is not None else _DEFAULT_PORTS[scheme])


def _valid_host(host: str, *, pattern: bool) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.split(".")
    return all((pattern and label == "*") or _LABEL.fullmatch(label) is not None for label in labels)


def _host_matches(host: str, pattern: str) -> bool:
    got, want = host.split("."), pattern.split(".")
    if len(got) != len(want):
        return False
    return all((w == "*" and _LABEL.fullmatch(g) is not None) or w == g for g, w in zip(got, want, strict=True))


def matches(destination: Destination, pattern: Destination) -> bool:
    return (destination.scheme == pattern.scheme and destination.port == pattern.port
            and _host_matches(destination.host, pattern.host))


def allowed(url: str, patterns: Iterable[str]) -> bool:
    """Is `url` one of `patterns`? (DestinationError when `url` itself is malformed.)"""
    destination = parse_destination(url)
    return any(matches(destination, parse_destination(p, pattern=True)) for p in patterns)


def same_destination(a: str, b: str) -> bool:
    """Do two URLs name the same scheme, host and port? (False when either is malformed.)"""
    try:
        return parse_destination(a) == parse_destination(b)
    except DestinationError:
        return False


def pattern_problems(patterns: Iterable[str]) -> list[str]:
    """What is wrong with an allow-list itself (checked at start: the operator refuses to run with it)."""
    problems = []
    for p in patterns:
        try:
            parse_destination(p, pattern=True)
        except DestinationError as exc:
            problems.append(str(exc))
    return problems


def valid_region(region: str) -> bool:
    return _REGION.fullmatch(region) is not None


def public_sts_endpoint(region: str) -> str:
    """AWS's regional STS endpoint for `region`: where boto3 sends an identity that names no endpoint.

    Used only to check it against the allow-list (a platform that lists no public endpoint refuses such
    an identity); the call itself goes where botocore resolves the region, which is this host."""
    suffix = {"cn": "amazonaws.com.cn"}.get(region.split("-", 1)[0], "amazonaws.com")
    if region.startswith("us-isob-"):
        suffix = "sc2s.sgov.gov"
    elif region.startswith("us-isof-"):
        suffix = "csp.hci.ic.gov"
    elif region.startswith("us-iso-"):
        suffix = "c2s.ic.gov"
    elif region.startswith("eu-isoe-"):
        suffix = "cloud.adc-e.uk"
    return f"https://sts.{region}.{suffix}"


def vault_audience(address: str) -> str:
    """The audience of the ServiceAccount token the operator presents to the Vault at `address`.

    Each Vault gets a token of its own audience, so a token one Vault captured is refused by every other
    Vault whose role requires its own audience (docs/security.md)."""
    return str(parse_destination(address))
