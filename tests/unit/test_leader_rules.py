"""client-go's leader-election rules (domain/leader.py), pure."""

from __future__ import annotations

from vault_sts_operator.domain.leader import ElectionTiming, LeaseRecord, may_take, next_record, released

HELD = LeaseRecord(holder="b", lease_duration_seconds=15, acquire_time="t0", renew_time="t1", transitions=3)


def test_a_held_lease_is_taken_only_after_its_duration_on_the_candidates_own_clock():
    assert not may_take(HELD, me="a", observed_at=100.0, now=114.9)
    assert may_take(HELD, me="a", observed_at=100.0, now=115.0)
    assert may_take(HELD, me="b", observed_at=100.0, now=100.0)  # its holder renews at any time
    assert may_take(None, me="a", observed_at=0.0, now=0.0)  # nobody created it yet
    assert may_take(released(HELD, now_text="t2"), me="a", observed_at=100.0, now=100.0)  # released: at once


def test_records_count_transitions_and_keep_the_acquire_time_on_renewal():
    renewed = next_record(HELD, me="b", now_text="t5", lease_duration=15)
    assert (renewed.acquire_time, renewed.renew_time, renewed.transitions) == ("t0", "t5", 3)
    taken = next_record(HELD, me="a", now_text="t6", lease_duration=15)
    assert (taken.holder, taken.acquire_time, taken.transitions) == ("a", "t6", 4)
    first = next_record(None, me="a", now_text="t0", lease_duration=15)
    assert (first.holder, first.transitions, first.lease_duration_seconds) == ("a", 0, 15)
    gone = released(taken, now_text="t7")
    assert gone.holder == "" and gone.lease_duration_seconds == 1


def test_timing_must_let_a_leader_stop_before_others_may_take_over():
    assert ElectionTiming().problems() == []
    assert ElectionTiming(lease_duration=10, renew_deadline=10, retry_period=2).problems()
    assert ElectionTiming(lease_duration=15, renew_deadline=2, retry_period=2).problems()


def test_lease_times_are_micro_times_that_parse_back():
    from datetime import UTC, datetime

    from vault_sts_operator.domain.timefmt import format_micro_time, parse_time

    moment = datetime(2026, 12, 4, 15, 0, 1, 123456, tzinfo=UTC)
    assert format_micro_time(moment) == "2026-12-04T15:00:01.123456Z"
    assert parse_time(format_micro_time(moment)) == moment
    assert parse_time("2026-12-04T15:10:01Z") == datetime(2026, 12, 4, 15, 10, 1, tzinfo=UTC)  # a TokenRequest's
