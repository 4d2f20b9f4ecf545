"""Everything one pass over an AssumedRoleCredential reads, gathered into one frozen value before anything is decided.

`CredentialGatherer.gather` reads, in this order: the clock; the CR's spec, parsed; the problems the API server
would find with the Secret it describes; the MFAIdentity, resolved from the identity catalog; what tenancy would
send STS; the namespace's labels (a request, only when the identity selects namespaces by label); the Secret (a
request, unless this process knows the Secret it last wrote, or the CR is new in session mode); the credentials
kept for this CR by an earlier pass whose write failed. Before each request it asks the pure decision
(`domain.credential_pass.refusal`) whether what it has already refuses the pass, and stops reading if so: a
refused credential costs no request beyond what showed it refused.

The result, `Gathered`, holds the decision's input (`PassInput`) and the objects acting needs (the parsed spec and
identity, the Secret as read). A failed read (the API server unreachable, a Secret of another owner) raises
IssuingError, which the reconciler reports like any failed pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.conditions import find_condition
from vault_sts_operator.api.specs import CredentialSpec, IdentitySpec, parse_credential
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.credential_pass import IdentityAccess, PassInput, refusal
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.domain.errors import IssuingError, NotAllowedError, ServiceAccountConflictError
from vault_sts_operator.domain.kept_credentials import KeptCredentialStore, Owner
from vault_sts_operator.domain.timefmt import parse_time
from vault_sts_operator.outputs.issued_record import read_issued_record
from vault_sts_operator.outputs.secret_manifest import secret_problems
from vault_sts_operator.services.credential_store import PodIdentityStore
from vault_sts_operator.services.issuer import tenant_parameters
from vault_sts_operator.services.secret_writer import SecretWriter

IdentityResolver = Callable[[str], IdentitySpec]  # an MFAIdentity by name, or IdentityNotFoundError


@dataclass(frozen=True, slots=True)
class KnownSecret:
    """The Secret a pass last wrote or read for a CR: enough to decide, and to replace it at its version
    without reading it again (a changed or vanished Secret makes the replace fail; it is then read)."""

    name: str
    resource_version: str
    record: IssuedRecord


@dataclass(frozen=True)
class Gathered:
    """One pass's reads: `facts` for the decision, the rest for acting on it."""

    facts: PassInput
    body: Mapping[str, Any]  # the CR as the controller holds it
    spec: CredentialSpec | None = None  # None: the spec could not be parsed
    identity: IdentitySpec | None = None  # None: not resolved (or not gathered: the pass is refused before it)
    current: dict[str, Any] | None = None  # the Secret as read, or a stub at the known version; None: none
    verified: bool = True  # `current` is a fresh read (False: what this process last wrote)
    known: KnownSecret | None = None  # the Secret for the next pass to trust (None: none known)
    secret_known: bool = False  # the Secret was read or known: `facts.record` is its record (None: no Secret)
    # Mode PodIdentity: `facts.record` describes what this process holds in memory (False: what the status says,
    # after a restart or a failover, or None when an agent asked for credentials this process does not hold).
    held: bool = False

    @property
    def owner(self) -> Owner:
        return self.facts.namespace, self.facts.name, str((self.body.get("metadata") or {}).get("uid"))


def issue_key(identity: IdentitySpec, spec: CredentialSpec) -> str:
    """What a pass asks STS for this credential (identity, role, duration, mode, scope and what tenancy sends):
    kept credentials are written only for the same request. The Secret's shape (name, labels, profile) is not
    part of it: fixing a label refused by an admission rule writes the credentials already issued."""
    shaped = [identity.name, identity.uid, identity.session_key, repr(tenant_parameters(identity, spec)),
              spec.role_arn, str(spec.duration_seconds), spec.mfa_mode, spec.policy, repr(spec.policy_arns)]
    return hashlib.sha256("\x00".join(shaped).encode()).hexdigest()[:32]


