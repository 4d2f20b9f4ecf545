"""RFC 3339 timestamps, UTC, as Kubernetes writes them: second precision, and MicroTime for Leases."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime) -> str:
    # Called several times per issue: an f-string is about twice as fast as strftime, same text.
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z")


def format_micro_time(moment: datetime) -> str:
    """MicroTime, as a Lease's acquireTime and renewTime want it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
