"""The one helper through which conditions are set (cert-manager's habit).

`lastTransitionTime` only moves when the status flips; `observedGeneration` is stamped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from vault_sts_operator.domain.credential_status import StatusReport
from vault_sts_operator.domain.timefmt import format_time

MAX_MESSAGE = 32768  # metav1.Condition's maxLength


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """A new condition list with `type_` set; other conditions are kept as they are. `reason` and `message`
    are never written empty (metav1.Condition requires a reason; the message stands in for an empty one, and is
    cut to metav1.Condition's 32768 characters)."""
    if not reason:
        raise ValueError(f"condition {type_}: the reason must not be empty")
    message = (message or reason)[:MAX_MESSAGE]
    status_text = "True" if status else "False"
    kept: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for cond in conditions or ():
        if cond.get("type") == type_:
            previous = cond
        else:
            kept.append(dict(cond))
    transition = format_time(now)
    if previous is not None and previous.get("status") == status_text and previous.get("lastTransitionTime"):
        transition = str(previous["lastTransitionTime"])
    new: dict[str, Any] = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [*kept, new]


def find_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None


def remove_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> list[dict[str, Any]]:
    """A new condition list without `type_` (kstatus' abnormal-true conditions are removed, not set False)."""
    return [dict(cond) for cond in conditions or () if cond.get("type") != type_]


def apply_report(conditions: Sequence[Mapping[str, Any]] | None, report: StatusReport, *, generation: int | None,
                 now: datetime) -> list[dict[str, Any]]:
    """`conditions` with what `report` (domain/credential_status.py) sets and removes, each through set_condition."""
    result = [dict(cond) for cond in conditions or ()]
    for value in report.conditions:
        result = set_condition(result, type_=value.type, status=value.status, reason=value.reason,
                               message=value.message, generation=generation, now=now)
    for type_ in report.removed:
        result = remove_condition(result, type_)
    return result
