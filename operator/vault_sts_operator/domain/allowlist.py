"""May this namespace and role ARN use this identity? Pure checks over the allow-lists.

Patterns are globs with two wildcards: `*` (any run of characters) and `?` (one character), neither
of which crosses `/`. So `role/app-*` matches `role/app-billing` but not `role/app-legacy/PowerUser`
(an IAM path); write `role/app-legacy/*` to allow a path. No character classes (`[...]`): the
CRD refuses them. `${namespace}` in a role pattern stands for the credential's namespace, so
`arn:aws:iam::123456789012:role/${namespace}-*` maps each namespace to its own roles.

Namespace patterns use the same globs: `team-a*` matches `team-a`, `team-ab` and `team-a-dev`.
List exact names (no `*`) or select namespaces by the `kubernetes.io/metadata.name` label to
allow exactly one namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

NAMESPACE_PLACEHOLDER = "${namespace}"


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    # Hand-written rather than fnmatch: fnmatch's `*` crosses `/` and it knows `[...]` classes.
    parts = []
    for char in pattern:
        if char == "*":
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def glob_match(value: str, pattern: str) -> bool:
    """Does `value` match `pattern` (`*` and `?` within one `/`-separated segment)?"""
    return _compile(pattern).fullmatch(value) is not None


def expand_namespace(pattern: str, namespace: str) -> str:
    """`pattern` with `${namespace}` replaced (namespace names hold no glob characters)."""
    return pattern.replace(NAMESPACE_PLACEHOLDER, namespace)


def _matches(value: str, patterns: Iterable[str], namespace: str = "") -> bool:
    return any(glob_match(value, expand_namespace(p, namespace)) for p in patterns)


def refusal(
    *,
    identity: str,
    namespace: str,
    role_arn: str,
    allowed_namespaces: Iterable[str],
    allowed_role_arns: Iterable[str],
    namespace_selected: bool = False,
) -> str | None:
    """Why the request is refused, or None when it is allowed.

    An empty allow-list allows nobody. `namespace_selected` is True when the identity's namespace
    label selector matched.
    """
    if not (namespace_selected or _matches(namespace, allowed_namespaces)):
        return f"namespace {namespace!r} is not in allowedNamespaces of MFAIdentity {identity!r}"
    if not _matches(role_arn, allowed_role_arns, namespace):
        return f"role {role_arn} is not in allowedRoleArns of MFAIdentity {identity!r} for namespace {namespace!r}"
    return None
