"""What an AssumedRoleCredential's status says after a pass (domain/credential_status.py): tables."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vault_sts_operator.api.conditions import apply_report
from vault_sts_operator.domain import credential_status as cs
from vault_sts_operator.domain import errors, reasons
from vault_sts_operator.domain.decisions import IssuedRecord

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)
RECORD = IssuedRecord(issued_at=NOW - timedelta(minutes=30), expiration=LATER, spec_hash="h1", rotate_request="",
                      access_key_id="ASIA1", assumed_role_arn="arn:aws:sts::1:assumed-role/r/s")
READY_STATUS: dict[str, Any] = {
    "expiration": "2026-12-04T12:30:00Z",
    "conditions": [{"type": "Ready", "status": "True", "reason": "Issued", "message": "m", "observedGeneration": 3,
                    "lastTransitionTime": "2026-12-04T11:30:00Z"}]}


@pytest.mark.parametrize(("record", "known", "status", "generation", "expected"), [
    (RECORD, True, {}, 3, LATER),                                       # the Secret read: for this spec, valid
    (RECORD, True, READY_STATUS, 3, LATER),
    (dataclasses.replace(RECORD, spec_hash="h0"), True, READY_STATUS, 3, None),  # another spec's
    (dataclasses.replace(RECORD, expiration=NOW), True, READY_STATUS, 3, None),  # expired
    (None, True, READY_STATUS, 3, None),                                # the Secret is gone
    (None, False, READY_STATUS, 3, LATER),                              # not reached: the status is trusted
    (None, False, READY_STATUS, 4, None),                               # ... unless the spec changed since
    (None, False, {**READY_STATUS, "expiration": "2026-12-04T12:00:00Z"}, 3, None),  # ... or it expired
    (None, False, {**READY_STATUS, "expiration": "garbage"}, 3, None),
    (None, False, {}, 3, None),                                         # never issued
    (None, False, {**READY_STATUS, "conditions": [{**READY_STATUS["conditions"][0], "status": "False"}]}, 3, None),
])
def test_valid_until(record: IssuedRecord | None, known: bool, status: dict[str, Any], generation: int,
                     expected: datetime | None) -> None:
    assert cs.valid_until(now=NOW, spec_hash="h1", record=record, record_known=known, status=status,
                          generation=generation) == expected


def types(report: cs.StatusReport) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status, c.reason) for c in report.conditions}


def failure(transient: bool, reason: str = reasons.STS_UNAVAILABLE) -> cs.Failure:
    return cs.Failure(reason=reason, message="STS said no", transient=transient, at=NOW,
                      retry_at=NOW + timedelta(seconds=42))


def test_a_transient_failure_with_a_valid_secret_keeps_ready() -> None:
    report = cs.failed(failure(True), attempts=2, valid=LATER, secret_name="app-aws")
    assert types(report) == {"Ready": (True, "Issued"), "RotationFailing": (True, "STSUnavailable"),
                             "Reconciling": (True, "STSUnavailable")}
    assert report.removed == ("Stalled",)
    ready = report.conditions[0]
    assert "valid until 2026-12-04T12:30:00Z" in ready.message and "rotation is failing" in ready.message
    failing = report.conditions[1]
    assert failing.message == ("STS said no (2 consecutive failed attempts, the last at 2026-12-04T12:00:00Z; "
                               "next attempt at 2026-12-04T12:00:42Z)")
    assert report.fields == {"failedAttempts": 2, "lastFailureTime": "2026-12-04T12:00:00Z",
                             "nextRetryTime": "2026-12-04T12:00:42Z"}


def test_a_failure_without_a_valid_secret_is_not_ready() -> None:
    report = cs.failed(failure(True), attempts=1, valid=None, secret_name="app-aws")
    assert types(report)["Ready"] == (False, "STSUnavailable")
    assert report.conditions[0].message == "STS said no"
    assert "1 consecutive failed attempt," in report.conditions[1].message


def test_a_configuration_failure_stalls() -> None:
    report = cs.failed(failure(False, reasons.NOT_ALLOWED), attempts=1, valid=LATER, secret_name="s")
    assert types(report) == {"Ready": (True, "Issued"), "RotationFailing": (True, "NotAllowed"),
                             "Stalled": (True, "NotAllowed")}
    assert report.removed == ("Reconciling",)


def test_no_retry_scheduled_clears_next_retry_time() -> None:
    report = cs.failed(cs.Failure(reason="VaultError", message="m", transient=True, at=NOW, retry_at=None),
                       attempts=1, valid=None, secret_name="s")
    assert report.fields["nextRetryTime"] is None and "no attempt scheduled" in report.conditions[1].message


def test_success_resets_the_failure_fields_and_removes_abnormal_conditions() -> None:
    report = cs.succeeded(ready_message="issued", now=NOW)
    assert types(report) == {"Ready": (True, "Issued"), "RotationFailing": (False, "Succeeded")}
    assert set(report.removed) == {"Reconciling", "Stalled"}
    assert report.fields == {"failedAttempts": 0, "nextRetryTime": None}  # lastFailureTime stays: history


def test_applied_in_sequence_transitions_move_only_on_flips() -> None:
    first = apply_report([], cs.issuing(), generation=1, now=NOW)
    assert {c["type"]: c["status"] for c in first} == {"Ready": "False", "Reconciling": "True"}
    later = NOW + timedelta(minutes=1)
    ok = apply_report(first, cs.succeeded(ready_message="issued", now=later), generation=1, now=later)
    assert {c["type"]: c["status"] for c in ok} == {"Ready": "True", "RotationFailing": "False"}
    fail_at = later + timedelta(minutes=1)
    failed = apply_report(ok, cs.failed(failure(True), attempts=1, valid=LATER, secret_name="s"), generation=1,
                          now=fail_at)
    by_type = {c["type"]: c for c in failed}
    assert by_type["Ready"]["lastTransitionTime"] == "2026-12-04T12:01:00Z"  # still True: not moved
    assert by_type["RotationFailing"]["lastTransitionTime"] == "2026-12-04T12:02:00Z"  # flipped
    assert all(c["reason"] and c["message"] and c["observedGeneration"] == 1 for c in failed)


def test_is_current() -> None:
    ok = {"conditions": apply_report([], cs.succeeded(ready_message="m", now=NOW), generation=1, now=NOW),
          "failedAttempts": 0}
    assert cs.is_current(ok)
    assert not cs.is_current({**ok, "failedAttempts": 1})
    assert not cs.is_current({**ok, "nextRetryTime": "2026-12-04T12:00:00Z"})
    assert not cs.is_current({"conditions": READY_STATUS["conditions"]})  # written before RotationFailing existed


def test_previous_attempts() -> None:
    assert [cs.previous_attempts(s) for s in ({}, {"failedAttempts": 3}, {"failedAttempts": "x"},
                                                {"failedAttempts": True}, {"failedAttempts": -1})] == [0, 3, 0, 0, 0]


@pytest.mark.parametrize("error", [errors.InvalidSpecError("x"), errors.NotAllowedError("x"),
                                   errors.IdentityNotFoundError("x"), errors.SecretConflictError("x"),
                                   errors.SecretRefusedError("x")])
def test_every_non_transient_failure_is_in_the_user_action_group(error: errors.IssuingError) -> None:
    assert not error.transient and error.reason in reasons.USER_ACTION_REQUIRED
