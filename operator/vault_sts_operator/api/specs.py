"""Typed views of the custom resources' specs, parsed from the objects the watches hand over.

The CRD schema refuses most bad input at apply time; these parsers repeat the
checks that matter for safety (so a CR created before a schema change, or with
validation off, still fails with a clear message instead of a crash).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from vault_sts_operator.domain import destinations
from vault_sts_operator.domain.allowlist import placeholder_problems
from vault_sts_operator.domain.delivery import DEFAULT_DELIVERY_MODES, DeliverySpec, delivery_problems
from vault_sts_operator.domain.durations import parse_duration
from vault_sts_operator.domain.errors import InvalidSpecError
from vault_sts_operator.domain.renewal import renew_before_refusal
from vault_sts_operator.domain.session_name import qualified_session_name
from vault_sts_operator.domain.sts_limits import (
    OVERSIZED_SPEC,
    credential_problems,
    oversized_message,
    target_problems,
)
from vault_sts_operator.domain.tenancy import DEFAULT_MFA_MODES, TenantPolicy, policy_problems

MfaMode = Literal["session", "direct"]
CredentialType = Literal["sessionToken", "assumedRole"]

SESSION_MODE_MAX_DURATION = 3600


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    namespace: str
    key: str


@dataclass(frozen=True)
class KubernetesAuth:
    role: str
    mount: str = "kubernetes"


@dataclass(frozen=True)
class AppRoleAuth:
    role_id: str
    secret_id_ref: SecretKeyRef
    mount: str = "approle"


@dataclass(frozen=True)
class TokenAuth:
    token_ref: SecretKeyRef


VaultAuth = KubernetesAuth | AppRoleAuth | TokenAuth


@dataclass(frozen=True)
class ConnectionRules:
    """What the operator's own settings let an MFAIdentity name (docs/security.md).

    `secret_namespaces`: where tokenSecretRef, secretIdRef and caSecretRef may point; empty means
    the operator's own namespace only. `allow_insecure_http`: http:// for Vault and STS, a
    development setting (the local stack sets it); off, such an identity is refused before any call.
    `vault_addresses`: the Vault addresses an identity may name besides the operator's default one
    (always allowed); `sts_endpoints`: the STS endpoints it may name (patterns, domain/destinations.py).
    Anything else is refused before a connection is opened.
    """

    secret_namespaces: tuple[str, ...] = ()
    allow_insecure_http: bool = False
    vault_addresses: tuple[str, ...] = ()
    sts_endpoints: tuple[str, ...] = destinations.AWS_STS_ENDPOINTS

    def allowed_secret_namespaces(self, operator_namespace: str) -> tuple[str, ...]:
        return self.secret_namespaces or (operator_namespace,)


@dataclass(frozen=True)
class VaultConnection:
    address: str
    auth: VaultAuth
    namespace: str = ""
    ca_bundle: str = ""
    ca_secret_ref: SecretKeyRef | None = None


@dataclass(frozen=True)
class KvAccessKey:
    mount: str
    path: str
    access_key_id_key: str = "access_key_id"
    secret_access_key_key: str = "secret_access_key"


@dataclass(frozen=True)
class VaultAwsAccessKey:
    role: str
    mount: str = "aws"
    credential_type: CredentialType = "sessionToken"


AccessKeySource = KvAccessKey | VaultAwsAccessKey


@dataclass(frozen=True)
class TotpSource:
    key: str
    mount: str = "totp"
    period: int = 30


@dataclass(frozen=True)
class IdentitySpec:
    name: str
    uid: str
    vault: VaultConnection
    access_key: AccessKeySource
    mfa_serial: str
    totp: TotpSource
    session_duration: int
    sts_region: str
    sts_endpoint: str
    allowed_namespaces: tuple[str, ...]
    allowed_role_arns: tuple[str, ...]
    allowed_namespace_labels: tuple[tuple[str, str], ...] = ()
    # What tenants may send to AWS, and what the identity sends for them (domain/tenancy.py).
    tenancy: TenantPolicy = field(default_factory=TenantPolicy)

    @property
    def device_key(self) -> str:
        """Identifies the MFA device: code use is serialised per device."""
        return self.mfa_serial

    @property
    def session_key(self) -> str:
        """Changes whenever anything that shapes the MFA session changes."""
        parts = [self.name, self.mfa_serial, repr(self.access_key), self.sts_endpoint, self.sts_region,
                 str(self.session_duration), self.vault.address, self.vault.namespace]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RestartTarget:
    kind: str
    name: str


@dataclass(frozen=True)
class TargetSpec:
    secret_name: str
    profile: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CredentialSpec:
    namespace: str
    name: str
    identity_name: str
    role_arn: str
    role_session_name: str
    duration_seconds: int
    mfa_mode: MfaMode
    target: TargetSpec
    external_id: str = ""
    policy: str = ""
    policy_arns: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    renew_before: timedelta | None = None
    rollout_restart_targets: tuple[RestartTarget, ...] = ()
    delivery: DeliverySpec = field(default_factory=DeliverySpec)

    def issuance_hash(self) -> str:
        """Hash of every field that shapes the issued credentials or the Secret's content.

        Stored on the Secret: when it differs from the live spec, the Secret is reissued.
        renewBefore and rolloutRestartTargets only change scheduling, so they are left out.
        """
        shaped = {
            "identity": self.identity_name, "role": self.role_arn, "session": self.role_session_name,
            "duration": self.duration_seconds, "mfa": self.mfa_mode, "externalId": self.external_id,
            "policy": self.policy, "policyArns": list(self.policy_arns), "tags": list(self.tags),
            "secret": self.target.secret_name, "profile": self.target.profile,
            "labels": sorted(self.target.labels.items()), "annotations": sorted(self.target.annotations.items()),
        }
        if not self.delivery.writes_secret:  # absent for Secrets, so existing Secrets keep their hash
            shaped["delivery"] = self.delivery.mode
        return hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:16]


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    value = mapping.get(key)
    if value in (None, "", {}):
        raise InvalidSpecError(f"{where}.{key} is required")
    return value


def _one_of(mapping: Mapping[str, Any], keys: tuple[str, ...], where: str) -> str:
    present = [k for k in keys if mapping.get(k)]
    if len(present) != 1:
        raise InvalidSpecError(f"{where} needs exactly one of {', '.join(keys)} (found {len(present)})")
    return present[0]


def _secret_ref(raw: Mapping[str, Any], where: str, default_namespace: str,
                allowed_namespaces: tuple[str, ...] | None = None) -> SecretKeyRef:
    """A Secret reference, confined to `allowed_namespaces` (None: anywhere, for the operator's own flags)."""
    ref = SecretKeyRef(
        name=str(_require(raw, "name", where)),
        namespace=str(raw.get("namespace") or default_namespace),
        key=str(_require(raw, "key", where)),
    )
    if allowed_namespaces is not None and ref.namespace not in allowed_namespaces:
        raise InvalidSpecError(
            f"{where}.namespace {ref.namespace!r} is not allowed: the operator reads Secrets named by an "
            f"MFAIdentity only in {', '.join(allowed_namespaces)}")
    return ref


def check_url_scheme(url: str, where: str, *, allow_insecure_http: bool) -> None:
    """https:// only, unless the operator runs with its development setting (http:// allowed)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "https" or (scheme == "http" and allow_insecure_http):
        return
    if scheme == "http":
        raise InvalidSpecError(
            f"{where} uses http://: plain HTTP is allowed only when the operator runs with "
            "--allow-insecure-http (a development setting); use https://")
    raise InvalidSpecError(f"{where} must be an https:// URL")


def parse_vault_auth(raw: Mapping[str, Any], where: str, default_namespace: str,
                     allowed_namespaces: tuple[str, ...] | None = None) -> VaultAuth:
    kind = _one_of(raw, ("kubernetes", "appRole", "tokenSecretRef"), where)
    body = raw[kind]
    if kind == "kubernetes":
        return KubernetesAuth(role=str(_require(body, "role", f"{where}.kubernetes")),
                              mount=str(body.get("mount") or "kubernetes"))
    if kind == "appRole":
        return AppRoleAuth(
            role_id=str(_require(body, "roleId", f"{where}.appRole")),
            secret_id_ref=_secret_ref(_require(body, "secretIdRef", f"{where}.appRole"),
                                      f"{where}.appRole.secretIdRef", default_namespace, allowed_namespaces),
            mount=str(body.get("mount") or "approle"),
        )
    return TokenAuth(token_ref=_secret_ref(body, f"{where}.tokenSecretRef", default_namespace, allowed_namespaces))


def parse_vault_connection(
    raw: Mapping[str, Any] | None, default: VaultConnection | None, default_namespace: str,
    rules: ConnectionRules | None = None,
) -> VaultConnection:
    """The identity's Vault connection, with the operator's defaults filling what it leaves out.

    The default auth (the operator's token or its ServiceAccount JWT) and the default namespace and CA
    belong to the default address only: an identity naming another address must name its own auth,
    or the operator's credentials would be sent to an address the platform admin did not configure.
    """
    raw = raw or {}
    rules = rules or ConnectionRules()
    own_address = str(raw.get("address") or "").rstrip("/")
    address = own_address or (default.address if default else "")
    if not address:
        raise InvalidSpecError("spec.vault.address is required (the operator has no default Vault address)")
    check_url_scheme(address, "spec.vault.address" if own_address else "the operator's default Vault address",
                     allow_insecure_http=rules.allow_insecure_http)
    at_default = default is not None and destinations.same_destination(address, default.address)
    if not at_default:
        _check_destination(address, rules.vault_addresses, "spec.vault.address",
                           "allowedDestinations.vaultAddresses (--allowed-vault-address)")
    allowed = rules.allowed_secret_namespaces(default_namespace)
    if raw.get("auth"):
        auth = parse_vault_auth(raw["auth"], "spec.vault.auth", default_namespace, allowed)
        if default is not None and not at_default:
            _refuse_default_secrets(auth, default.auth)
    elif default is not None and at_default:
        auth = default.auth
    elif default is not None:
        raise InvalidSpecError(
            "spec.vault.auth is required: spec.vault.address names a Vault other than the operator's default, "
            "and the operator's default auth is sent only to its default address")
    else:
        raise InvalidSpecError("spec.vault.auth is required (the operator has no default Vault auth)")
    ca_ref = raw.get("caSecretRef")
    # The default's namespace and CA belong to the default address only.
    base = default if at_default else None
    return VaultConnection(
        address=address,
        auth=auth,
        namespace=str(raw.get("namespace") or (base.namespace if base else "")),
        ca_bundle=str(raw.get("caBundle") or (base.ca_bundle if base else "")),
        ca_secret_ref=_secret_ref(ca_ref, "spec.vault.caSecretRef", default_namespace, allowed) if ca_ref else None,
    )


def _check_destination(url: str, allowed: tuple[str, ...], where: str, setting: str) -> None:
    """Refuse a destination the platform did not list. The message names the field, not the list: the
    identity author learns that the address is not allowed, not which others are."""
    try:
        ok = destinations.allowed(url, allowed)
    except destinations.DestinationError as exc:
        raise InvalidSpecError(f"{where}: {exc}") from None
    if not ok:
        raise InvalidSpecError(
            f"{where} is not a destination the platform allows: the operator connects only to the addresses its "
            f"chart lists in {setting}")


def _secret_refs(auth: VaultAuth) -> set[tuple[str, str]]:
    if isinstance(auth, TokenAuth):
        return {(auth.token_ref.namespace, auth.token_ref.name)}
    if isinstance(auth, AppRoleAuth):
        return {(auth.secret_id_ref.namespace, auth.secret_id_ref.name)}
    return set()


def _refuse_default_secrets(auth: VaultAuth, default_auth: VaultAuth) -> None:
    """The Secret holding the operator's default Vault credentials opens the default Vault: its content is
    sent nowhere else, or any allowed Vault could replay it there."""
    shared = _secret_refs(auth) & _secret_refs(default_auth)
    if shared:
        raise InvalidSpecError(
            "spec.vault.auth names the Secret that holds the operator's default Vault credentials; they are "
            "sent only to the operator's default Vault address")


def _bool(raw: Any, where: str) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise InvalidSpecError(f"{where} must be true or false")
    return raw


def parse_tenant_policy(spec: Mapping[str, Any]) -> TenantPolicy:
    """spec.sessionTags, spec.sourceIdentity, spec.externalId and spec.limits of an MFAIdentity."""
    tags = spec.get("sessionTags") or {}
    source = spec.get("sourceIdentity") or {}
    external = spec.get("externalId") or {}
    limits = spec.get("limits") or {}
    max_duration = limits.get("maxDurationSeconds")
    modes = limits.get("mfaModes")
    delivery_modes = limits.get("deliveryModes")
    policy = TenantPolicy(
        reserved_tags=_bool(tags.get("reserved"), "spec.sessionTags.reserved"),
        tenant_tag_keys=tuple(str(k) for k in tags.get("tenantKeys") or ()),
        source_identity=_bool(source.get("enabled"), "spec.sourceIdentity.enabled"),
        external_id=str(external.get("value") or ""),
        external_ids=tuple(sorted((str(k), str(v)) for k, v in (external.get("byNamespace") or {}).items())),
        allow_tenant_external_id=_bool(external.get("allowTenantValue"), "spec.externalId.allowTenantValue"),
        max_duration_seconds=int(max_duration) if max_duration is not None else None,
        mfa_modes=tuple(str(m) for m in modes) if modes is not None else DEFAULT_MFA_MODES,
        delivery_modes=tuple(str(m) for m in delivery_modes) if delivery_modes is not None
        else DEFAULT_DELIVERY_MODES,
    )
    problems = policy_problems(policy)
    if problems:
        raise InvalidSpecError("spec." + "; spec.".join(problems))
    return policy


def parse_identity(
    name: str, uid: str, spec: Mapping[str, Any], *, default_vault: VaultConnection | None,
    operator_namespace: str, rules: ConnectionRules | None = None,
) -> IdentitySpec:
    rules = rules or ConnectionRules()
    vault = parse_vault_connection(spec.get("vault"), default_vault, operator_namespace, rules)
    access_raw = _require(spec, "accessKey", "spec")
    kind = _one_of(access_raw, ("kv", "vaultAWS"), "spec.accessKey")
    access_key: AccessKeySource
    if kind == "kv":
        kv = access_raw["kv"]
        access_key = KvAccessKey(
            mount=str(kv.get("mount") or "secret"),
            path=str(_require(kv, "path", "spec.accessKey.kv")),
            access_key_id_key=str(kv.get("accessKeyIdKey") or "access_key_id"),
            secret_access_key_key=str(kv.get("secretAccessKeyKey") or "secret_access_key"),
        )
    else:
        va = access_raw["vaultAWS"]
        ctype = str(va.get("credentialType") or "sessionToken")
        if ctype not in ("sessionToken", "assumedRole"):
            raise InvalidSpecError(
                f"spec.accessKey.vaultAWS.credentialType {ctype!r} is not sessionToken or assumedRole")
        access_key = VaultAwsAccessKey(
            role=str(_require(va, "role", "spec.accessKey.vaultAWS")),
            mount=str(va.get("mount") or "aws"),
            credential_type="sessionToken" if ctype == "sessionToken" else "assumedRole",
        )
    mfa = spec.get("mfa") or {}
    needs_mfa = not (isinstance(access_key, VaultAwsAccessKey) and access_key.credential_type == "assumedRole")
    serial = str(mfa.get("serialNumber") or "")
    totp_raw = mfa.get("totp") or {}
    if needs_mfa:
        if not serial:
            raise InvalidSpecError("spec.mfa.serialNumber is required")
        _require(totp_raw, "key", "spec.mfa.totp")
    totp = TotpSource(key=str(totp_raw.get("key") or ""), mount=str(totp_raw.get("mount") or "totp"),
                      period=int(totp_raw.get("period") or 30))
    session = spec.get("session") or {}
    duration = int(session.get("durationSeconds") or 43200)
    if not 900 <= duration <= 129600:
        raise InvalidSpecError(f"spec.session.durationSeconds {duration} is outside 900..129600")
    sts = spec.get("sts") or {}
    region = str(sts.get("region") or "us-east-1")
    if not destinations.valid_region(region):
        raise InvalidSpecError(f"spec.sts.region {region[:64]!r} is not an AWS region name (e.g. eu-west-1)")
    if sts.get("endpoint"):
        check_url_scheme(str(sts["endpoint"]), "spec.sts.endpoint", allow_insecure_http=rules.allow_insecure_http)
    # What the operator will connect to: the named endpoint, else AWS's own for the region.
    _check_destination(str(sts.get("endpoint") or destinations.public_sts_endpoint(region)), rules.sts_endpoints,
                       "spec.sts.endpoint" if sts.get("endpoint") else f"AWS's STS endpoint for region {region}",
                       "allowedDestinations.stsEndpoints (--allowed-sts-endpoint)")
    role_patterns = tuple(str(a) for a in spec.get("allowedRoleArns") or ())
    pattern_problems = [p for pattern in role_patterns for p in placeholder_problems(pattern)]
    if pattern_problems:
        raise InvalidSpecError("spec.allowedRoleArns: " + "; ".join(pattern_problems))
    selector = (spec.get("allowedNamespaceSelector") or {}).get("matchLabels") or {}
    tenancy = parse_tenant_policy(spec)
    if not needs_mfa and tenancy.sends_identity_fields:
        raise InvalidSpecError(
            "spec.accessKey.vaultAWS.credentialType assumedRole: Vault calls AssumeRole itself and cannot send "
            "session tags, SourceIdentity or an ExternalId; use sessionToken or kv, or leave sessionTags.reserved, "
            "sourceIdentity and externalId out")
    return IdentitySpec(
        name=name, uid=uid, vault=vault, access_key=access_key, mfa_serial=serial, totp=totp,
        session_duration=duration,
        sts_region=region,
        sts_endpoint=str(sts.get("endpoint") or ""),
        allowed_namespaces=tuple(str(n) for n in spec.get("allowedNamespaces") or ()),
        allowed_role_arns=role_patterns,
        allowed_namespace_labels=tuple(sorted((str(k), str(v)) for k, v in selector.items())),
        tenancy=tenancy,
    )


def parse_credential(namespace: str, name: str, spec: Mapping[str, Any]) -> CredentialSpec:
    if OVERSIZED_SPEC in spec:  # the controller kept a marker, not a spec too large to hold (services/controller.py)
        raise InvalidSpecError(oversized_message(spec[OVERSIZED_SPEC]))
    identity_ref = _require(spec, "identityRef", "spec")
    mode = str(spec.get("mfa") or "session")
    if mode not in ("session", "direct"):
        raise InvalidSpecError(f"spec.mfa {mode!r} is not session or direct")
    duration = int(spec.get("durationSeconds") or 3600)
    limit = SESSION_MODE_MAX_DURATION if mode == "session" else 43200
    if not 900 <= duration <= limit:
        raise InvalidSpecError(
            f"spec.durationSeconds {duration} is outside 900..{limit} for mfa: {mode}"
            + (" (AWS caps role sessions made from MFA session credentials at one hour)" if mode == "session" else "")
        )
    renew_raw = spec.get("renewBefore")
    try:
        renew_before = timedelta(seconds=parse_duration(str(renew_raw))) if renew_raw else None
    except ValueError as exc:
        raise InvalidSpecError(f"spec.renewBefore: {exc}") from None
    refusal = renew_before_refusal(renew_before, timedelta(seconds=duration))
    if refusal:
        raise InvalidSpecError(refusal)
    target = spec.get("target") or {}
    credential = CredentialSpec(
        namespace=namespace, name=name,
        identity_name=str(_require(identity_ref, "name", "spec.identityRef")),
        role_arn=str(_require(spec, "roleArn", "spec")),
        # Always `<namespace>@...`: the namespace can be read back from every session (domain/session_name.py).
        role_session_name=qualified_session_name(namespace, str(spec.get("roleSessionName") or name)),
        duration_seconds=duration,
        mfa_mode="direct" if mode == "direct" else "session",
        external_id=str(spec.get("externalId") or ""),
        policy=str(spec.get("policy") or ""),
        policy_arns=tuple(str(a) for a in spec.get("policyArns") or ()),
        tags=tuple(sorted((str(k), str(v)) for k, v in (spec.get("tags") or {}).items())),
        target=TargetSpec(
            secret_name=str(target.get("secretName") or name),
            profile=str(target.get("profile") or "default"),
            labels={str(k): str(v) for k, v in (target.get("labels") or {}).items()},
            annotations={str(k): str(v) for k, v in (target.get("annotations") or {}).items()},
        ),
        renew_before=renew_before,
        rollout_restart_targets=tuple(
            RestartTarget(kind=str(t.get("kind")), name=str(t.get("name")))
            for t in spec.get("rolloutRestartTargets") or ()
        ),
        delivery=_delivery(spec.get("delivery") or {}),
    )
    _check_sts_limits(namespace, spec, credential)
    _check_delivery(spec, credential)
    return credential


def _delivery(raw: Mapping[str, Any]) -> DeliverySpec:
    if not isinstance(raw, Mapping):
        raise InvalidSpecError("spec.delivery must be an object")
    accounts = raw.get("serviceAccounts") or ()
    if not isinstance(accounts, list | tuple):
        raise InvalidSpecError("spec.delivery.serviceAccounts must be a list of ServiceAccount names")
    return DeliverySpec(mode=str(raw.get("mode") or "Secret"), service_accounts=tuple(str(a) for a in accounts))


def _check_delivery(spec: Mapping[str, Any], credential: CredentialSpec) -> None:
    problems = delivery_problems(credential.delivery, duration_seconds=credential.duration_seconds,
                                 renew_before=credential.renew_before, has_target=bool(spec.get("target")),
                                 has_restart_targets=bool(credential.rollout_restart_targets))
    if problems:
        raise InvalidSpecError("spec." + "; spec.".join(problems))


def _check_sts_limits(namespace: str, spec: Mapping[str, Any], credential: CredentialSpec) -> None:
    """AWS's and Kubernetes' limits (domain/sts_limits.py), as the CRD states them, before anything is read or sent
    (a credential created before the CRD had them, or with validation off)."""
    problems = credential_problems(
        namespace=namespace, role_arn=credential.role_arn, role_session_name=str(spec.get("roleSessionName") or ""),
        external_id=credential.external_id, policy=credential.policy, policy_arns=credential.policy_arns,
        tags=credential.tags,
    ) + target_problems(secret_name=credential.target.secret_name, profile=credential.target.profile,
                        labels=credential.target.labels, annotations=credential.target.annotations,
                        restart_targets=len(credential.rollout_restart_targets))
    if problems:  # the first few: a tenant's 48 bad tags make no readable condition
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidSpecError("; ".join(problems[:5]) + more)
