"""A request rate: the generic cell rate algorithm (GCRA), the token bucket written as one timestamp. Pure.

Each call reserves its start: at most `burst` start at once, then one per 1/rate seconds. The operator puts it
in front of every STS call (`--sts-rate`) so a restart or a flood of new credentials stays far below STS's
request limits (docs/design/pod-identity.md, 6.3). (No library here: asyncio has no rate limiter, and the
algorithm is the eight lines below.)
"""

from __future__ import annotations


class Rate:
    def __init__(self, per_second: float, burst: int) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate needs per_second > 0 and burst >= 1")
        self._interval = 1.0 / per_second
        self._tolerance = (burst - 1) * self._interval
        self._tat: float | None = None  # theoretical arrival time of the next call

    def allow(self, now: float) -> bool:
        """Take a start at `now` if one is free (a refused call takes nothing: a flood that stops leaves the
        rate as it was)."""
        tat = now if self._tat is None else max(self._tat, now)
        if tat - self._tolerance > now:
            return False
        self._tat = tat + self._interval
        return True

    def reserve(self, now: float) -> float:
        """Reserve a start for a call asked for at `now`; returns how long to wait before starting it."""
        tat = now if self._tat is None else max(self._tat, now)
        start = max(now, tat - self._tolerance)
        self._tat = tat + self._interval
        return start - now
