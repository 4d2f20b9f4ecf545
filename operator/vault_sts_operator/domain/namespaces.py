"""Which namespaces a `--namespace` pattern serves.

A pattern is a comma-separated list of globs (spaces around each are ignored), matched with `fnmatch`
(so `*`, `?` and `[...]`). A glob starting with `!` excludes. Read left to right: the first glob decides the
initial match (an exclusion first implies a catch-all `*` before it); each exclusion then un-matches; each
later inclusion matches again only a namespace the first glob matched. So `"app-*, !*-pr-*, *-pr-1"` serves
`app-x` and `app-pr-1` but not `app-pr-2`, nor `other-pr-1` (never matched by `app-*`).

Several patterns (several `--namespace` flags) serve the union of what each serves.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable


def matches_pattern(namespace: str, pattern: str) -> bool:
    globs = [glob.strip() for glob in pattern.split(",")]
    if globs[0].startswith("!"):
        globs.insert(0, "*")
    matched = first = fnmatch.fnmatch(namespace, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            matched = matched and not fnmatch.fnmatch(namespace, glob.lstrip("!"))
        else:
            matched = matched or (first and fnmatch.fnmatch(namespace, glob))
    return matched


def namespace_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether a namespace is served by any of `patterns`."""
    kept = tuple(patterns)
    return lambda namespace: any(matches_pattern(namespace, pattern) for pattern in kept)
