"""Which replica runs passes, decided from kopf's peering object(s) as a watch shows them. Pure.

kopf keeps one entry per replica in the peering object's status (`priority`, `lastseen`, `lifetime`; an
entry is dead once `lastseen + lifetime` has passed) and pauses every replica that sees a live peer with
a higher priority. The operator's credential scheduler follows the same rule, with two additions, because
a pass spends STS calls and TOTP codes where kopf's handlers only react:

- A replica runs passes only once its own entry is in the object. A replica that started later then
  finds it there and pauses, however close the two starts were: the object is written one version at a
  time, so the later writer's view holds the earlier writer's entry.
- A replica that finds a live peer of *lower* priority (one that may be running passes until its own
  watch shows the newcomer's entry) waits `grace` seconds from the moment its own entry appeared before
  it starts. kopf resumes at once; here the overlap would mean two replicas issuing for one credential.

Replicas choose random priorities (handlers/lifecycle.py), so an entry with this replica's own priority
is taken to be its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vault_sts_operator.domain.timefmt import parse_time

DEFAULT_LIFETIME_SECONDS = 60.0  # kopf's default `settings.peering.lifetime`


@dataclass(frozen=True)
class Peer:
    priority: int
    deadline: datetime  # dead from then on

    @classmethod
    def parse(cls, entry: Mapping[str, Any], now: datetime) -> Peer | None:
        try:
            lastseen = parse_time(str(entry["lastseen"])) if entry.get("lastseen") else now
            lifetime = float(entry.get("lifetime", DEFAULT_LIFETIME_SECONDS))
            return cls(int(entry.get("priority", 0)), lastseen + timedelta(seconds=lifetime))
        except (TypeError, ValueError):
            return None


def live_peers(status: Mapping[str, Any] | None, now: datetime) -> list[Peer]:
    peers = (Peer.parse(entry, now) for entry in (status or {}).values() if isinstance(entry, Mapping))
    return [peer for peer in peers if peer is not None and peer.deadline > now]


@dataclass(frozen=True)
class Verdict:
    active: bool
    why: str
    recheck_at: datetime | None = None  # when the verdict may change without a new event (an entry expiring)


def decide(statuses: Iterable[Mapping[str, Any] | None], my_priority: int, now: datetime, *,
           entered_at: datetime | None, grace_seconds: float) -> Verdict:
    """The verdict for a replica of `my_priority`, given every peering object it takes part in.

    `entered_at`: since when this replica's own entry has been in all of them (None: not yet).
    """
    peers = [peer for status in statuses for peer in live_peers(status, now)]
    higher = [peer for peer in peers if peer.priority > my_priority]
    if higher:
        return Verdict(False, f"a replica of higher priority is active (priority {max(p.priority for p in higher)})",
                       min(peer.deadline for peer in higher))
    if entered_at is None:
        return Verdict(False, "waiting for this replica's own entry in the peering object")
    lower = [peer for peer in peers if peer.priority < my_priority]
    if lower:
        grace_ends = entered_at + timedelta(seconds=grace_seconds)
        if now < grace_ends:
            return Verdict(False, "giving a replica of lower priority time to pause",
                           min([grace_ends, *(peer.deadline for peer in lower)]))
    return Verdict(True, "no live replica of higher priority")


def has_own_entry(status: Mapping[str, Any] | None, my_priority: int, now: datetime) -> bool:
    return any(peer.priority == my_priority for peer in live_peers(status, now))
