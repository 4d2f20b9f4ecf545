"""May this namespace and role ARN use this identity? Pure checks over the allow-lists."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase


def _matches(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


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

    An empty allow-list allows nobody. Patterns are shell-style globs (`app-*`).
    `namespace_selected` is True when the identity's namespace label selector matched.
    """
    if not (namespace_selected or _matches(namespace, allowed_namespaces)):
        return f"namespace {namespace!r} is not in allowedNamespaces of MFAIdentity {identity!r}"
    if not _matches(role_arn, allowed_role_arns):
        return f"role {role_arn} is not in allowedRoleArns of MFAIdentity {identity!r}"
    return None
