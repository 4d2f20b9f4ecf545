"""The agent's cheap checks before any upstream call (agent/precheck.py; its rate is domain/rate.py's `allow`): the
unverified JWT shape, expiry and audience; the Host header against the listen addresses; the request rate; listen
addresses."""

from __future__ import annotations

import base64
import json

import pytest

from vault_sts_operator.agent.precheck import (
    MAX_TOKEN_BYTES,
    TokenRefused,
    check_token,
    host_allowed,
    host_of,
    token_digest,
)
from vault_sts_operator.agent.server import Address
from vault_sts_operator.domain.rate import Rate as RequestRate

AUD = "vaultsts.io/pod-identity"
NOW = 1_800_000_000.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: object, *, header: object = None) -> str:
    head = _b64(json.dumps(header or {"alg": "RS256", "kid": "k"}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}.{_b64(b'not-a-real-signature')}"


def test_a_token_of_the_audience_that_has_not_expired_passes_and_is_kept_as_its_digest() -> None:
    token = jwt({"aud": ["other", AUD], "exp": NOW + 600, "sub": "system:serviceaccount:a:b"})
    checked = check_token(token, audience=AUD, now=NOW)
    assert checked.value == token and checked.expires_at == NOW + 600
    assert checked.digest == token_digest(token) and len(checked.digest) == 64
    assert token not in repr(checked) and token not in str(checked)
    # a single-string aud and a Bearer prefix are accepted too
    single = jwt({"aud": AUD, "exp": NOW + 1})
    assert check_token(f"Bearer {single}", audience=AUD, now=NOW).value == single


@pytest.mark.parametrize(("authorization", "why"), [
    (None, "no Authorization header"),
    ("", "no Authorization header"),
    ("x" * (MAX_TOKEN_BYTES + 1), "exceeds 16384 bytes"),
    ("opaque-token", "not a JWT"),
    ("a.b", "not a JWT"),
    ("a.b.c.d", "not a JWT"),
    ("a.b+/.c", "not a JWT"),
    ("aaaa.bm90IGpzb24.cccc", "payload is not JSON"),
    (jwt([1, 2]), "not a JSON object"),
    (jwt({"aud": AUD}), "no expiry"),
    (jwt({"aud": AUD, "exp": "soon"}), "no expiry"),
    (jwt({"aud": AUD, "exp": True}), "no expiry"),
    (jwt({"aud": AUD, "exp": NOW}), "has expired"),
    (jwt({"aud": AUD, "exp": NOW - 10}), "has expired"),
    (jwt({"aud": "vault", "exp": NOW + 600}), f"not for audience {AUD}"),
    (jwt({"aud": ["vault", "sts"], "exp": NOW + 600}), f"not for audience {AUD}"),
    (jwt({"exp": NOW + 600}), f"not for audience {AUD}"),
])
def test_junk_expired_and_other_audiences_are_refused_with_a_message_naming_the_audience(
        authorization: str | None, why: str) -> None:
    with pytest.raises(TokenRefused) as refused:
        check_token(authorization, audience=AUD, now=NOW)
    message = str(refused.value)
    assert why in message and AUD in message
    if authorization:
        assert authorization not in message


def test_a_token_just_under_the_size_limit_passes() -> None:
    token = jwt({"aud": AUD, "exp": NOW + 60, "pad": "p" * (MAX_TOKEN_BYTES * 3 // 4 - 200)})
    assert len(token) <= MAX_TOKEN_BYTES
    assert check_token(token, audience=AUD, now=NOW).value == token


@pytest.mark.parametrize(("header", "host"), [
    ("169.254.170.23", "169.254.170.23"),
    ("169.254.170.23:80", "169.254.170.23"),
    ("[fd00:ec2::23]:80", "fd00:ec2::23"),
    ("[FD00:EC2:0::23]", "fd00:ec2::23"),
    ("fd00:ec2::23", "fd00:ec2::23"),
    ("LocalHost:8080", "localhost"),
    ("", ""),
    (None, ""),
])
def test_the_host_header_loses_its_port_and_brackets(header: str | None, host: str) -> None:
    assert host_of(header) == host


def test_only_the_listen_hosts_are_allowed() -> None:
    allowed = frozenset({"169.254.170.23", "fd00:ec2::23"})
    assert host_allowed("169.254.170.23", allowed)
    assert host_allowed("169.254.170.23:80", allowed)
    assert host_allowed("[fd00:ec2::23]:80", allowed)
    for other in ("10.244.0.1", "10.244.0.1:80", "169.254.169.254", "evil.example:80", "", None,
                  "169.254.170.23.nip.io", "[::1]:80"):
        assert not host_allowed(other, allowed), other


def test_the_rate_lets_a_burst_through_then_one_per_interval_and_refusals_book_nothing() -> None:
    rate = RequestRate(per_second=4, burst=3)  # one per 0.25 s (exact in binary)
    assert [rate.allow(0.0) for _ in range(4)] == [True, True, True, False]
    # a flood of refused requests does not push the next free slot further out
    assert not any(rate.allow(0.125) for _ in range(1000))
    assert rate.allow(0.25) and not rate.allow(0.25)
    assert rate.allow(10.0) and rate.allow(10.0) and rate.allow(10.0) and not rate.allow(10.0)
    with pytest.raises(ValueError, match="per_second"):
        RequestRate(0, 1)


@pytest.mark.parametrize(("text", "host", "port"), [
    ("169.254.170.23:80", "169.254.170.23", 80),
    ("[fd00:ec2::23]:80", "fd00:ec2::23", 80),
    ("127.0.0.1:0", "127.0.0.1", 0),
])
def test_listen_addresses(text: str, host: str, port: int) -> None:
    address = Address.parse(text)
    assert (address.host, address.port) == (host, port) and str(address) == text


@pytest.mark.parametrize("text", ["169.254.170.23", ":80", "fd00:ec2::23:80", "host:http", "1.2.3.4:70000"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|brackets"):
        Address.parse(text)
