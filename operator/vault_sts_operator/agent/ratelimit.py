"""The node's request rate: 1000/s, burst 500, as the EKS agent sets it. Pure.

The same GCRA as domain/rate.py, with one difference that matters here: domain's `Rate.reserve` books a start for
every call (the operator makes its STS calls wait), while the agent refuses a request over the rate with 429 at
once; booking refused requests too would push the next free slot further out with every refusal, so a flood would
keep refusing everyone after it stopped. `allow` books only what it lets through.
"""

from __future__ import annotations


class RequestRate:
    def __init__(self, per_second: float, burst: int) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate needs per_second > 0 and burst >= 1")
        self._interval = 1.0 / per_second
        self._tolerance = (burst - 1) * self._interval
        self._tat = float("-inf")  # theoretical arrival time of the next request

    def allow(self, now: float) -> bool:
        tat = max(self._tat, now)
        if tat - self._tolerance > now:
            return False
        self._tat = tat + self._interval
        return True
