"""Role trust policies: the subset of IAM policy evaluation that AssumeRole needs.

A role made with a trust policy document is evaluated per action the call needs:
`sts:AssumeRole` always, `sts:TagSession` when the call passes session tags or transitive tag keys
(or the caller carries transitive tags), `sts:SetSourceIdentity` when it passes a SourceIdentity
(or the caller carries one). An action is allowed when an Allow statement matches (principal,
action, conditions) and no Deny statement does, as IAM evaluates. Supported: `Principal`
(`"*"` or `{"AWS": ARN | account | [...]}`), `Action` (`sts:AssumeRole`, `sts:TagSession`,
`sts:SetSourceIdentity`, `sts:*`, `*`), and condition operators `StringEquals`, `StringNotEquals`,
`StringEqualsIgnoreCase`, `StringNotEqualsIgnoreCase`, `StringLike`, `StringNotLike`, `Bool`,
`NumericLessThan`, `NumericLessThanEquals`, `NumericGreaterThan`, `NumericGreaterThanEquals`,
`Null`, with `ForAllValues:` / `ForAnyValue:` prefixes and the `IfExists` suffix. Condition keys:
`sts:ExternalId`, `sts:RoleSessionName`, `sts:SourceIdentity`, `sts:TransitiveTagKeys`,
`aws:RequestTag/<key>`, `aws:TagKeys`, `aws:PrincipalTag/<key>`, `aws:SourceIdentity`,
`aws:PrincipalArn`, `aws:MultiFactorAuthPresent`, `aws:MultiFactorAuthAge`. Condition key names
and tag keys in them are case-insensitive, as in IAM. Anything else is refused when the role is
created, so a test never relies on a condition the emulator silently ignores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ACTIONS = ("sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity")
_OPERATORS = {
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike",
    "StringNotLike", "Bool", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan",
    "NumericGreaterThanEquals", "Null",
}
_SINGLE_KEYS = {"sts:externalid", "sts:rolesessionname", "sts:sourceidentity", "aws:sourceidentity",
                "aws:principalarn", "aws:multifactorauthpresent", "aws:multifactorauthage"}
_MULTI_KEYS = {"aws:tagkeys", "sts:transitivetagkeys"}
_TAG_KEY_PREFIXES = ("aws:requesttag/", "aws:principaltag/")


class PolicyError(ValueError):
    """A trust policy the emulator cannot evaluate faithfully."""


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _split_operator(name: str) -> tuple[str, str, bool]:
    """`ForAllValues:StringLikeIfExists` -> ("ForAllValues", "StringLike", True)."""
    qualifier = ""
    if ":" in name:
        qualifier, name = name.split(":", 1)
        if qualifier not in ("ForAllValues", "ForAnyValue"):
            raise PolicyError(f"unsupported condition qualifier {qualifier}")
    if_exists = name.endswith("IfExists")
    if if_exists:
        name = name[: -len("IfExists")]
    if name not in _OPERATORS:
        raise PolicyError(f"unsupported condition operator {name}")
    return qualifier, name, if_exists


def _check_key(key: str) -> None:
    lowered = key.lower()
    if lowered in _SINGLE_KEYS or lowered in _MULTI_KEYS:
        return
    if any(lowered.startswith(p) and len(lowered) > len(p) for p in _TAG_KEY_PREFIXES):
        return
    raise PolicyError(f"unsupported condition key {key}")


def validate(document: Mapping[str, Any]) -> None:
    """Refuse a trust policy with anything the emulator would not evaluate."""
    statements = document.get("Statement")
    if not isinstance(statements, list) or not statements:
        raise PolicyError("trust policy needs a non-empty Statement list")
    for statement in statements:
        if not isinstance(statement, dict):
            raise PolicyError("each Statement must be an object")
        if statement.get("Effect") not in ("Allow", "Deny"):
            raise PolicyError("Effect must be Allow or Deny")
        principal = statement.get("Principal")
        if principal != "*" and not (isinstance(principal, dict) and set(principal) == {"AWS"}):
            raise PolicyError('Principal must be "*" or {"AWS": ...}')
        for action in _as_list(statement.get("Action")):
            if action not in (*ACTIONS, "sts:*", "*"):
                raise PolicyError(f"unsupported Action {action}")
        for operator, block in (statement.get("Condition") or {}).items():
            _split_operator(operator)
            if not isinstance(block, dict):
                raise PolicyError("each condition operator maps keys to values")
            for key in block:
                _check_key(key)


@dataclass(frozen=True)
class RequestContext:
    """What a condition can see about one AssumeRole call."""

    principal_arns: tuple[str, ...]  # the caller as trust policies name it (ARN, account root, account id)
    principal_arn: str
    values: Mapping[str, str]  # single-valued keys, lower-case names
    multi: Mapping[str, Sequence[str]]  # multi-valued keys, lower-case names
    request_tags: Mapping[str, str]  # lower-case key -> value
    principal_tags: Mapping[str, str]  # lower-case key -> value

    def lookup(self, key: str) -> list[str] | None:
        lowered = key.lower()
        if lowered.startswith("aws:requesttag/"):
            value = self.request_tags.get(lowered.split("/", 1)[1])
            return None if value is None else [value]
        if lowered.startswith("aws:principaltag/"):
            value = self.principal_tags.get(lowered.split("/", 1)[1])
            return None if value is None else [value]
        if lowered in self.multi:
            values = list(self.multi[lowered])
            return values if values else None
        value = self.values.get(lowered)
        return None if value is None else [value]


def _like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _one(operator: str, actual: str, expected: str) -> bool:
    if operator in ("StringEquals", "StringNotEquals"):
        return actual == expected
    if operator in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return actual.lower() == expected.lower()
    if operator in ("StringLike", "StringNotLike"):
        return _like(expected, actual)
    if operator == "Bool":
        return actual.lower() == expected.lower()
    a, e = _number(actual), _number(expected)
    if a is None or e is None:
        return False
    return {"NumericLessThan": a < e, "NumericLessThanEquals": a <= e, "NumericGreaterThan": a > e,
            "NumericGreaterThanEquals": a >= e}[operator]


def _condition(operator_name: str, key: str, expected_raw: Any, ctx: RequestContext) -> bool:
    qualifier, operator, if_exists = _split_operator(operator_name)
    expected = [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(expected_raw)]
    actual = ctx.lookup(key)
    if operator == "Null":  # "true": the key must be absent
        return (actual is None) == (expected[0].lower() == "true")
    negated = operator.startswith("StringNot")
    if actual is None:
        if qualifier == "ForAllValues":
            return True  # IAM: ForAllValues over an absent key is true
        return if_exists or negated
    if qualifier == "ForAllValues":
        return all(any(_one(operator, a, e) for e in expected) != negated for a in actual)
    if qualifier == "ForAnyValue":
        return any(any(_one(operator, a, e) for e in expected) != negated for a in actual)
    matched = any(_one(operator, actual[0], e) for e in expected)
    return not matched if negated else matched


def _principal_matches(principal: Any, ctx: RequestContext) -> bool:
    if principal == "*":
        return True
    names = _as_list(principal.get("AWS"))
    return any(n == "*" or n in ctx.principal_arns for n in names)


def _action_matches(actions: Any, action: str) -> bool:
    return any(a in (action, "sts:*", "*") for a in _as_list(actions))


def _statement_matches(statement: Mapping[str, Any], action: str, ctx: RequestContext) -> bool:
    if not _principal_matches(statement.get("Principal"), ctx) or not _action_matches(statement.get("Action"), action):
        return False
    for operator, block in (statement.get("Condition") or {}).items():
        for key, expected in block.items():
            if not _condition(operator, key, expected, ctx):
                return False
    return True


def allows(document: Mapping[str, Any], action: str, ctx: RequestContext) -> bool:
    """IAM's rule for one action: an explicit Deny wins, then an Allow is needed."""
    statements = document.get("Statement") or []
    if any(s.get("Effect") == "Deny" and _statement_matches(s, action, ctx) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and _statement_matches(s, action, ctx) for s in statements)
