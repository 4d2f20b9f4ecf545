"""Leader election over a coordination.k8s.io/v1 Lease: client-go's rules, pure.

client-go's `tools/leaderelection` is the model (`tryAcquireOrRenew`, `isLeaseValid`): a candidate may take
the Lease when it holds it already, when nobody does (`holderIdentity` empty: released on shutdown), or when
the holder's record has not changed for `leaseDurationSeconds`, measured on the candidate's own monotonic
clock from the moment it first saw that record (never from `renewTime`, which another replica's clock
wrote). A leader that cannot renew within the renew deadline stops leading before its Lease can expire for
the others: `renew_deadline < lease_duration`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ElectionTiming:
    """client-go's defaults for controllers: 15 s, 10 s, 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problems(self) -> list[str]:
        problems = []
        if not self.lease_duration > self.renew_deadline:
            problems.append("the lease duration must be longer than the renew deadline")
        if not self.renew_deadline > self.retry_period * 1.2:  # client-go's JitterFactor
            problems.append("the renew deadline must be longer than 1.2 x the retry period")
        if self.retry_period <= 0:
            problems.append("the retry period must be positive")
        return problems


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    lease_duration_seconds: int
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0


def may_take(record: LeaseRecord | None, *, me: str, observed_at: float, now: float) -> bool:
    """May `me` write itself into the Lease now? (`observed_at`: when this replica first saw `record`.)"""
    if record is None or not record.holder or record.holder == me:
        return True
    return now >= observed_at + record.lease_duration_seconds


def next_record(record: LeaseRecord | None, *, me: str, now_text: str, lease_duration: float) -> LeaseRecord:
    """The record `me` writes to acquire or renew (transitions count changes of holder, as client-go's)."""
    duration = max(1, round(lease_duration))
    if record is None:
        return LeaseRecord(holder=me, lease_duration_seconds=duration, acquire_time=now_text, renew_time=now_text)
    if record.holder == me:
        return replace(record, lease_duration_seconds=duration, renew_time=now_text)
    return LeaseRecord(holder=me, lease_duration_seconds=duration, acquire_time=now_text, renew_time=now_text,
                       transitions=record.transitions + 1)


def released(record: LeaseRecord, *, now_text: str) -> LeaseRecord:
    """What a leader writes on a graceful shutdown: no holder, so the next candidate takes it at once
    (client-go's ReleaseOnCancel writes an empty holder and a one-second duration)."""
    return replace(record, holder="", lease_duration_seconds=1, renew_time=now_text)
