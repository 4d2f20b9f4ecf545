"""Call, MFA and error counters exposed at ``/_emulator/counters`` (no secrets, no codes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_ACCEPTED_LOG = 10000


@dataclass
class Counters:
    calls: Counter[str] = field(default_factory=Counter)
    calls_by_caller: Counter[str] = field(default_factory=Counter)  # "<action> <user name | role ARN>"
    # "<action> <RoleArn | SerialNumber>" as the request names it, counted on arrival (faulted calls too)
    calls_by_target: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    codes_accepted: int = 0
    codes_refused: int = 0
    codes_accepted_by_serial: Counter[str] = field(default_factory=Counter)
    codes_refused_by_serial: Counter[str] = field(default_factory=Counter)
    codes_reused_by_serial: Counter[str] = field(default_factory=Counter)
    accepted_codes: list[dict[str, Any]] = field(default_factory=list)
    # The spent codes themselves, for leak scans only (GET /_emulator/spent-codes; never in counters).
    spent_codes: list[str] = field(default_factory=list)
    issued: int = 0

    def code_accepted(self, serial: str, step: int, at: float, code: str = "") -> None:
        self.codes_accepted += 1
        if code:
            self.spent_codes.append(code)
            del self.spent_codes[:-MAX_ACCEPTED_LOG]
        self.codes_accepted_by_serial[serial] += 1
        self.accepted_codes.append({"serial": serial, "step": step, "at": at})
        del self.accepted_codes[:-MAX_ACCEPTED_LOG]

    def code_refused(self, serial: str = "", *, reused: bool = False) -> None:
        """A refused code; `reused` when it matched a time step the device had already accepted."""
        self.codes_refused += 1
        if serial:
            self.codes_refused_by_serial[serial] += 1
            if reused:
                self.codes_reused_by_serial[serial] += 1

    def to_json(self) -> dict[str, Any]:
        calls = {"AssumeRole": 0, "GetSessionToken": 0, "GetCallerIdentity": 0, **self.calls}
        return {
            "calls": calls,
            "calls_by_caller": dict(self.calls_by_caller),
            "calls_by_target": dict(self.calls_by_target),
            "codes_accepted": self.codes_accepted,
            "codes_refused": self.codes_refused,
            "codes_accepted_by_serial": dict(self.codes_accepted_by_serial),
            "codes_refused_by_serial": dict(self.codes_refused_by_serial),
            "codes_reused_by_serial": dict(self.codes_reused_by_serial),
            "accepted_codes": list(self.accepted_codes),
            "errors": dict(self.errors),
            "issued": self.issued,
        }
