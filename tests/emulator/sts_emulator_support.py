"""Helpers for the STS emulator tests: start/stop the process, identities, TOTP codes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp

from devstack.sts_emulator.admin import EmulatorAdmin

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ROLE_MFA = f"arn:aws:iam::{ACCOUNT}:role/app-billing"
ROLE_PLAIN = f"arn:aws:iam::{ACCOUNT}:role/app-plain"
ROLE_LONG = f"arn:aws:iam::{ACCOUNT}:role/app-long"
ROLE_EXTERNAL = f"arn:aws:iam::{ACCOUNT}:role/partner"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"


@dataclass
class Emulator:
    url: str
    log_path: Path
    process: subprocess.Popen[str]

    def log_text(self) -> str:
        return self.log_path.read_text()


def start_emulator(log_path: Path, *extra: str) -> Emulator:
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.sts_emulator", "--host", "127.0.0.1", "--port", "0", *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith("sts-emulator listening on "), line
    url = line.rsplit(" ", 1)[-1]
    EmulatorAdmin(url).wait_healthy()
    return Emulator(url=url, log_path=log_path, process=process)


def stop_emulator(emulator: Emulator) -> None:
    emulator.process.terminate()
    try:
        emulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        emulator.process.kill()
        emulator.process.wait(timeout=10)
    assert emulator.process.stdout is not None
    emulator.process.stdout.close()


StsFactory = Callable[..., Any]


def from_credentials(make: StsFactory, creds: dict[str, Any]) -> Any:
    return make(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


@dataclass
class Device:
    serial: str
    seed: str
    period: int

    def code_at(self, when: float) -> str:
        return str(pyotp.TOTP(self.seed, interval=self.period).at(when))


@dataclass
class Identity:
    user_arn: str
    key_id: str
    secret: str
    device: Device
    other_device: Device  # belongs to another user
    client: Any  # boto3 STS client with the long-term key


def current_code(admin: EmulatorAdmin, device: Device) -> str:
    """The device's code at the emulator's clock (which tests may have advanced)."""
    return device.code_at(admin.clock()["now"])


def next_code(admin: EmulatorAdmin, device: Device) -> str:
    """Move the emulator's clock one period on and return the code of the new step."""
    admin.advance_clock(device.period)
    return current_code(admin, device)


def align_mid_step(admin: EmulatorAdmin, period: int) -> None:
    """Advance the emulator's clock to the middle of a time step, so a test never straddles a boundary."""
    now = admin.clock()["now"]
    admin.advance_clock((period / 2 - now % period) % period)


def wait_for_next_step(period: int) -> None:
    now = time.time()
    time.sleep(period - (now % period) + 0.05)
