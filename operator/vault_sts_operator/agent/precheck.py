"""The cheap checks made before any upstream call: the Host header and the pod token's shape. Pure.

Neither is a security decision of its own. The Host check refuses requests not addressed to the agent's link
address (a DNS-rebinding page or a proxy forwarding to the node), as the EKS agent does. The token is parsed
UNVERIFIED: its `exp` and `aud` are read only to refuse junk, expired tokens and tokens of another audience
without bothering the operator (a request forged through a vulnerable app, the SSRF case, carries no token at
all); the operator verifies every token with a TokenReview.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from vault_sts_operator.domain.pod_identity import claims_problem, unverified_claims

MAX_TOKEN_BYTES = 16 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class TokenRefused(Exception):  # a refusal, not a programming error
    """The pod token fails the pre-check; the message is for the pod's owner and never holds the token."""


@dataclass(frozen=True, repr=False)
class PodToken:
    """A pod token that passed the pre-check. `repr` hides the token, so no log line or traceback shows it."""

    value: str
    digest: str  # sha256 hex of the token: the only form kept beyond the request
    expires_at: float  # the unverified `exp`

    def __repr__(self) -> str:
        return f"PodToken(digest={self.digest[:12]}..., expires_at={self.expires_at})"

    @property
    def short(self) -> str:
        """The digest's prefix, for log lines."""
        return self.digest[:12]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(authorization: str | None, *, audience: str, now: float) -> PodToken:
    """The pod token from the request's Authorization header (the SDKs send the token file's content as is;
    a `Bearer ` prefix is accepted too), or TokenRefused saying why, naming the expected audience."""
    hint = (f"the Authorization header must hold a projected ServiceAccount token of audience {audience} "
            "(AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)")
    if not authorization:
        raise TokenRefused(f"no Authorization header: {hint}")
    if len(authorization.encode()) > MAX_TOKEN_BYTES:
        raise TokenRefused(f"the Authorization header exceeds {MAX_TOKEN_BYTES} bytes: {hint}")
    token = authorization.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
        raise TokenRefused(f"the token is not a JWT: {hint}")
    try:
        claims = unverified_claims(token)
    except ValueError as exc:
        raise TokenRefused(f"the token's {exc}: {hint}") from None
    problem = claims_problem(claims, audience=audience, now=now)
    if problem is not None:
        raise TokenRefused(f"the token {problem}: {hint}")
    return PodToken(value=token, digest=token_digest(token), expires_at=float(claims["exp"]))


def host_of(header: str | None) -> str:
    """The host part of a Host header, port and IPv6 brackets stripped, in a canonical form."""
    text = (header or "").strip().lower()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return canonical_host(text)


def canonical_host(host: str) -> str:
    """An IP address in its one written form (so `FD00:EC2:0::23` is `fd00:ec2::23`); a name lowercased."""
    host = host.strip().strip("[]").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Is the request addressed to one of the agent's listen addresses? (`allowed` holds canonical hosts)"""
    return host_of(header) in allowed
