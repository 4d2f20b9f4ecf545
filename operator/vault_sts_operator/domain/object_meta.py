"""What the API server refuses in an object's name, labels and annotations: apimachinery's rules, as pure checks.

The same rules as k8s.io/apimachinery's ValidateLabels, ValidateAnnotations and NameIsDNSSubdomain (and Secret's
1 MiB data limit), so a Secret the API server can never accept is refused before anything is spent on it (an STS
call, a TOTP code). Admission webhooks, quotas and RBAC are not modelled here: the API server's 4xx answer for
those is handled where the Secret is written. Each function returns problems as tenant-visible sentences that
quote at most the first characters of a key and never a value.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

Key = tuple[str, str]  # an object's (namespace, name); namespace "" for a cluster-scoped object

DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
TOTAL_ANNOTATION_SIZE_MAX = 256 * 1024  # apimachinery's TotalAnnotationSizeLimitB (bytes of keys and values)
SECRET_DATA_SIZE_MAX = 1024 * 1024  # core/v1 MaxSecretSize (bytes of data, summed over keys)

_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

_QUOTED_MAX = 40


def _quote(text: str) -> str:
    """A key as it may appear in a message: repr, cut to a few dozen characters."""
    return repr(text if len(text) <= _QUOTED_MAX else text[:_QUOTED_MAX] + "...")


def dns_subdomain_problem(name: str) -> str | None:
    if len(name) > DNS1123_SUBDOMAIN_MAX:
        return f"must be at most {DNS1123_SUBDOMAIN_MAX} characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        return ("must be a DNS subdomain: lowercase letters, digits, '-' and '.', starting and ending with a "
                "letter or digit, with no empty or '-'-edged part between dots")
    return None


def qualified_name_problem(key: str) -> str | None:
    """apimachinery's IsQualifiedName: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters."""
    parts = key.split("/")
    if len(parts) > 2:
        return "must be a name with at most one '/' (prefix/name)"
    if len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return "has an empty prefix before '/'"
        problem = dns_subdomain_problem(prefix)
        if problem:
            return f"prefix {problem}"
    else:
        name = parts[0]
    if not name:
        return "has an empty name"
    if len(name) > QUALIFIED_NAME_MAX:
        return f"name part must be at most {QUALIFIED_NAME_MAX} characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return ("name part must consist of letters, digits, '-', '_' or '.', and start and end with a letter or "
                "digit")
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > LABEL_VALUE_MAX:
        return f"must be at most {LABEL_VALUE_MAX} characters"
    if not _LABEL_VALUE.fullmatch(value):
        return "must be empty or consist of letters, digits, '-', '_' or '.', and start and end with a letter or digit"
    return None


def label_problems(labels: Mapping[str, str], where: str) -> list[str]:
    """apimachinery's ValidateLabels."""
    problems = []
    for key, value in labels.items():
        problem = qualified_name_problem(key)
        if problem:
            problems.append(f"{where} key {_quote(key)} {problem}")
        problem = label_value_problem(value)
        if problem:
            problems.append(f"{where} value of {_quote(key)} {problem}")
    return problems


def annotations_size(annotations: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def annotation_problems(annotations: Mapping[str, str], where: str, *, reserved: int = 0) -> list[str]:
    """apimachinery's ValidateAnnotations; `reserved` bytes of the total are needed by annotations added later."""
    problems = []
    for key in annotations:
        problem = qualified_name_problem(key.lower())
        if problem:
            problems.append(f"{where} key {_quote(key)} {problem}")
    size = annotations_size(annotations)
    if size + reserved > TOTAL_ANNOTATION_SIZE_MAX:
        room = TOTAL_ANNOTATION_SIZE_MAX - reserved
        problems.append(f"{where} total {size} bytes (keys and values); the Secret's annotations may hold at most "
                        f"{TOTAL_ANNOTATION_SIZE_MAX} bytes, of which {reserved} are the operator's own: at most "
                        f"{max(room, 0)} bytes remain")
    return problems


def data_size_problem(data: Iterable[tuple[str, str]], where: str) -> str | None:
    size = sum(len(v.encode()) for _k, v in data)
    if size > SECRET_DATA_SIZE_MAX:
        return f"{where}: the Secret's data would be {size} bytes; a Secret holds at most {SECRET_DATA_SIZE_MAX}"
    return None


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    # The namespace interned: the keys of ten thousand credentials held by the cache and the scheduler share a
    # handful of namespace strings instead of one copy each.
    return sys.intern(str(meta.get("namespace") or "")), str(meta.get("name") or "")
