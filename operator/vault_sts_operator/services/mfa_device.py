"""Spending TOTP codes: one at a time per MFA device, never the same time step twice.

AWS accepts a code once, and Vault's `totp/code` does not track use. For each
device this guard takes an in-process lock, then a durable claim on the step it
is about to spend (write-ahead, in a store shared by every operator instance),
and only then sends the code. A crash after the claim wastes a period; it can
never send a code twice. When the current step is already spent, it waits for
the next period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from vault_sts_operator import metrics
from vault_sts_operator.domain.credentials import TotpCode
from vault_sts_operator.domain.errors import MfaCodeRejectedError, StsError
from vault_sts_operator.services.limiter import FairLock

log = logging.getLogger(__name__)
T = TypeVar("T")

# Start a little after the period boundary so Vault's clock and ours agree on the step.
STEP_MARGIN_SECONDS = 0.3
# A recorded step more than this many steps ahead of our clock was written by a clock that runs ahead
# (or ours runs behind): waiting for it could take hours. Wait one period instead, then supersede it.
SKEW_TOLERANCE_STEPS = 1


class StepStore(Protocol):
    """Durable record of the last spent step per device, shared by operator instances."""

    async def claim(self, device: str, step: int, *, supersede: int | None = None) -> int | None:
        """Record `step` as spent if it is newer than the recorded one; else return the recorded one.

        With `supersede`, also record `step` when the recorded step is exactly `supersede` (a step from
        a clock running ahead, which the caller has waited a full period past): a compare-and-swap.
        """

    async def release(self, device: str) -> None:
        """Let other instances claim again (the recorded step stays)."""


class MfaDeviceGuard:
    def __init__(
        self,
        store: StepStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_attempts: int = 3,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._locks: dict[str, FairLock] = {}

    async def _wait_for_step(self, after_step: int, period: int) -> None:
        delay = (after_step + 1) * period - self._clock() + STEP_MARGIN_SECONDS
        if delay > 0:
            metrics.MFA_WAITS.inc()
            metrics.MFA_WAIT_SECONDS.inc(delay)
            await self._sleep(delay)

    async def _claim_fresh_code(self, device: str, fetch: Callable[[], Awaitable[TotpCode]]) -> TotpCode:
        """A code whose step this instance claimed and whose period has not ended yet.

        The claim can wait (another instance, or a killed one whose Lease has not expired, holds the
        device): a code fetched before that wait may be stale when the claim succeeds, and AWS would
        refuse it. Its claimed step stays spent; a fresh code from a later step is fetched instead.
        """
        supersede: int | None = None
        while True:
            code = await fetch()
            recorded = await self._store.claim(device, code.step, supersede=supersede)
            supersede = None
            if recorded is not None:  # this step (or a later one) was already spent
                ahead = recorded - code.step
                if ahead > SKEW_TOLERANCE_STEPS:
                    # Written by a clock that runs ahead. Whatever code that replica sent was read before we
                    # saw its record: a code read a full period from now is newer, whatever the clocks say.
                    self._report_skew(device, ahead * code.period)
                    await self._sleep(code.period + STEP_MARGIN_SECONDS)
                    metrics.MFA_WAITS.inc()
                    metrics.MFA_WAIT_SECONDS.inc(code.period + STEP_MARGIN_SECONDS)
                    supersede = recorded
                    continue
                await self._wait_for_step(recorded, code.period)
                continue
            if self._clock() >= (code.step + 1) * code.period:
                log.info("MFA device %s: the code's period ended while claiming it; fetching a fresh one", device)
                continue
            return code

    def _report_skew(self, device: str, seconds: float) -> None:
        metrics.CLOCK_SKEW_SECONDS.labels(source="mfa-step").set(seconds)
        metrics.CLOCK_SKEW_EVENTS.labels(source="mfa-step").inc()
        log.warning("MFA device %s: the recorded time step is about %.0fs ahead of this replica's clock; a replica's "
                    "clock runs ahead (or this one's behind). Waiting one period instead, then taking over the "
                    "record. Check NTP on the operator's nodes.", device, seconds)

    async def spend(
        self,
        device: str,
        fetch: Callable[[], Awaitable[TotpCode]],
        use: Callable[[str], Awaitable[T]],
        *,
        identity: str = "",
        tenant: str = "",
    ) -> T:
        """Fetch a fresh code and pass it to `use`, exactly once per time step.

        A code AWS rejects as invalid (already used elsewhere, clock skew) is followed
        by a fresh code in the next period, at most `max_attempts` times in all.
        Callers queue per `tenant` (a namespace): the device is shared round-robin between tenants.
        """
        lock = self._locks.setdefault(device, FairLock())
        async with lock.hold(tenant):
            attempt = 0
            while True:
                attempt += 1
                code = await self._claim_fresh_code(device, fetch)
                try:
                    result = await use(code.code)
                except MfaCodeRejectedError:
                    metrics.TOTP_CODES_USED.labels(identity=identity).inc()
                    if attempt >= self._max_attempts:
                        raise
                    log.warning("AWS rejected the MFA code of device %s (attempt %d); "
                                "trying again in the next period", device, attempt)
                    continue
                except StsError as exc:
                    if exc.code_spent:
                        metrics.TOTP_CODES_USED.labels(identity=identity).inc()
                    raise
                except Exception:
                    metrics.TOTP_CODES_USED.labels(identity=identity).inc()
                    raise
                finally:
                    await self._store.release(device)
                metrics.TOTP_CODES_USED.labels(identity=identity).inc()
                return result
