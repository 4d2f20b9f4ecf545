"""May this namespace and role ARN use this identity? Pure checks over the allow-lists.

Patterns are globs with two wildcards: `*` (any run of characters) and `?` (one character), neither
of which crosses `/`. So `role/app-*` matches `role/app-billing` but not `role/app-legacy/PowerUser`
(an IAM path); write `role/app-legacy/*` to allow a path. No character classes (`[...]`): the
CRD refuses them. `${namespace}` in a role pattern stands for the credential's namespace, so
`arn:aws:iam::123456789012:role/${namespace}/*` (an IAM path per namespace) or
`arn:aws:iam::123456789012:role/${namespace}_*` maps each namespace to its own roles.

A placeholder must end where no value of it can go on (`placeholder_problems`): `role/${namespace}-*`
is refused, because for namespace `team` it matches `role/team-a-billing`, a role of namespace
`team-a`. Namespaces are DNS labels (`[a-z0-9-]`) and credential names DNS subdomains (`[a-z0-9.-]`),
so a placeholder may be followed by `/`, the end, or a character no value of it holds (`_`, `@`, `+`,
`=`, `,`, and `.` after `${namespace}`); and no glob may stand before it in its `/` segment
(`role/*${namespace}_x` lets `team` match `role/a-team_x`). ExternalId templates follow the same rule.

Namespace patterns use the same globs: `team-a*` matches `team-a`, `team-ab` and `team-a-dev`.
List exact names (no `*`) or select namespaces by the `kubernetes.io/metadata.name` label to
allow exactly one namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

NAMESPACE_PLACEHOLDER = "${namespace}"
NAME_PLACEHOLDER = "${name}"
# The characters a placeholder's value may hold: a namespace is a DNS label, a credential's name a DNS
# subdomain (RFC 1123, as Kubernetes validates them).
_VALUE_CHARS = {
    NAMESPACE_PLACEHOLDER: frozenset("abcdefghijklmnopqrstuvwxyz0123456789-"),
    NAME_PLACEHOLDER: frozenset("abcdefghijklmnopqrstuvwxyz0123456789-."),
}
GLOB_CHARS = "*?"
_ANY_PLACEHOLDER = re.compile(r"\$\{[^}]*\}?")


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


def placeholder_problems(template: str, *, placeholders: tuple[str, ...] = (NAMESPACE_PLACEHOLDER,),
                         globs: bool = True) -> list[str]:
    """Why `template` could give two tenants the same value (or match another tenant's), or [] when it cannot.

    Each placeholder must be followed by the end, `/` or a character no value of it holds, and (with
    `globs`) no `*` or `?` may stand before it in its `/`-separated segment. Then the text of every
    expansion tells its namespace (and name) back, so no two tenants' values meet."""
    problems = []
    for found in _ANY_PLACEHOLDER.finditer(template):
        placeholder = found.group()
        if placeholder not in placeholders:
            problems.append(f"{template!r}: unknown placeholder {placeholder!r} (known: {', '.join(placeholders)})")
            continue
        after = template[found.end():found.end() + 1]
        if after and after != "/" and (after in _VALUE_CHARS[placeholder] or after in GLOB_CHARS or after == "$"):
            what = "a glob" if after in GLOB_CHARS else "another placeholder" if after == "$" else \
                f"a character a {placeholder[2:-1]} may contain"
            problems.append(
                f"{template!r}: {placeholder} is followed by {after!r} ({what}), so one tenant's value could match "
                f"another's (namespace 'team' would reach 'team-a'); end the text with {placeholder}, or follow it "
                f"with '/' (an IAM path) or a separator no {placeholder[2:-1]} contains "
                f"({_separators(placeholder)})")
        if globs:
            segment = template[template.rfind("/", 0, found.start()) + 1:found.start()]
            if any(ch in GLOB_CHARS for ch in segment):
                problems.append(f"{template!r}: a glob stands before {placeholder} in the same path segment, so "
                                f"one namespace's pattern matches another's roles (role/*{placeholder}_x lets "
                                "'team' match role/a-team_x); put the placeholder first in its segment, or no glob")
    return problems


def _separators(placeholder: str) -> str:
    return ", ".join(f"'{ch}'" for ch in "._@+=," if ch not in _VALUE_CHARS[placeholder])


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


# The one namespace label tenants cannot set: the API server writes it from the name (Kubernetes >= 1.22).
TRUSTED_NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def selector_warnings(labels: Iterable[tuple[str, str]]) -> list[str]:
    """Warnings for an identity whose allowedNamespaceSelector relies on labels a tenant may be able to set.

    Tools that delegate namespace administration (Capsule tenants, HNC subnamespaces, Rancher projects) often
    let a tenant label its own namespaces; such a label then admits the tenant to the identity."""
    others = sorted(key for key, _ in labels if key != TRUSTED_NAMESPACE_LABEL)
    if not others:
        return []
    return [f"allowedNamespaceSelector matches on {', '.join(others)}: anyone who may label a namespace "
            f"(a Capsule, HNC or Rancher tenant may) can admit it to this identity; prefer "
            f"{TRUSTED_NAMESPACE_LABEL}, which only the API server sets"]

