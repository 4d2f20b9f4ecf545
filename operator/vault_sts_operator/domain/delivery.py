"""How a credential reaches its pods: a Secret (the default) or Pod Identity (no Secret; a node agent serves the
container-credentials protocol to the pods of the ServiceAccounts the credential names). Pure.

docs/design/pod-identity.md is the design; the timing constants below come from the SDKs' refresh windows it cites
(botocore refreshes from 15 minutes before expiry, the Go v2 and JS v3 SDKs from 5): the operator renews at least
20 minutes before expiry and the agent refreshes its copy below 18 minutes, so an SDK is never handed credentials
already inside its own refresh window.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SECRET = "Secret"
POD_IDENTITY = "PodIdentity"
DELIVERY_MODES = (SECRET, POD_IDENTITY)
# What an identity allows when it lists no limits.deliveryModes.
DEFAULT_DELIVERY_MODES = DELIVERY_MODES

MAX_SERVICE_ACCOUNTS = 32
POD_IDENTITY_MIN_DURATION_SECONDS = 1800
POD_IDENTITY_MIN_RENEW_BEFORE = timedelta(minutes=20)
AGENT_REFRESH_BELOW = timedelta(minutes=18)

# A ServiceAccount name is a DNS-1123 subdomain (apimachinery's IsDNS1123Subdomain).
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class DeliverySpec:
    mode: str = SECRET
    service_accounts: tuple[str, ...] = ()

    @property
    def writes_secret(self) -> bool:
        return self.mode == SECRET

    @property
    def renew_default_at_least(self) -> timedelta | None:
        """Without renewBefore, how long before expiry at least the operator renews (the design's
        max(20m, lifetime/3)); None: a third of the lifetime, as in mode Secret."""
        return POD_IDENTITY_MIN_RENEW_BEFORE if self.mode == POD_IDENTITY else None


def delivery_problems(delivery: DeliverySpec, *, duration_seconds: int, renew_before: timedelta | None,
                      has_target: bool, has_restart_targets: bool) -> list[str]:
    """What is wrong with a credential's spec.delivery, as the CRD's rules say it (for objects created before the
    CRD had them, or with validation off)."""
    if delivery.mode not in DELIVERY_MODES:
        return [f"delivery.mode {delivery.mode!r} is not {' or '.join(DELIVERY_MODES)}"]
    problems = []
    accounts = delivery.service_accounts
    if delivery.mode == SECRET:
        if accounts:
            problems.append("delivery.serviceAccounts is only for mode PodIdentity")
        return problems
    if not accounts:
        problems.append("delivery.serviceAccounts must name at least one ServiceAccount of this namespace")
    if len(accounts) > MAX_SERVICE_ACCOUNTS:
        problems.append(f"delivery.serviceAccounts holds {len(accounts)} names; at most {MAX_SERVICE_ACCOUNTS}")
    if len(set(accounts)) != len(accounts):
        problems.append("delivery.serviceAccounts names a ServiceAccount twice")
    bad = [name for name in accounts if len(name) > 253 or not _SUBDOMAIN.fullmatch(name)]
    if bad:
        problems.append(f"delivery.serviceAccounts: {len(bad)} name(s) are not ServiceAccount names "
                        "(DNS-1123 subdomains of at most 253 characters)")
    if has_target:
        problems.append("target is only for mode Secret (PodIdentity writes no Secret)")
    if has_restart_targets:
        problems.append("rolloutRestartTargets is only for mode Secret (the SDKs refresh by themselves)")
    if duration_seconds < POD_IDENTITY_MIN_DURATION_SECONDS:
        problems.append(f"durationSeconds must be at least {POD_IDENTITY_MIN_DURATION_SECONDS} for mode PodIdentity "
                        "(the SDKs refresh up to 15 minutes before expiry; the operator renews 20 minutes before)")
    if renew_before is not None and renew_before < POD_IDENTITY_MIN_RENEW_BEFORE:
        problems.append("renewBefore must be at least 20m for mode PodIdentity")
    return problems


def mode_refusal(mode: str, allowed: Iterable[str], identity: str) -> str | None:
    """Why the identity does not let its tenants use `mode` (None: it does)."""
    allowed = tuple(allowed)
    if mode in allowed:
        return None
    return (f"spec.delivery.mode: {mode} is not allowed by MFAIdentity {identity!r} "
            f"(limits.deliveryModes: {', '.join(allowed) or 'none'})")


def mode_problems(modes: Iterable[str]) -> list[str]:
    """What is wrong with an identity's limits.deliveryModes."""
    return [f"limits.deliveryModes: {mode!r} is not {' or '.join(DELIVERY_MODES)}"
            for mode in modes if mode not in DELIVERY_MODES]


@dataclass(frozen=True)
class Claim:
    """A credential of one namespace naming ServiceAccounts for Pod Identity."""

    name: str
    created: str  # metadata.creationTimestamp (RFC 3339, so it sorts as text)
    service_accounts: tuple[str, ...]


def serving(claims: Iterable[Claim]) -> dict[str, str]:
    """ServiceAccount -> the credential that serves it: when two credentials of a namespace name the same
    ServiceAccount, the older one (creationTimestamp, then name) serves; the other is refused."""
    served: dict[str, str] = {}
    for claim in sorted(claims, key=lambda c: (c.created, c.name)):
        for account in claim.service_accounts:
            served.setdefault(account, claim.name)
    return served


def conflicts(claim: Claim, served: Mapping[str, str]) -> dict[str, str]:
    """The claim's ServiceAccounts that another credential serves: account -> that credential."""
    return {account: served[account] for account in claim.service_accounts
            if served.get(account, claim.name) != claim.name}


def fingerprint(access_key_id: str) -> str:
    """What status and Events show instead of the AccessKeyId in mode PodIdentity: it changes at every rotation
    and can be matched against the operator's log, but puts no key id into etcd."""
    return hashlib.sha256(access_key_id.encode()).hexdigest()[:16]


def container_credentials(*, access_key_id: str, secret_access_key: str, session_token: str,
                          expiration: datetime) -> dict[str, str]:
    """The answer of the container-credentials protocol, as every AWS SDK reads it."""
    return {"AccessKeyId": access_key_id, "SecretAccessKey": secret_access_key, "Token": session_token,
            "Expiration": expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def agent_refresh_due(expiration: datetime, now: datetime) -> bool:
    """Does a node agent refresh its cached copy before answering? (below 18 minutes to expiry)"""
    return expiration - now < AGENT_REFRESH_BELOW
