"""What AWS sees of a tenant: decided by the identity (the platform admin) and the operator, never the tenant.

All tenants reach STS as one IAM user, so AWS tells them apart only by what the operator sends:
the session name, session tags, SourceIdentity and ExternalId. This module turns an identity's
`TenantPolicy` and a credential's request into those parameters, or refuses the request. Pure:
no I/O, no hvac or boto3, and nothing from `api/`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vault_sts_operator.domain.allowlist import NAME_PLACEHOLDER, NAMESPACE_PLACEHOLDER, placeholder_problems
from vault_sts_operator.domain.delivery import DEFAULT_DELIVERY_MODES, SECRET, mode_problems, mode_refusal
from vault_sts_operator.domain.errors import InvalidSpecError, NotAllowedError
from vault_sts_operator.domain.session_name import qualified_session_name

# Reserved session tags, set by the operator on every tagged session and marked transitive so
# they survive role chaining (and cannot be overridden later in the chain).
RESERVED_TAG_PREFIX = "vaultsts:"
NAMESPACE_TAG = "vaultsts:namespace"
CREDENTIAL_TAG = "vaultsts:credential"
RESERVED_TAG_KEYS = (NAMESPACE_TAG, CREDENTIAL_TAG)
AWS_TAG_PREFIX = "aws:"  # AWS reserves it for its own keys

MFA_MODES = ("session", "direct")
# What an identity allows when it lists no limits.mfaModes: `direct` spends a code of a device every tenant shares
# at each issue, so it must be the admin's explicit choice.
DEFAULT_MFA_MODES = ("session",)
SOURCE_IDENTITY_MAX = 64
_SOURCE_IDENTITY_INVALID = re.compile(r"[^\w+=,.@-]", re.ASCII)
EXTERNAL_ID_PATTERN = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
PLACEHOLDERS = (NAMESPACE_PLACEHOLDER, NAME_PLACEHOLDER)


@dataclass(frozen=True)
class TenantPolicy:
    """The identity's rules for what its tenants may send to AWS. Defaults are the safe ones."""

    reserved_tags: bool = False  # send vaultsts:namespace / vaultsts:credential on every session
    tenant_tag_keys: tuple[str, ...] = ()  # tag keys a tenant may set (case-insensitive); none by default
    source_identity: bool = False  # send SourceIdentity <namespace>@<name>
    external_id: str = ""  # template; ${namespace} and ${name} are replaced
    external_ids: tuple[tuple[str, str], ...] = ()  # namespace -> ExternalId (literal), wins over external_id
    allow_tenant_external_id: bool = False  # a tenant's spec.externalId is used where the identity sets none
    max_duration_seconds: int | None = None  # cap on a credential's durationSeconds
    mfa_modes: tuple[str, ...] = DEFAULT_MFA_MODES  # mfa modes tenants may ask for
    delivery_modes: tuple[str, ...] = DEFAULT_DELIVERY_MODES  # how tenants may receive credentials

    @property
    def sends_identity_fields(self) -> bool:
        """Does the identity itself send tags, SourceIdentity or an ExternalId to STS?"""
        return self.reserved_tags or self.source_identity or bool(self.external_id or self.external_ids)


@dataclass(frozen=True)
class SessionParameters:
    """What the operator sends to STS AssumeRole to say who the tenant is."""

    session_name: str
    tags: tuple[tuple[str, str], ...] = ()
    transitive_tag_keys: tuple[str, ...] = ()
    source_identity: str = ""
    external_id: str = ""


def policy_problems(policy: TenantPolicy) -> list[str]:
    """What is wrong with an identity's policy itself (checked when the identity is parsed)."""
    problems = []
    for key in policy.tenant_tag_keys:
        lowered = key.lower()
        if lowered.startswith(RESERVED_TAG_PREFIX) or lowered.startswith(AWS_TAG_PREFIX):
            problems.append(f"sessionTags.tenantKeys: {key!r} is reserved (vaultsts: and aws: keys are "
                            "never the tenant's)")
    for mode in policy.mfa_modes:
        if mode not in MFA_MODES:
            problems.append(f"limits.mfaModes: {mode!r} is not session or direct")
    problems += mode_problems(policy.delivery_modes)
    if policy.external_id:
        problems += [f"externalId.value: {p}" for p in placeholder_problems(policy.external_id,
                                                                             placeholders=PLACEHOLDERS, globs=False)]
    for namespace, value in policy.external_ids:
        if "${" in value:
            problems.append(f"externalId.byNamespace[{namespace}]: {value!r} is used as it is: placeholders belong "
                            "in externalId.value")
    for template in (policy.external_id, *(v for _, v in policy.external_ids)):
        if template and not EXTERNAL_ID_PATTERN.fullmatch(_fill(template, "ns", "name")):
            problems.append(f"externalId: {template!r} does not make a valid ExternalId (2-1224 of [\\w+=,.@:/-])")
    return problems


def _fill(template: str, namespace: str, name: str) -> str:
    return template.replace("${namespace}", namespace).replace("${name}", name)


