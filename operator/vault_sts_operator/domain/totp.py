"""TOTP time-step bookkeeping: a code is identified by floor(time / period)."""

from __future__ import annotations

import math


def time_step(now: float, period: int) -> int:
    return math.floor(now / period)


def step_of_fetch(*, before: float, after: float, period: int, generated: float | None) -> int | None:
    """The time step of a code read from Vault, or None when it cannot be told.

    OpenBao says when it generated the code. HashiCorp Vault does not: the code belongs to
    the step Vault's clock was in while serving the request, somewhere between the request's
    start (`before`) and the response (`after`). When those two fall in different steps the
    code may belong to either, and recording the wrong one could send a code twice or wait for
    nothing: such a code is dropped.
    """
    if generated is not None:
        return time_step(generated, period)
    first, last = time_step(before, period), time_step(after, period)
    return first if first == last else None
