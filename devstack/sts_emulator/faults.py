"""Injected faults: throttling, 5xx and latency, for the next N calls or until cleared."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    THROTTLE = "throttle"
    SERVER_ERROR = "5xx"
    LATENCY = "latency"


@dataclass
class Fault:
    kind: FaultKind
    action: str | None = None  # None: every STS action
    count: int | None = None  # None: until cleared
    latency_s: float = 0.0
    status: int = 500  # for 5xx: 500 InternalFailure or 503 ServiceUnavailable
    # The RoleArn (AssumeRole) or SerialNumber (GetSessionToken) the fault is for; None: every call. Tests
    # that share the emulator with other identities' background traffic aim their faults with it.
    target: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Fault:
        kind = FaultKind(str(body.get("kind")))
        action = body.get("action")
        count = body.get("count")
        latency = float(body.get("latency_s", 1.0 if kind is FaultKind.LATENCY else 0.0))
        status = int(body.get("status", 500))
        target = body.get("target")
        if target is not None and not isinstance(target, str):
            raise ValueError("target must be a string")
        if action is not None and not isinstance(action, str):
            raise ValueError("action must be a string")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer")
        if latency < 0:
            raise ValueError("latency_s must not be negative")
        if status not in (500, 502, 503, 504):
            raise ValueError("status must be 500, 502, 503 or 504")
        return cls(kind=kind, action=action, count=count, latency_s=latency, status=status,
                   target=target)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "action": self.action,
            "count": self.count,
            "latency_s": self.latency_s,
            "status": self.status,
            "target": self.target,
        }


@dataclass
class FaultBook:
    faults: list[Fault]

    def take(self, action: str, target: str = "") -> Fault | None:
        """The first fault that applies to ``action`` on ``target``; spends one of its count."""
        for fault in self.faults:
            if fault.action is not None and fault.action != action:
                continue
            if fault.target is not None and fault.target != target:
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
            return fault
        return None
