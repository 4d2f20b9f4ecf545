"""RoleSessionName rules: 2-64 characters of [A-Za-z0-9_+=,.@-]."""

from __future__ import annotations

import re

_INVALID = re.compile(r"[^\w+=,.@-]", re.ASCII)
MAX_LENGTH = 64


def default_session_name(namespace: str, name: str) -> str:
    """`<namespace>-<name>`, made valid for STS (invalid characters become '-', cut to 64)."""
    candidate = _INVALID.sub("-", f"{namespace}-{name}")[:MAX_LENGTH]
    return candidate if len(candidate) >= 2 else candidate.ljust(2, "-")
