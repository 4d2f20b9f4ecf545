from datetime import UTC, datetime, timedelta

import pytest

from vault_sts_operator.domain import allowlist
from vault_sts_operator.domain.decisions import IssuedRecord, Trigger, decide
from vault_sts_operator.domain.durations import parse_duration
from vault_sts_operator.domain.renewal import backoff_delay, renewal_time, unit_jitter
from vault_sts_operator.domain.session_name import qualified_session_name
from vault_sts_operator.domain.totp import step_of_fetch, time_step
from vault_sts_operator.outputs.issued_record import read_issued_record, record_annotations

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "10x", "m10", "1h 30m", "-5m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("namespace", "role", "refused"),
    [
        ("team-a", "arn:aws:iam::123456789012:role/app-billing", None),
        ("team-c", "arn:aws:iam::123456789012:role/app-billing", "namespace 'team-c'"),
        ("team-a", "arn:aws:iam::123456789012:role/admin", "role arn:aws:iam::123456789012:role/admin"),
        ("team-b-dev", "arn:aws:iam::123456789012:role/app-x", None),
    ],
)
def test_allowlist(namespace, role, refused):
    reason = allowlist.refusal(identity="ops", namespace=namespace, role_arn=role,
                               allowed_namespaces=["team-a", "team-b-*"],
                               allowed_role_arns=["arn:aws:iam::123456789012:role/app-*"])
    if refused is None:
        assert reason is None
    else:
        assert refused in reason


def test_empty_allowlist_allows_nobody():
    assert allowlist.refusal(identity="ops", namespace="a", role_arn="r", allowed_namespaces=[],
                             allowed_role_arns=["*"]) is not None


def test_namespace_selector_allows():
    assert allowlist.refusal(identity="ops", namespace="x", role_arn="r", allowed_namespaces=[],
                             allowed_role_arns=["r"], namespace_selected=True) is None


@pytest.mark.parametrize(
    ("ns", "name", "expected"),
    [
        ("team-a", "billing", "team-a@billing"),
        ("a", "b:c/d", "a@b-c-d"),
        ("x" * 40, "y" * 40, ("x" * 40 + "@" + "y" * 40)[:64]),
    ],
)
def test_default_session_name(ns, name, expected):
    assert qualified_session_name(ns, name) == expected


def test_time_steps():
    assert time_step(59.9, 30) == 1
    assert time_step(60.0, 30) == 2


def test_renewal_default_is_a_third_before_expiry_minus_jitter():
    at = renewal_time(issued_at=T0, expiration=T0 + timedelta(hours=1), renew_before=None, jitter_key="k")
    nominal = T0 + timedelta(minutes=40)
    assert nominal - timedelta(minutes=4) <= at <= nominal  # up to 10 % of the 40 min wait


def test_renewal_jitter_stays_small_when_renew_before_is_large():
    at = renewal_time(issued_at=T0, expiration=T0 + timedelta(seconds=900), renew_before=timedelta(seconds=875),
                      jitter_key="k")
    assert T0 + timedelta(seconds=22.5) <= at <= T0 + timedelta(seconds=25)


def test_renewal_is_deterministic_but_spread():
    times = {renewal_time(issued_at=T0, expiration=T0 + timedelta(hours=1), renew_before=timedelta(minutes=10),
                          jitter_key=f"ns/cr-{i}") for i in range(200)}
    assert len(times) > 150  # jitter spreads a thousand CRs issued together
    again = renewal_time(issued_at=T0, expiration=T0 + timedelta(hours=1), renew_before=timedelta(minutes=10),
                         jitter_key="ns/cr-1")
    assert again == renewal_time(issued_at=T0, expiration=T0 + timedelta(hours=1),
                                 renew_before=timedelta(minutes=10), jitter_key="ns/cr-1")


def test_renewal_never_before_floor_with_huge_renew_before():
    at = renewal_time(issued_at=T0, expiration=T0 + timedelta(seconds=900), renew_before=timedelta(hours=2),
                      jitter_key="k")
    assert at == T0 + timedelta(seconds=10)


def test_backoff_grows_and_caps():
    delays = [backoff_delay(n, base=5, cap=300, jitter_key="k") for n in range(1, 10)]
    assert delays[0] >= 5 and delays[1] >= 10 and delays[2] >= 20
    assert max(delays) <= 300 * 1.25
    assert 0 <= unit_jitter("x") < 1


def record(**kw):
    base = dict(issued_at=T0, expiration=T0 + timedelta(hours=1), spec_hash="h1", rotate_request="",
                access_key_id="ASIAEXAMPLE", assumed_role_arn="arn")
    base.update(kw)
    return IssuedRecord(**base)


def test_record_round_trips_through_annotations():
    rec = record(rotate_request="r1")
    assert read_issued_record(record_annotations(rec)) == rec
    assert read_issued_record({}) is None
    assert read_issued_record({"vaultsts.io/issued-at": "garbage", "vaultsts.io/expiration": "x"}) is None


@pytest.mark.parametrize(
    ("now", "rec", "spec_hash", "rotate", "trigger"),
    [
        (T0, None, "h1", "", Trigger.MISSING),
        (T0, record(), "h2", "", Trigger.SPEC_CHANGED),
        (T0, record(), "h1", "again", Trigger.ROTATION_REQUESTED),
        (T0, record(rotate_request="again"), "h1", "again", None),
        (T0 + timedelta(minutes=10), record(), "h1", "", None),
        (T0 + timedelta(minutes=59), record(), "h1", "", Trigger.RENEWAL_DUE),
        (T0 + timedelta(hours=2), record(), "h1", "", Trigger.EXPIRED),
    ],
)
def test_decide(now, rec, spec_hash, rotate, trigger):
    decision = decide(now=now, record=rec, spec_hash=spec_hash, rotate_request=rotate, renew_before=None,
                      jitter_key="ns/n")
    assert decision.trigger is trigger
    if trigger is None:
        assert decision.renew_at is not None and decision.renew_at > now


@pytest.mark.parametrize(("before", "after", "generated", "expected"), [
    (60.1, 60.4, None, 2),        # HashiCorp Vault: both samples in step 2
    (59.8, 60.2, None, None),     # the read crossed a boundary: the code may be step 1's or step 2's
    (59.8, 60.2, 59.9, 1),        # OpenBao says when it generated the code
    (89.99, 90.0, None, None),
    (90.0, 119.99, None, 3),
])
def test_step_of_fetch_drops_codes_read_across_a_boundary(before, after, generated, expected):
    assert step_of_fetch(before=before, after=after, period=30, generated=generated) == expected
