"""The STS actions and their rules: authentication, MFA, trust, durations. No locking, no I/O."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from . import errors, mfa, sigv4
from . import policy as iam_policy
from .counters import Counters
from .model import (
    ROLE_ARN,
    Credential,
    Kind,
    Principal,
    State,
    random_id,
    random_secret,
    random_session_token,
)
from .model import trusts as role_trusts
from .validation import (
    ARN_CHARS,
    EXTERNAL_ID,
    POLICY_CHARS,
    ROLE_SESSION_NAME,
    SOURCE_IDENTITY,
    Checker,
)

ACTIONS = ("AssumeRole", "GetSessionToken", "GetCallerIdentity")
CHAINING_LIMIT = 3600
ROLE_DEFAULT_DURATION = 3600
SESSION_DEFAULT_DURATION = 43200
PACKED_LIMIT = 2048

Params = Mapping[str, str]


@dataclass(frozen=True)
class AssumedRole:
    credential: Credential
    assumed_role_id: str
    arn: str
    packed_policy_size: int
    source_identity: str | None


def authenticate(state: State, request: sigv4.SignedRequest, wall_now: float, now: float,
                 service: str = "sts") -> Credential:
    """The caller's credential, from its SigV4 signature scoped to `service` (``iam`` for MFA enrolment)."""
    header = request.headers.get("authorization")
    if not header:
        raise errors.missing_authentication()
    auth = sigv4.parse_authorization(header)
    cred = state.credentials.get(auth.access_key_id)
    if cred is None:
        raise errors.invalid_client_token()
    token = request.headers.get("x-amz-security-token")
    if cred.temporary:
        if token is None or not hmac.compare_digest(token, cred.session_token or ""):
            raise errors.invalid_client_token()
    elif token is not None:
        raise errors.invalid_client_token()
    sigv4.verify(request, auth, cred.secret_access_key, wall_now, service=service)
    if cred.expired(now):
        raise errors.expired_token()
    return cred


def _prove_mfa(
    state: State,
    *,
    principal: Principal,
    serial: str | None,
    code: str | None,
    now: float,
    counters: Counters,
) -> float | None:
    """Check SerialNumber + TokenCode. Returns the proof time, or None when neither was sent."""
    if serial is None and code is None:
        return None
    if serial is None or code is None:
        raise errors.access_denied(errors.MFA_INCOMPLETE)
    device = state.devices.get(serial)
    if device is None or principal.user is None or device.owner != principal.user.name:
        counters.code_refused(serial)
        raise errors.access_denied(errors.MFA_UNKNOWN_SERIAL)
    result = mfa.verify_and_consume(device, code, now)
    if not result.accepted or result.step is None:
        counters.code_refused(serial, reused=result.outcome is mfa.Outcome.REUSED)
        raise errors.access_denied(errors.MFA_INVALID_CODE)
    counters.code_accepted(serial, result.step, now, code)
    return now


def _issue(
    state: State,
    *,
    kind: Kind, account: str, partition: str, now: float, duration: int, counters: Counters
) -> Credential:
    akid = random_id("ASIA")
    while akid in state.credentials:
        akid = random_id("ASIA")
    cred = Credential(
        access_key_id=akid,
        secret_access_key=random_secret(),
        kind=kind,
        account=account,
        partition=partition,
        session_token=random_session_token(),
        issued_at=now,
        expiration=float(math.floor(now + duration)),
    )
    state.prune(now)
    state.credentials[akid] = cred
    counters.issued += 1
    return cred


def get_caller_identity(state: State, cred: Credential) -> Principal:
    return state.principal(cred)


def get_session_token(
    state: State, cred: Credential, params: Params, now: float, counters: Counters
) -> Credential:
    check = Checker(params)
    duration = check.integer("DurationSeconds", "durationSeconds", low=900, high=129600)
    serial, code = check.mfa()
    check.done()
    if cred.temporary:
        raise errors.access_denied(errors.SESSION_CANNOT_GET_SESSION_TOKEN)
    principal = state.principal(cred)
    proof = _prove_mfa(
        state, principal=principal, serial=serial, code=code, now=now, counters=counters
    )
    session = _issue(
        state,
        kind=Kind.SESSION,
        account=principal.account,
        partition=principal.partition,
        now=now,
        duration=duration or SESSION_DEFAULT_DURATION,
        counters=counters,
    )
    session.user_name = cred.user_name
    session.mfa_authenticated = proof is not None
    session.mfa_auth_time = proof
    return session


