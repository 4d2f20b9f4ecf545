"""When to rotate, and how long to back off: small pure functions with explicit inputs.

Jitter is derived from a key (the credential's namespace/name and expiry), so a
restarted operator computes the same renewal time it wrote before, while a
thousand credentials issued in the same second still spread out.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

MIN_LIFETIME_BEFORE_RENEWAL = timedelta(seconds=10)
JITTER_FRACTION = 0.1
MAX_JITTER = timedelta(minutes=5)


def unit_jitter(key: str) -> float:
    """A number in [0, 1) fixed by `key`."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renewal_time(
    *,
    issued_at: datetime,
    expiration: datetime,
    renew_before: timedelta | None,
    jitter_key: str,
    default_at_least: timedelta | None = None,
) -> datetime:
    """`expiration - renewBefore`, moved earlier by up to 10 % of the wait until then (at most 5 min).

    renewBefore defaults to a third of the lifetime. The jitter is a share of the time between
    issue and renewal, so credentials issued together spread out without any of them renewing
    much earlier than asked. The result never falls before `issued_at + 10s`, so a renewBefore
    longer than the lifetime cannot make a hot loop.
    """
    lifetime = expiration - issued_at
    before = renew_before if renew_before is not None else lifetime / 3
    if renew_before is None and default_at_least is not None:
        # Mode PodIdentity: renew at least this long before expiry (the agents' and SDKs' windows), yet keep a
        # third of the lifetime in use (sessions shorter than asked, e.g. a role's cap, must not renew at once).
        before = max(before, min(default_at_least, lifetime * 2 / 3))
    wait = max(lifetime - before, timedelta(0))
    jitter = min(wait * JITTER_FRACTION, MAX_JITTER) * unit_jitter(jitter_key)
    earliest = issued_at + min(MIN_LIFETIME_BEFORE_RENEWAL, lifetime / 2)
    return max(expiration - before - jitter, earliest)


def renew_before_refusal(renew_before: timedelta | None, lifetime: timedelta) -> str | None:
    """Why `renewBefore` cannot work with this lifetime, or None.

    A renewBefore at or above the lifetime would make every issue due at once: a reissue (an STS
    call, a TOTP code in `mfa: direct`, a rollout restart) every pass. The CRD refuses it at apply
    time; this catches credentials stored before that rule.
    """
    if renew_before is not None and renew_before >= lifetime:
        return (f"spec.renewBefore ({renew_before.total_seconds():.0f}s) must be shorter than the credential's "
                f"lifetime ({lifetime.total_seconds():.0f}s, spec.durationSeconds)")
    return None


def backoff_delay(attempt: int, *, base: float, cap: float, jitter_key: str) -> float:
    """Exponential backoff (base * 2^(attempt-1), capped) with up to +25 % jitter."""
    raw = min(cap, base * 2 ** max(attempt - 1, 0))
    return float(raw * (1 + 0.25 * unit_jitter(f"{jitter_key}/{attempt}")))


# Transient failures back off from 5 s to 5 min; configuration errors are retried every 10 min
# (and at once when the CR or its identity changes).
TRANSIENT_BACKOFF = (5.0, 300.0)
CONFIG_RETRY_SECONDS = 600.0


def retry_delay(failures: int, *, transient: bool, jitter_key: str) -> float:
    """How long to wait after `failures` consecutive failed passes (the only backoff computation)."""
    if not transient:
        return CONFIG_RETRY_SECONDS
    return backoff_delay(failures, base=TRANSIENT_BACKOFF[0], cap=TRANSIENT_BACKOFF[1], jitter_key=jitter_key)
