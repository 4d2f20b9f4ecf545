"""TOTP time-step bookkeeping: a code is identified by floor(time / period)."""

from __future__ import annotations

import math


def time_step(now: float, period: int) -> int:
    return math.floor(now / period)


def seconds_until_next_step(now: float, period: int) -> float:
    return (time_step(now, period) + 1) * period - now
