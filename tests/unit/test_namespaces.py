"""domain/namespaces.py keeps kopf's namespace-pattern rule exactly (what `--namespace` meant when kopf ran the
operator): every case below was also checked against kopf 1.45's own `match_namespace` while kopf was installed
(commit bfa57e7); the expected answers are written out, so the table stays the test now that kopf is gone."""

from __future__ import annotations

import pytest

from vault_sts_operator.domain.namespaces import matches_pattern, namespace_matcher

CASES = [  # (pattern, namespace, served)
    ("team", "team", True),
    ("team", "team-a", False),
    ("team-*", "team-a", True),
    ("team-*", "team-", True),
    ("team-*", "team", False),
    ("team-?", "team-a", True),
    ("team-?", "team-ab", False),
    ("team-[ab]", "team-b", True),
    ("team-[ab]", "team-c", False),
    ("team-[!ab]", "team-c", True),  # fnmatch's negated set, not an exclusion
    ("team-[!ab]", "team-a", False),
    ("*", "anything", True),
    ("!kube-*", "default", True),  # an exclusion first implies a catch-all before it
    ("!kube-*", "kube-system", False),
    ("team-*, !team-x", "team-a", True),
    ("team-*, !team-x", "team-x", False),
    ("team-*,!team-x", "team-x", False),  # spaces are optional
    ("  team-*  ,  !team-x  ", "team-x", False),
    ("  team-*  ,  !team-x  ", "team-y", True),
    ("myapp-*, !*-pr-*, *pr-123", "myapp-test", True),  # kopf's documented examples
    ("myapp-*, !*-pr-*, *pr-123", "myapp-pr-123", True),
    ("myapp-*, !*-pr-*, *pr-123", "myapp-pr-456", False),
    ("myapp-*, !*-pr-*, *pr-123", "otherapp-pr-123", False),  # not matched by the first glob
    ("!*-pr-*, *pr-123", "otherapp-pr-123", True),
    ("!*-pr-*, *pr-123", "myapp-pr-456", False),
    ("!*-pr-*, *pr-123", "anyapp-anything", True),
    ("a, b", "b", False),  # a later inclusion re-matches only what the first glob matched
    ("a, b", "a", True),
    ("!!a", "a", False),  # every leading ! is stripped
    ("!!a", "b", True),
    ("a, !a, a", "a", True),
    ("", "", True),  # an empty glob matches only the empty name
    ("", "x", False),
    (",", "x", False),
    ("!", "x", True),
    ("!", "", False),
    ("Team", "team", False),  # case-sensitive (POSIX)
    ("a*, ", "ab", True),
]


@pytest.mark.parametrize(("pattern", "namespace", "served"), CASES)
def test_the_rule_answers_as_written(pattern: str, namespace: str, served: bool) -> None:
    assert matches_pattern(namespace, pattern) is served


def test_several_patterns_serve_the_union() -> None:
    serves = namespace_matcher(["team-*, !team-x", "ops"])
    assert [ns for ns in ("team-a", "team-x", "ops", "other") if serves(ns)] == ["team-a", "ops"]
    assert not namespace_matcher([])("anything")
