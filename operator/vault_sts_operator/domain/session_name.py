"""RoleSessionName rules: 2-64 characters of [A-Za-z0-9_+=,.@-], and the namespace always readable from it.

Every session name the operator sends is `<namespace>@<rest>`. Namespace names hold no `@`
(they are DNS labels), so the text before the first `@` is always the namespace: CloudTrail
shows who asked, and a trust policy can demand `"sts:RoleSessionName": "team-a@*"`. A tenant's
`roleSessionName` becomes `<rest>` (kept as is when it already starts with `<namespace>@`);
the default `<rest>` is the credential's name.
"""

from __future__ import annotations

import re

_INVALID = re.compile(r"[^\w+=,.@-]", re.ASCII)
MAX_LENGTH = 64
SEPARATOR = "@"


def _valid(text: str) -> str:
    return _INVALID.sub("-", text)


def qualified_session_name(namespace: str, requested: str) -> str:
    """`<namespace>@<requested>`, made valid for STS and cut to 64 characters (the namespace is never cut)."""
    prefix = f"{namespace}{SEPARATOR}"
    rest = requested[len(prefix):] if requested.startswith(prefix) else requested
    candidate = _valid(prefix + rest)[:MAX_LENGTH]
    return candidate if len(candidate) >= 2 else candidate.ljust(2, "-")
