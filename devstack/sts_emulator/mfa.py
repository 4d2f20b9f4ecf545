"""TOTP checking with AWS's tolerance and per-device time-step bookkeeping.

A code is valid when it equals the device's TOTP at the current time step or one
step either side. A device remembers the last time step it accepted; a code whose
matching step is not later than that is refused, so each code is accepted once
and an older code is refused after a newer one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from enum import StrEnum

import pyotp

STEP_TOLERANCE = 1
DEFAULT_PERIOD = 30
DIGITS = 6


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    INVALID = "invalid"
    REUSED = "reused"


@dataclass
class MFADevice:
    serial: str
    seed: str
    owner: str  # the owning user's name
    period: int = DEFAULT_PERIOD
    digits: int = DIGITS
    last_step: int | None = None

    def step_at(self, now: float) -> int:
        return int(now // self.period)


@dataclass(frozen=True)
class CodeCheck:
    outcome: Outcome
    step: int | None  # the time step the code matched (None when it matched none)

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


def valid_seed(seed: str) -> bool:
    """True when ``seed`` is base32 that decodes to at least 10 bytes (80 bits)."""
    text = seed.strip().replace(" ", "").upper()
    if not text:
        return False
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= 10


def normalise_seed(seed: str) -> str:
    return seed.strip().replace(" ", "").upper().rstrip("=")


def generate_seed() -> str:
    return str(pyotp.random_base32())


def code_at_step(seed: str, step: int, digits: int = DIGITS) -> str:
    """The TOTP code of time step ``step`` (RFC 6238 = HOTP with counter = step)."""
    return str(pyotp.HOTP(seed, digits=digits).at(step))


def check_code(device: MFADevice, code: str, now: float) -> CodeCheck:
    """Judge ``code`` at time ``now`` without changing the device."""
    current = device.step_at(now)
    matched = [
        step
        for step in range(current - STEP_TOLERANCE, current + STEP_TOLERANCE + 1)
        if hmac.compare_digest(code_at_step(device.seed, step, device.digits), code)
    ]
    if not matched:
        return CodeCheck(Outcome.INVALID, None)
    fresh = [step for step in matched if device.last_step is None or step > device.last_step]
    if not fresh:
        return CodeCheck(Outcome.REUSED, max(matched))
    return CodeCheck(Outcome.ACCEPTED, min(fresh))


def verify_and_consume(device: MFADevice, code: str, now: float) -> CodeCheck:
    """Judge ``code`` and, when accepted, remember its step so it is never accepted again."""
    result = check_code(device, code, now)
    if result.accepted and result.step is not None:
        device.last_step = result.step
    return result


def change_period(device: MFADevice, period: int) -> None:
    """Change the period; the spent step is converted so time already spent stays spent."""
    if period < 1:
        raise ValueError("period must be a positive number of seconds")
    if device.last_step is not None:
        # The last accepted step ended at (last_step + 1) * old period; everything up to
        # that instant stays spent under the new period.
        spent_until = (device.last_step + 1) * device.period
        device.last_step = -(-spent_until // period) - 1
    device.period = period