def _member_list(params: Params, name: str, suffix: str = "") -> list[str]:
    values: list[str] = []
    index = 1
    while True:
        key = f"{name}.member.{index}" + (f".{suffix}" if suffix else "")
        if key not in params:
            return values
        values.append(params[key])
        index += 1


def _tags(params: Params) -> list[tuple[str, str]]:
    keys = _member_list(params, "Tags", "Key")
    values = _member_list(params, "Tags", "Value")
    return list(zip(keys, values + [""] * (len(keys) - len(values)), strict=True))


def _packed_size(policy: str | None, policy_arns: list[str], tags: list[tuple[str, str]]) -> int:
    size = len(policy or "") + sum(len(a) for a in policy_arns) + sum(len(k) + len(v) for k, v in tags)
    return math.ceil(size * 100 / PACKED_LIMIT)


def _validate_assume_role(params: Params) -> tuple[str, str, int | None, str | None, str | None]:
    check = Checker(params)
    role_arn = check.string("RoleArn", "roleArn", required=True, min_len=20, max_len=2048, pattern=ARN_CHARS)
    session_name = check.string(
        "RoleSessionName", "roleSessionName", required=True, min_len=2, max_len=64, pattern=ROLE_SESSION_NAME
    )
    duration = check.integer("DurationSeconds", "durationSeconds", low=900, high=43200)
    serial, code = check.mfa()
    check.string("ExternalId", "externalId", min_len=2, max_len=1224, pattern=EXTERNAL_ID)
    check.string("Policy", "policy", min_len=1, pattern=POLICY_CHARS)
    check.string("SourceIdentity", "sourceIdentity", min_len=2, max_len=256, pattern=SOURCE_IDENTITY)
    for index, arn in enumerate(_member_list(params, "PolicyArns", "arn"), start=1):
        field = f"policyArns.{index}.member.arn"
        check.string("", field, min_len=20, max_len=2048, pattern=ARN_CHARS, value=arn)
    tags = _tags(params)
    check.count("tags", len(tags), max_items=50)
    for index, (key, value) in enumerate(tags, start=1):
        check.tag_key(f"tags.{index}.member.key", key)
        check.tag_value(f"tags.{index}.member.value", value)
    transitive = _member_list(params, "TransitiveTagKeys")
    check.count("transitiveTagKeys", len(transitive), max_items=50)
    check.done()
    assert role_arn is not None and session_name is not None  # required, so set once done() passed
    if ROLE_ARN.fullmatch(role_arn) is None:
        raise errors.validation_error(f"{role_arn} is invalid")
    return role_arn, session_name, duration, serial, code


def _trust_context(
    principal: Principal,
    params: Params,
    tags: list[tuple[str, str]],
    transitive: list[str],
    mfa_time: float | None,
    now: float,
) -> iam_policy.RequestContext:
    cred = principal.credential
    values: dict[str, str] = {"aws:principalarn": principal.trust_arn}
    for name, key in (("ExternalId", "sts:externalid"), ("RoleSessionName", "sts:rolesessionname"),
                      ("SourceIdentity", "sts:sourceidentity")):
        if params.get(name) is not None:
            values[key] = params[name]
    if cred.kind is Kind.ASSUMED_ROLE and cred.source_identity is not None:
        values["aws:sourceidentity"] = cred.source_identity
    if mfa_time is not None:
        values["aws:multifactorauthpresent"] = "true"
        values["aws:multifactorauthage"] = str(int(now - mfa_time))
    elif cred.temporary:
        values["aws:multifactorauthpresent"] = "false"
    root = f"arn:{principal.partition}:iam::{principal.account}:root"
    return iam_policy.RequestContext(
        principal_arns=(principal.trust_arn, root, principal.account),
        principal_arn=principal.trust_arn,
        values=values,
        multi={"aws:tagkeys": [k for k, _ in tags], "sts:transitivetagkeys": list(transitive)},
        request_tags={k.lower(): v for k, v in tags},
        principal_tags={k.lower(): v for k, v in cred.session_tags.items()},
    )


