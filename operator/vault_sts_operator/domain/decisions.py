"""Does this credential need issuing now, and if not, when? A pure decision.

The Secret's annotations are the record of what was issued (the status may lag it
after a crash between the two writes), so the decision is made from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.timefmt import format_time, parse_time
from vault_sts_operator.domain.renewal import renewal_time


@dataclass(frozen=True)
class IssuedRecord:
    """What the operator wrote on a Secret it issued (annotations, no secret values)."""

    issued_at: datetime
    expiration: datetime
    spec_hash: str
    rotate_request: str
    access_key_id: str
    assumed_role_arn: str

    def annotations(self) -> dict[str, str]:
        return {
            c.SECRET_ISSUED_AT_ANNOTATION: format_time(self.issued_at),
            c.SECRET_EXPIRATION_ANNOTATION: format_time(self.expiration),
            c.SECRET_SPEC_HASH_ANNOTATION: self.spec_hash,
            c.SECRET_ROTATE_REQUEST_ANNOTATION: self.rotate_request,
            c.SECRET_ACCESS_KEY_ID_ANNOTATION: self.access_key_id,
            c.SECRET_ROLE_ANNOTATION: self.assumed_role_arn,
        }


def read_issued_record(annotations: Mapping[str, str] | None) -> IssuedRecord | None:
    """The record on a Secret, or None when it has none (or a damaged one)."""
    ann = annotations or {}
    try:
        return IssuedRecord(
            issued_at=parse_time(ann[c.SECRET_ISSUED_AT_ANNOTATION]),
            expiration=parse_time(ann[c.SECRET_EXPIRATION_ANNOTATION]),
            spec_hash=ann.get(c.SECRET_SPEC_HASH_ANNOTATION, ""),
            rotate_request=ann.get(c.SECRET_ROTATE_REQUEST_ANNOTATION, ""),
            access_key_id=ann.get(c.SECRET_ACCESS_KEY_ID_ANNOTATION, ""),
            assumed_role_arn=ann.get(c.SECRET_ROLE_ANNOTATION, ""),
        )
    except (KeyError, ValueError):
        return None


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
    renew_at = renewal_time(
        issued_at=record.issued_at, expiration=record.expiration, renew_before=renew_before,
        jitter_key=f"{jitter_key}/{format_time(record.expiration)}",
    )
    if now >= renew_at:
        return Decision(Trigger.RENEWAL_DUE, renew_at)
    return Decision(None, renew_at, deferred_until)
