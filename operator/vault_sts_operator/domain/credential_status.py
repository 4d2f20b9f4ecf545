"""What an AssumedRoleCredential's status says after a pass: pure functions, written by services/reconciler.py.

cert-manager's model: `Ready` says whether what the user consumes is good, issuing problems are reported apart.

- `Ready`: True while the Secret holds unexpired credentials issued for the current spec (reason Issued), even
  while a rotation fails; False when there is none (never issued, expired, or issued for another spec), with the
  failure's reason, or Issuing while the first issue is under way.
- `RotationFailing`: True while the latest attempt failed (its reason and tenant-safe message, and when the next
  attempt is due); False (Succeeded) after a success.
- kstatus' abnormal-true conditions (sigs.k8s.io/cli-utils pkg/kstatus), present only while True and removed
  otherwise (kstatus reads an absent one as False): `Reconciling` while work is in progress (the first issue, a
  retry after a transient failure), `Stalled` when progress needs the user's action (a failure that is not
  transient: its reason is one of reasons.USER_ACTION_REQUIRED).
- `failedAttempts` (consecutive failures since the last success), `lastFailureTime`, `nextRetryTime` (when the
  scheduler tries again; removed after a success).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.domain.timefmt import format_time, parse_time

# The status fields this module owns; None in `StatusReport.fields` removes one (a merge patch's null).
FAILED_ATTEMPTS = "failedAttempts"
LAST_FAILURE_TIME = "lastFailureTime"
NEXT_RETRY_TIME = "nextRetryTime"


@dataclass(frozen=True)
class ConditionValue:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class StatusReport:
    """Conditions to set, conditions to remove, and status fields (None: remove the field)."""

    conditions: tuple[ConditionValue, ...]
    removed: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """A failed pass, as the status reports it."""

    reason: str
    message: str  # tenant-safe (IssuingError.message)
    transient: bool  # retried with backoff (else: waits for the user, retried rarely)
    at: datetime
    retry_at: datetime | None  # when the scheduler runs the next pass (None: none is scheduled)


def previous_attempts(status: Mapping[str, Any]) -> int:
    """`failedAttempts` as the status holds it (0 when absent or not a count)."""
    value = status.get(FAILED_ATTEMPTS)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == reasons.READY:
            return cond
    return None


def valid_until(*, now: datetime, spec_hash: str, record: IssuedRecord | None, record_known: bool,
                status: Mapping[str, Any], generation: object) -> datetime | None:
    """Until when the Secret holds credentials issued for the current spec (None: it holds none).

    `record_known`: the pass read (or knew) the Secret, so `record` is its issue record, or None for no Secret;
    the record is then compared with the current spec. Otherwise (the pass failed or was refused before it
    reached the Secret) the status is trusted: a Ready=True condition observed at the current generation, and
    `status.expiration` not yet reached.
    """
    if record_known:
        if record is None or not spec_hash or record.spec_hash != spec_hash or now >= record.expiration:
            return None
        return record.expiration
    ready = _ready_condition(status)
    if ready is None or ready.get("status") != "True" or ready.get("observedGeneration") != generation \
            or generation is None:
        return None
    try:
        expiration = parse_time(str(status["expiration"]))
    except (KeyError, ValueError):
        return None
    return expiration if now < expiration else None


def issuing() -> StatusReport:
    """Before a credential's first issue: not Ready yet, work in progress."""
    message = "issuing the first credentials"
    return StatusReport(conditions=(
        ConditionValue(reasons.READY, False, reasons.ISSUING, message),
        ConditionValue(reasons.RECONCILING, True, reasons.ISSUING, message),
    ), removed=(reasons.STALLED,))


def succeeded(*, ready_message: str, now: datetime) -> StatusReport:
    """A pass that left valid credentials for the current spec in the Secret (issued now or before)."""
    return StatusReport(
        conditions=(
            ConditionValue(reasons.READY, True, reasons.ISSUED, ready_message),
            ConditionValue(reasons.ROTATION_FAILING, False, reasons.SUCCEEDED,
                           f"the last attempt succeeded ({format_time(now)})"),
        ),
        removed=(reasons.RECONCILING, reasons.STALLED),
        fields={FAILED_ATTEMPTS: 0, NEXT_RETRY_TIME: None},
    )


def is_current(status: Mapping[str, Any]) -> bool:
    """The status already says what `succeeded` would (apart from its messages): no failure, nothing pending."""
    conditions = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, Mapping)}
    failing = conditions.get(reasons.ROTATION_FAILING)
    return (failing is not None and failing.get("status") == "False"
            and reasons.RECONCILING not in conditions and reasons.STALLED not in conditions
            and previous_attempts(status) == 0 and not status.get(NEXT_RETRY_TIME))


def failed(failure: Failure, *, attempts: int, valid: datetime | None, secret_name: str) -> StatusReport:
    """A failed pass. `attempts`: consecutive failures including this one; `valid`: `valid_until`'s answer."""
    retry = (f"next attempt at {format_time(failure.retry_at)}" if failure.retry_at is not None
             else "no attempt scheduled")
    when = f"{attempts} consecutive failed attempt{'s' if attempts != 1 else ''}, the last at {format_time(failure.at)}"
    conditions = [ConditionValue(reasons.ROTATION_FAILING, True, failure.reason,
                                 f"{failure.message} ({when}; {retry})")]
    if valid is not None:
        conditions.insert(0, ConditionValue(
            reasons.READY, True, reasons.ISSUED,
            f"Secret {secret_name} holds credentials valid until {format_time(valid)}; rotation is failing "
            f"({failure.reason}): see the RotationFailing condition"))
    else:
        conditions.insert(0, ConditionValue(reasons.READY, False, failure.reason, failure.message))
    if failure.transient:
        conditions.append(ConditionValue(reasons.RECONCILING, True, failure.reason,
                                         f"retrying after a transient failure: {retry}"))
        removed: tuple[str, ...] = (reasons.STALLED,)
    else:
        conditions.append(ConditionValue(
            reasons.STALLED, True, failure.reason,
            f"{failure.message}: the configuration must be fixed (retried when the credential or its MFAIdentity "
            f"changes; {retry})"))
        removed = (reasons.RECONCILING,)
    return StatusReport(conditions=tuple(conditions), removed=removed, fields={
        FAILED_ATTEMPTS: attempts,
        LAST_FAILURE_TIME: format_time(failure.at),
        NEXT_RETRY_TIME: format_time(failure.retry_at) if failure.retry_at is not None else None,
    })