class CredentialGatherer:
    def __init__(self, *, kube: KubeGateway, writer: SecretWriter, kept: KeptCredentialStore,
                 clock: Callable[[], datetime], store: PodIdentityStore | None = None) -> None:
        self._store = store
        self._kube = kube
        self._writer = writer
        self._kept = kept
        self._clock = clock

    async def gather(self, body: Mapping[str, Any], resolve: IdentityResolver, *, secret_absent: bool = False,
                     known: KnownSecret | None = None) -> Gathered:
        """What one pass reads (the module says in which order).

        `secret_absent`: the caller knows no Secret was issued for this CR yet (a new CR with an empty status),
        so in session mode the Secret is not read (should one be there after all, the write finds it and reads
        it then; the pass has spent an AssumeRole on the shared session, never a TOTP code of its own). `known`:
        what the previous pass of this process wrote or read; trusted instead of a read when it is the Secret
        the spec names.
        """
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        rotate_request = str((meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION, ""))
        now = self._clock()
        facts = PassInput(namespace=namespace, name=name, now=now, rotate_request=rotate_request)
        try:
            spec = parse_credential(namespace, name, body.get("spec") or {})
        except IssuingError as exc:
            return Gathered(replace(facts, spec_error=exc), body)
        problems = tuple(secret_problems(spec, rotate_request=rotate_request, now=now)) \
            if spec.delivery.writes_secret else ()
        facts = replace(facts, role_arn=spec.role_arn, spec_hash=spec.issuance_hash(), renew_before=spec.renew_before,
                        renew_default_at_least=spec.delivery.renew_default_at_least, secret_problems=problems)
        if not spec.delivery.writes_secret:
            refused = self._pod_identity_refusal(namespace, name)
            if refused is not None:
                return Gathered(replace(facts, spec_error=refused), body, spec)
        identity: IdentitySpec | None = None
        if not facts.secret_problems:
            try:
                identity = resolve(spec.identity_name)
            except IssuingError as exc:
                facts = replace(facts, identity_error=exc)
        if identity is not None:
            try:
                key = issue_key(identity, spec)  # tenant_parameters: tags, ExternalId, limits
            except IssuingError as exc:
                facts = replace(facts, tenancy_error=exc)
            else:
                facts = replace(facts, issue_key=key)
            facts = replace(facts, identity=IdentityAccess(
                identity.name, identity.allowed_namespaces, identity.allowed_role_arns,
                identity.allowed_namespace_labels))
        gathered = Gathered(facts, body, spec, identity)
        if identity is None or refusal(facts) is not None:
            return gathered
        if identity.allowed_namespace_labels:
            facts = replace(facts, namespace_labels=await self._kube.namespace_labels(namespace))
            gathered = replace(gathered, facts=facts)
            if refusal(facts) is not None:
                return gathered
        if not spec.delivery.writes_secret:
            return self._held(gathered)
        return await self._secret(gathered, spec, secret_absent=secret_absent, known=known)

    def _pod_identity_refusal(self, namespace: str, name: str) -> IssuingError | None:
        if self._store is None:
            return NotAllowedError("spec.delivery.mode: PodIdentity is not enabled in this operator "
                                   "(the platform team enables it with the chart's podIdentity.enabled)")
        taken = self._store.conflicts((namespace, name))
        if taken:
            shown = ", ".join(f"{account} (served by {holder})" for account, holder in sorted(taken.items()))
            return ServiceAccountConflictError(
                f"spec.delivery.serviceAccounts: an older AssumedRoleCredential of this namespace serves {shown}")
        return None

    def _held(self, gathered: Gathered) -> Gathered:
        """Mode PodIdentity: the record of the credentials this process holds; else the status's (a restart or a
        failover: nothing is issued before the renewal time unless an agent asks for them)."""
        assert self._store is not None
        key = gathered.owner[:2]
        stored = self._store.get(key, gathered.owner[2])
        if stored is not None:
            record: IssuedRecord | None = stored.record
        elif self._store.is_wanted(key):
            record = None
        else:
            record = status_record(gathered.body, gathered.facts.spec_hash)
        return replace(gathered, facts=replace(gathered.facts, record=record), held=stored is not None,
                       secret_known=True)

    async def _secret(self, gathered: Gathered, spec: CredentialSpec, *, secret_absent: bool,
                      known: KnownSecret | None) -> Gathered:
        """The Secret's record (known, or read) and the kept credentials."""
        kept = self._kept.held(gathered.owner)
        if known is not None and known.name == spec.target.secret_name:
            return replace(gathered, facts=replace(gathered.facts, record=known.record, kept=kept),
                           current={"metadata": {"resourceVersion": known.resource_version}}, verified=False,
                           known=known, secret_known=True)
        skip_read = secret_absent and spec.mfa_mode == "session"
        current = None if skip_read else await self._writer.read(spec, gathered.owner[2])
        record = read_issued_record(((current or {}).get("metadata") or {}).get("annotations"))
        if current is not None and record is not None:
            known = KnownSecret(spec.target.secret_name, str(current["metadata"]["resourceVersion"]), record)
        else:
            known = None
        return replace(gathered, facts=replace(gathered.facts, record=record, kept=kept), current=current,
                       verified=True, known=known, secret_known=not skip_read)


def status_record(body: Mapping[str, Any], spec_hash: str) -> IssuedRecord | None:
    """Mode PodIdentity, after a restart or failover: what the status says was issued for the current spec (Ready
    at the current generation, in this mode), or None. The key id is not in the status (only its fingerprint)."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    ready = find_condition(status.get("conditions"), reasons.READY)
    if ready is None or ready.get("status") != "True" or status.get("observedGeneration") != generation \
            or (status.get("delivery") or {}).get("mode") != "PodIdentity":
        return None
    try:
        return IssuedRecord(issued_at=parse_time(str(status["issuedAt"])),
                            expiration=parse_time(str(status["expiration"])), spec_hash=spec_hash,
                            rotate_request=str(status.get("rotateRequest") or ""), access_key_id="",
                            assumed_role_arn=str(status.get("assumedRoleArn") or ""))
    except (KeyError, ValueError):
        return None
