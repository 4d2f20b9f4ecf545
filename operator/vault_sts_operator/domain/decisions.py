"""Does this credential need issuing now, and if not, when? A pure decision.

The Secret's annotations are the record of what was issued (the status may lag it
after a crash between the two writes), so the decision is made from them
(outputs/issued_record.py reads and writes that record).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from vault_sts_operator.domain.renewal import renewal_time
from vault_sts_operator.domain.timefmt import format_time


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    """What the operator wrote on a Secret it issued (annotations, no secret values)."""

    issued_at: datetime
    expiration: datetime
    spec_hash: str
    rotate_request: str
    access_key_id: str
    assumed_role_arn: str


def record_renewal_time(record: IssuedRecord, *, renew_before: timedelta | None, jitter_key: str,
                        default_at_least: timedelta | None = None) -> datetime:
    """When the credentials of `record` are renewed (what status.renewalTime shows); `jitter_key` is
    the credential's namespace/name, extended with the expiry so each issue gets its own jitter."""
    return renewal_time(issued_at=record.issued_at, expiration=record.expiration, renew_before=renew_before,
                        jitter_key=f"{jitter_key}/{format_time(record.expiration)}", default_at_least=default_at_least)


class Trigger(Enum):
    """Why a credential is issued (shown in Events)."""

    MISSING = "no Secret issued yet"
    SPEC_CHANGED = "the spec changed"
    ROTATION_REQUESTED = "rotation was requested by annotation"
    RENEWAL_DUE = "renewal time reached"
    EXPIRED = "the credentials expired"


@dataclass(frozen=True)
class Decision:
    trigger: Trigger | None  # None: nothing to do until `renew_at`
    renew_at: datetime | None = None
    # A rotate request waiting for the minimum interval: the pass to honour it is due then.
    deferred_until: datetime | None = None

    @property
    def issue_now(self) -> bool:
        return self.trigger is not None


def decide(
    *,
    now: datetime,
    record: IssuedRecord | None,
    spec_hash: str,
    rotate_request: str,
    renew_before: timedelta | None,
    jitter_key: str,
    rotate_min_interval: timedelta = timedelta(0),
    default_at_least: timedelta | None = None,
) -> Decision:
    """What to do now. A rotate request is honoured once the Secret is `rotate_min_interval` old.

    The rotate annotation is the tenant's: without a minimum interval, changing it every second
    would reissue every second (an STS call each, a TOTP code each in `mfa: direct`).
    """
    if record is None:
        return Decision(Trigger.MISSING)
    if record.spec_hash != spec_hash:
        return Decision(Trigger.SPEC_CHANGED)
    if now >= record.expiration:
        return Decision(Trigger.EXPIRED)
    deferred_until = None
    if rotate_request and rotate_request != record.rotate_request:
        allowed_at = record.issued_at + rotate_min_interval
        if now >= allowed_at:
            return Decision(Trigger.ROTATION_REQUESTED)
        deferred_until = allowed_at
    renew_at = record_renewal_time(record, renew_before=renew_before, jitter_key=jitter_key,
                                   default_at_least=default_at_least)
    if now >= renew_at:
        return Decision(Trigger.RENEWAL_DUE, renew_at)
    return Decision(None, renew_at, deferred_until)
