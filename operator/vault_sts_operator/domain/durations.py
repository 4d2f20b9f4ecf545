"""Go-style durations ("10m", "1h30m", "90s") as used by `renewBefore`."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|m|s))+$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "10m" or "1h30m"; ValueError when malformed."""
    if not _WHOLE.match(text):
        raise ValueError(f"invalid duration {text!r}: use a form such as 90s, 10m or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
