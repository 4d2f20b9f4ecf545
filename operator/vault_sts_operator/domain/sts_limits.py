"""AWS STS's own limits on what a credential sends, checked before anything is read or sent.

The CRD refuses the same things at apply time (crds/vaultsts.io_assumedrolecredentials.yaml); these checks
repeat them for a credential created before a schema change, or with validation off, so that it ends as
`InvalidSpec` with a clear message and spends no TOTP code, Vault request or STS call. The limits are AWS's
(the AssumeRole shapes of botocore's STS model, docs/REFERENCE): 2-64 characters of `[\\w+=,.@-]` for a
session name, 20-2048 for an ARN, at most 50 session tags (keys 1-128, values 0-256 characters of
`[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]`), a session policy of 1-2048 characters of `[\\t\\n\\r\\x20-\\xFF]`, at most 10
managed policy ARNs, an ExternalId of 2-1224 characters of `[\\w+=,.@:/-]`.

Every function returns a list of problems (empty when the value is fine); messages name the field and the
limit, never the value itself beyond its length (a tag value or a policy may be someone's secret).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping

# AWS's limits (AssumeRole).
MAX_SESSION_TAGS = 50
RESERVED_TAG_COUNT = 2  # vaultsts:namespace and vaultsts:credential (domain/tenancy.py), sent with tenant tags
MAX_TENANT_TAGS = MAX_SESSION_TAGS - RESERVED_TAG_COUNT
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
MAX_POLICY = 2048
MAX_POLICY_ARNS = 10
MIN_ARN, MAX_ARN = 20, 2048
MIN_SESSION_NAME, MAX_SESSION_NAME = 2, 64
MIN_EXTERNAL_ID, MAX_EXTERNAL_ID = 2, 1224

# Partitions as the CRD's patterns name them; role paths and names as IAM allows them (path up to 512, name 64).
ROLE_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}", re.ASCII)
POLICY_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:iam::([0-9]{12}|aws):policy/[\w+=,.@/-]+", re.ASCII)
SESSION_NAME_CHARS = re.compile(r"[\w+=,.@-]*", re.ASCII)
EXTERNAL_ID_CHARS = re.compile(r"[\w+=,.@:/-]*", re.ASCII)
POLICY_CHARS = re.compile(r"[\t\n\r\x20-\xff]*")
_TAG_PUNCTUATION = frozenset("_.:/=+-@")


def _tag_char(char: str) -> bool:
    """`[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]`: letters, separators (spaces) and numbers of any script, and `_.:/=+-@`."""
    return char in _TAG_PUNCTUATION or unicodedata.category(char)[0] in "LZN"


def tag_problems(tags: Iterable[tuple[str, str]], *, limit: int = MAX_TENANT_TAGS) -> list[str]:
    """At most `limit` tags (AWS: 50 per session, two of them the operator's own), keys 1-128 and values 0-256
    characters of STS's tag charset."""
    pairs = list(tags)
    problems: list[str] = []
    if len(pairs) > limit:
        problems.append(f"spec.tags has {len(pairs)} tags; at most {limit} (STS takes {MAX_SESSION_TAGS} per session, "
                        f"{RESERVED_TAG_COUNT} of them the operator's own)")
    for index, (key, value) in enumerate(pairs):
        shown = repr(key) if len(key) <= MAX_TAG_KEY and all(map(_tag_char, key)) else f"#{index + 1}"
        if not 1 <= len(key) <= MAX_TAG_KEY:
            problems.append(f"spec.tags: key {shown} is {len(key)} characters; STS takes 1-{MAX_TAG_KEY}")
        elif not all(map(_tag_char, key)):
            problems.append(f"spec.tags: key {shown} has a character STS refuses "
                            "(letters, digits, spaces and _.:/=+-@ only)")
        if len(value) > MAX_TAG_VALUE:
            problems.append(f"spec.tags: the value of {shown} is {len(value)} characters; STS takes at most "
                            f"{MAX_TAG_VALUE}")
        elif not all(map(_tag_char, value)):
            problems.append(f"spec.tags: the value of {shown} has a character STS refuses "
                            "(letters, digits, spaces and _.:/=+-@ only)")
    return problems


def session_policy_problems(policy: str) -> list[str]:
    """An inline session policy: a JSON object of 1-2048 characters (STS's limit is on the parameter as sent,
    whitespace included) of tab, newline, carriage return and U+0020-U+00FF."""
    if not policy:
        return []
    if len(policy) > MAX_POLICY:
        return [f"spec.policy is {len(policy)} characters; STS takes at most {MAX_POLICY} (whitespace included: "
                "send it compact)"]
    if not POLICY_CHARS.fullmatch(policy):
        return ["spec.policy has a character STS refuses (tab, newline, carriage return and U+0020-U+00FF only)"]
    try:
        document = json.loads(policy)
    except json.JSONDecodeError as exc:
        return [f"spec.policy is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"]
    except RecursionError:
        return ["spec.policy nests too deeply to be a policy document"]
    if not isinstance(document, dict):
        return ["spec.policy must be a JSON object (a policy document: {\"Version\": ..., \"Statement\": [...]})"]
    return []


def policy_arn_problems(arns: Iterable[str]) -> list[str]:
    items = list(arns)
    problems: list[str] = []
    if len(items) > MAX_POLICY_ARNS:
        problems.append(f"spec.policyArns has {len(items)} entries; STS takes at most {MAX_POLICY_ARNS}")
    for index, arn in enumerate(items):
        if not MIN_ARN <= len(arn) <= MAX_ARN:
            problems.append(f"spec.policyArns[{index}] is {len(arn)} characters; an ARN has {MIN_ARN}-{MAX_ARN}")
        elif not POLICY_ARN.fullmatch(arn):
            problems.append(f"spec.policyArns[{index}] is not a managed policy ARN "
                            "(arn:aws:iam::<12-digit account or aws>:policy/<path and name>)")
    return problems


def role_arn_problems(arn: str) -> list[str]:
    if not MIN_ARN <= len(arn) <= MAX_ARN:
        return [f"spec.roleArn is {len(arn)} characters; an ARN has {MIN_ARN}-{MAX_ARN}"]
    if not ROLE_ARN.fullmatch(arn):
        return ["spec.roleArn is not a role ARN (arn:aws:iam::<12-digit account>:role/<path and name>)"]
    return []


def session_name_room(namespace: str) -> int:
    """How many characters a tenant's roleSessionName may have after the `<namespace>@` the operator adds."""
    return MAX_SESSION_NAME - len(namespace) - 1


def session_name_problems(namespace: str, requested: str) -> list[str]:
    """A tenant's spec.roleSessionName: STS's charset, and short enough for `<namespace>@<name>` to fit 64
    characters (the default, the credential's name, is cut instead: the tenant did not choose it)."""
    if not requested:
        return []
    if not SESSION_NAME_CHARS.fullmatch(requested):
        return ["spec.roleSessionName has a character STS refuses (letters, digits and _+=,.@- only)"]
    prefix = f"{namespace}@"
    rest = requested.removeprefix(prefix)
    room = session_name_room(namespace)
    if len(rest) > room:
        return [f"spec.roleSessionName is {len(rest)} characters; sent as '{prefix}<name>' it must fit STS's "
                f"{MAX_SESSION_NAME}, so at most {room} in this namespace"]
    if len(prefix + rest) < MIN_SESSION_NAME:
        return [f"spec.roleSessionName is too short; STS takes {MIN_SESSION_NAME}-{MAX_SESSION_NAME} characters"]
    return []


def external_id_problems(external_id: str) -> list[str]:
    if not external_id:
        return []
    if not MIN_EXTERNAL_ID <= len(external_id) <= MAX_EXTERNAL_ID:
        return [f"spec.externalId is {len(external_id)} characters; STS takes {MIN_EXTERNAL_ID}-{MAX_EXTERNAL_ID}"]
    if not EXTERNAL_ID_CHARS.fullmatch(external_id):
        return ["spec.externalId has a character STS refuses (letters, digits and _+=,.@:/- only)"]
    return []


def credential_problems(*, namespace: str, role_arn: str, role_session_name: str, external_id: str, policy: str,
                        policy_arns: Iterable[str], tags: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[str]:
    """Every STS limit a credential's spec can break, in the order of the fields."""
    pairs = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
    return [*role_arn_problems(role_arn), *session_name_problems(namespace, role_session_name),
            *external_id_problems(external_id), *session_policy_problems(policy), *policy_arn_problems(policy_arns),
            *tag_problems(pairs)]


# --- Kubernetes' limits on the Secret's metadata, and the CRD's bounds on what a tenant can make large -------------
# Label values at most 63 characters, keys a qualified name: an optional DNS-subdomain prefix (253) + '/' + a name
# (63). Annotations: Kubernetes allows 256 KiB in total (keys and values); the CRD allows 32 x 4096 characters of
# values (128 KiB, plus at most 32 x 317 of keys), half of that: the operator adds its own annotations to the
# Secret, and every pass holds the spec in memory (services/controller.py).
MAX_LABELS = 32
MAX_ANNOTATIONS = 32
MAX_QUALIFIED_NAME = 253 + 1 + 63
MAX_LABEL_VALUE = 63
MAX_ANNOTATION_VALUE = 4096
MAX_SECRET_NAME = 253
MAX_PROFILE = 64
MAX_RESTART_TARGETS = 20
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
QUALIFIED_NAME = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)

# A spec whose compact JSON (UTF-8) is larger than this is not held by the controller: a marker takes its place
# and the pass reports InvalidSpec. Under the CRD's limits an ASCII spec is at most about 205 KB (annotations
# 32 x (317 + 4096), policyArns 10 x 2048, tags 48 x (128 + 256), labels 32 x (317 + 63), the rest a few KB);
# 320 KiB leaves room for non-ASCII text and JSON escapes, and bounds what one credential costs in memory.
MAX_SPEC_BYTES = 320 * 1024
OVERSIZED_SPEC = "vaultsts.io/oversized"  # the marker's key: no field of the CRD's schema, so never a real spec


def oversized_message(size: object) -> str:
    return (f"spec is {size} bytes as JSON; the operator holds at most {MAX_SPEC_BYTES} per credential "
            f"(the CRD's limits: at most {MAX_ANNOTATIONS} target.annotations of {MAX_ANNOTATION_VALUE} characters, "
            f"{MAX_LABELS} target.labels): make target.annotations or target.labels smaller")


def _metadata_problems(field: str, entries: Mapping[str, str], *, limit: int, max_value: int,
                       value_syntax: re.Pattern[str] | None) -> list[str]:
    problems: list[str] = []
    if len(entries) > limit:
        problems.append(f"spec.{field} has {len(entries)} entries; at most {limit}")
    for index, (key, value) in enumerate(entries.items()):
        key_ok = len(key) <= MAX_QUALIFIED_NAME and QUALIFIED_NAME.fullmatch(key) is not None
        shown = repr(key) if key_ok else f"#{index + 1}"
        if not key_ok:
            problems.append(f"spec.{field}: key {shown} is not a Kubernetes key "
                            f"([prefix/]name: a DNS subdomain and a name of at most 63 characters)")
        if len(value) > max_value:
            problems.append(f"spec.{field}: the value of {shown} is {len(value)} characters; at most {max_value}")
        elif value_syntax is not None and not value_syntax.fullmatch(value):
            problems.append(f"spec.{field}: the value of {shown} is not a label value "
                            "(letters, digits, -_. inside, a letter or digit at each end)")
    return problems


def target_problems(*, secret_name: str, profile: str, labels: Mapping[str, str], annotations: Mapping[str, str],
                    restart_targets: int) -> list[str]:
    """What the CRD bounds about the Secret and the restarts; the Secret's write is the final judge of the rest."""
    problems: list[str] = []
    if len(secret_name) > MAX_SECRET_NAME:
        problems.append(f"spec.target.secretName is {len(secret_name)} characters; at most {MAX_SECRET_NAME}")
    if len(profile) > MAX_PROFILE:
        problems.append(f"spec.target.profile is {len(profile)} characters; at most {MAX_PROFILE}")
    problems += _metadata_problems("target.labels", labels, limit=MAX_LABELS, max_value=MAX_LABEL_VALUE,
                                   value_syntax=LABEL_VALUE)
    problems += _metadata_problems("target.annotations", annotations, limit=MAX_ANNOTATIONS,
                                   max_value=MAX_ANNOTATION_VALUE, value_syntax=None)
    if restart_targets > MAX_RESTART_TARGETS:
        problems.append(f"spec.rolloutRestartTargets has {restart_targets} entries; at most {MAX_RESTART_TARGETS}")
    return problems