def source_identity(namespace: str, name: str) -> str:
    """`<namespace>@<name>`, at most 64 characters; a name cut short ends in a hash of the full name.

    The namespace (at most 63 characters, no `@`) is never cut, so it is always the text before `@`.
    """
    value = _SOURCE_IDENTITY_INVALID.sub("-", f"{namespace}@{name}")
    if len(value) <= SOURCE_IDENTITY_MAX:
        return value
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    room = SOURCE_IDENTITY_MAX - len(namespace) - 1
    if room < len(digest) + 2:
        return value[:SOURCE_IDENTITY_MAX]
    return f"{value[:len(namespace) + 1 + room - len(digest) - 1]}+{digest}"


def _tenant_tags(policy: TenantPolicy, identity: str, tags: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    allowed = {k.lower() for k in policy.tenant_tag_keys}
    seen: set[str] = set()
    result = []
    for key, value in tags:
        lowered = key.lower()
        if lowered.startswith(RESERVED_TAG_PREFIX) or lowered.startswith(AWS_TAG_PREFIX):
            raise InvalidSpecError(
                f"spec.tags: key {key!r} is reserved: the operator sets {', '.join(RESERVED_TAG_KEYS)} "
                "(tag keys are case-insensitive), and aws: keys belong to AWS")
        if lowered in seen:
            raise InvalidSpecError(f"spec.tags: key {key!r} appears twice (tag keys are case-insensitive)")
        seen.add(lowered)
        if lowered not in allowed:
            # The allowed keys are the platform's policy, not the tenant's to enumerate: the message names
            # only the key that was refused (the MFAIdentity, which platform admins read, lists them).
            raise NotAllowedError(
                f"spec.tags: key {key!r} is not one MFAIdentity {identity!r} lets tenants set "
                "(ask the platform team)")
        result.append((key, value))
    return result


def _external_id(policy: TenantPolicy, identity: str, namespace: str, name: str, tenant_value: str) -> str:
    by_namespace = dict(policy.external_ids)
    chosen = by_namespace.get(namespace) or (_fill(policy.external_id, namespace, name) if policy.external_id else "")
    if chosen:
        if tenant_value and tenant_value != chosen:
            raise NotAllowedError(f"spec.externalId: MFAIdentity {identity!r} sets the ExternalId for this "
                                  "namespace; leave spec.externalId out")
        return chosen
    if tenant_value and not policy.allow_tenant_external_id:
        raise NotAllowedError(f"spec.externalId: MFAIdentity {identity!r} does not let tenants choose the "
                              "ExternalId (externalId.allowTenantValue is false)")
    if tenant_value and any(value == tenant_value for ns, value in policy.external_ids if ns != namespace):
        # The confused deputy again: another namespace's assigned ExternalId, sent by this one.
        raise NotAllowedError(f"spec.externalId: MFAIdentity {identity!r} reserves this ExternalId for "
                              "another tenant; leave spec.externalId out or choose another")
    return tenant_value


def session_parameters(
    policy: TenantPolicy,
    *,
    identity: str,
    namespace: str,
    name: str,
    requested_session_name: str,
    tenant_tags: Mapping[str, str] | Iterable[tuple[str, str]],
    tenant_external_id: str,
    duration_seconds: int,
    mfa_mode: str,
    delivery_mode: str = SECRET,
) -> SessionParameters:
    """The parameters to send, or InvalidSpecError / NotAllowedError. Nothing is sent when this raises."""
    refusal = mode_refusal(delivery_mode, policy.delivery_modes, identity)
    if refusal:
        raise NotAllowedError(refusal)
    if mfa_mode not in policy.mfa_modes:
        raise NotAllowedError(f"spec.mfa: {mfa_mode} is not allowed by MFAIdentity {identity!r} "
                              f"(limits.mfaModes: {', '.join(policy.mfa_modes) or 'none'})")
    if policy.max_duration_seconds is not None and duration_seconds > policy.max_duration_seconds:
        raise NotAllowedError(f"spec.durationSeconds {duration_seconds} is above the "
                              f"{policy.max_duration_seconds} s that MFAIdentity {identity!r} allows "
                              "(limits.maxDurationSeconds)")
    pairs = tenant_tags.items() if isinstance(tenant_tags, Mapping) else tenant_tags
    tags = _tenant_tags(policy, identity, pairs)
    transitive: tuple[str, ...] = ()
    if policy.reserved_tags or tags:
        # Tenant tags never travel alone: the reserved ones say whose session it is.
        tags = [(NAMESPACE_TAG, namespace), (CREDENTIAL_TAG, name), *tags]
        transitive = RESERVED_TAG_KEYS
    return SessionParameters(
        session_name=qualified_session_name(namespace, requested_session_name or name),
        tags=tuple(tags),
        transitive_tag_keys=transitive,
        source_identity=source_identity(namespace, name) if policy.source_identity else "",
        external_id=_external_id(policy, identity, namespace, name, tenant_external_id),
    )