def assume_role(
    state: State, cred: Credential, params: Params, now: float, counters: Counters
) -> AssumedRole:
    role_arn, session_name, duration, serial, code = _validate_assume_role(params)
    policy = params.get("Policy")
    if policy is not None:
        try:
            json.loads(policy)
        except ValueError:
            raise errors.STSError(
                "MalformedPolicyDocument", "The policy is not in the valid JSON format.", 400
            ) from None
    policy_arns = _member_list(params, "PolicyArns", "arn")
    tags = _tags(params)
    packed = _packed_size(policy, policy_arns, tags)
    if packed > 100:
        raise errors.STSError(
            "PackedPolicyTooLarge",
            f"Packed policy consumes {packed}% of allotted space, please use smaller policy.",
            400,
        )
    principal = state.principal(cred)
    role = state.roles.get(role_arn)
    transitive = _member_list(params, "TransitiveTagKeys")
    source_identity = params.get("SourceIdentity")
    # A chained session keeps the caller's transitive tags and SourceIdentity.
    inherited_tags = {k: v for k, v in cred.session_tags.items()
                      if k.lower() in {t.lower() for t in cred.transitive_tag_keys}}
    inherited_source = cred.source_identity if cred.kind is Kind.ASSUMED_ROLE else None
    clash = sorted(k for k, _ in tags if k.lower() in {i.lower() for i in inherited_tags})
    if clash:
        # AWS documents that this fails ("If you pass a session tag with the same key as an inherited tag, the
        # operation fails") but not with which code; InvalidParameterValue is the emulator's choice.
        raise errors.STSError(
            "InvalidParameterValue",
            f"The session tag key {clash[0]} is already set as an inherited transitive tag and cannot be overridden.",
            400,
        )
    # Configuration problems come before the MFA check so they never spend a code.
    if role is None:
        raise errors.not_authorized(principal.arn, role_arn)
    if role.trust_policy is None:
        if not role_trusts(role, principal):
            raise errors.not_authorized(principal.arn, role_arn)
    else:
        pending_mfa = now if serial is not None and code is not None else principal.mfa_context_time
        context = _trust_context(principal, params, tags, transitive, pending_mfa, now)
        needed = ["sts:AssumeRole"]
        if tags or transitive or inherited_tags:
            needed.append("sts:TagSession")
        if source_identity is not None or inherited_source is not None:
            needed.append("sts:SetSourceIdentity")
        for action in needed:
            if not iam_policy.allows(role.trust_policy, action, context):
                raise errors.not_authorized(principal.arn, role_arn, action)
    if role.external_id is not None and params.get("ExternalId") != role.external_id:
        raise errors.not_authorized(principal.arn, role_arn)
    requested = duration if duration is not None else ROLE_DEFAULT_DURATION
    if requested > role.max_session_duration:
        raise errors.validation_error(errors.EXCEEDS_MAX_SESSION)
    if cred.temporary and requested > CHAINING_LIMIT:
        raise errors.validation_error(errors.EXCEEDS_CHAINING)
    proof = _prove_mfa(
        state, principal=principal, serial=serial, code=code, now=now, counters=counters
    )
    mfa_time = proof if proof is not None else principal.mfa_context_time
    if role.require_mfa or role.max_mfa_age_seconds is not None:
        if mfa_time is None:
            raise errors.not_authorized(principal.arn, role_arn)
        if role.max_mfa_age_seconds is not None and now - mfa_time > role.max_mfa_age_seconds:
            raise errors.not_authorized(principal.arn, role_arn)
    issued = _issue(
        state,
        kind=Kind.ASSUMED_ROLE,
        account=role.account,
        partition=role.partition,
        now=now,
        duration=min(requested, role.lifetime_cap_seconds) if role.lifetime_cap_seconds else requested,
        counters=counters,
    )
    issued.role_arn = role.arn
    issued.role_id = role.role_id
    issued.session_name = session_name
    issued.mfa_authenticated = mfa_time is not None
    issued.mfa_auth_time = mfa_time
    issued.source_identity = inherited_source if inherited_source is not None else source_identity
    issued.session_tags = {**inherited_tags, **dict(tags)}
    issued.transitive_tag_keys = sorted({*(k for k in inherited_tags), *transitive})
    return AssumedRole(
        credential=issued,
        assumed_role_id=f"{role.role_id}:{session_name}",
        arn=role.session_arn(session_name),
        packed_policy_size=packed,
        source_identity=issued.source_identity,
    )
