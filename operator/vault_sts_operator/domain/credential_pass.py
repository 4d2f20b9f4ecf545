"""What one pass over an AssumedRoleCredential does, decided from what was gathered: a pure function.

`PassInput` is everything a pass read (services/gatherer.py fills it), reduced to what the decision needs;
`decide_pass` turns it into a `Plan`; services/reconciler.py carries the plan out and reports it.
cert-manager's `internal/controller/certificates/policies` (an `Input` gathered once, then policy
checks over it) is the model.

The plan, first match wins:

1. `Refuse(error)`: the spec could not be parsed; the Secret it describes would be refused by the API server
   whatever it held (checked before anything is read or spent); the MFAIdentity does not exist; the
   namespace or the role is not on the identity's allow-lists (by name, or by the namespace's labels
   when the identity selects namespaces by label); what the pass would tell STS about the tenant is
   refused (tenancy, `limits.mfaModes`).
2. `Issue(trigger, kept)`: no Secret issued yet, the spec changed, the credentials expired, a rotation
   was requested (honoured once the Secret is `rotate_min_interval` old) or the renewal time came
   (domain/decisions.py). `kept`: credentials an earlier pass issued but could not write, written
   instead of asking STS again when they were issued for the same request and are not yet due.
3. `Report(record, renew_at, deferred_until)`: the Secret is current; the status is made to match it.
   A rotate request waiting for the minimum interval comes back at `deferred_until`.

When to come back: `sleep_seconds` after a pass that succeeded; `domain.renewal.retry_delay` after one that
failed or was refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from vault_sts_operator.domain import allowlist
from vault_sts_operator.domain.decisions import IssuedRecord, Trigger, decide
from vault_sts_operator.domain.errors import InvalidSpecError, IssuingError, NotAllowedError
from vault_sts_operator.domain.kept_credentials import KeptCredentials

# At most this many of the Secret's problems are named in the refusal (the rest are counted).
SHOWN_SECRET_PROBLEMS = 5


@dataclass(frozen=True)
class IdentityAccess:
    """What the decision needs of the resolved MFAIdentity: who may use it."""

    name: str
    allowed_namespaces: tuple[str, ...]
    allowed_role_arns: tuple[str, ...]
    allowed_namespace_labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PassInput:
    """Everything one pass read, as the decision sees it.

    Gathering stops reading once `refusal` finds a reason to refuse, so a refused input may lack what
    comes after that reason (the identity, the namespace's labels, the Secret): a field left at its
    default was not gathered.
    """

    namespace: str
    name: str
    now: datetime  # the clock, read once at the start of the pass
    rotate_request: str = ""  # the vaultsts.io/rotate annotation ("" when none)
    spec_error: IssuingError | None = None  # the spec could not be parsed
    # Of the parsed spec:
    role_arn: str = ""
    spec_hash: str = ""  # CredentialSpec.issuance_hash(): what the Secret's record is compared with
    renew_before: timedelta | None = None
    renew_default_at_least: timedelta | None = None  # mode PodIdentity: the default renewBefore's floor
    secret_problems: tuple[str, ...] = ()  # why the API server would refuse the Secret (outputs/secret_manifest.py)
    # Of the identity:
    identity: IdentityAccess | None = None
    identity_error: IssuingError | None = None  # the identity could not be resolved
    namespace_labels: Mapping[str, str] | None = None  # read only when the identity selects namespaces by label
    tenancy_error: IssuingError | None = None  # what STS would be told about the tenant is refused
    issue_key: str = ""  # what the pass would ask STS (services/reconciler.py issue_key)
    # Of the Secret:
    record: IssuedRecord | None = None  # its issue record (read, or as this process last wrote it); None: none
    kept: KeptCredentials | None = None  # what the kept-credentials store holds for this CR, whatever its request

    @property
    def jitter_key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Refuse:
    error: IssuingError


@dataclass(frozen=True)
class Issue:
    trigger: Trigger
    kept: KeptCredentials | None = None  # write these instead of asking STS


@dataclass(frozen=True)
class Report:
    record: IssuedRecord
    renew_at: datetime
    deferred_until: datetime | None = None  # a rotate request waits until then

    @property
    def come_back_at(self) -> datetime:
        return self.renew_at if self.deferred_until is None else min(self.renew_at, self.deferred_until)


Plan = Refuse | Issue | Report


def refusal(facts: PassInput) -> IssuingError | None:
    """Why the pass refuses, from what is gathered so far; None when nothing gathered refuses it (yet).

    In order: the spec, the Secret's problems, the identity, the allow-lists, tenancy. The allow-lists of an
    identity that selects namespaces by label are not judged before the labels are read, nor is anything
    after them: gathering asks this before each read, and reads on while it says None.
    """
    if facts.spec_error is not None:
        return facts.spec_error
    if facts.secret_problems:
        problems = facts.secret_problems
        shown = "; ".join(problems[:SHOWN_SECRET_PROBLEMS])
        if len(problems) > SHOWN_SECRET_PROBLEMS:
            shown += f"; and {len(problems) - SHOWN_SECRET_PROBLEMS} more"
        return InvalidSpecError(f"the Secret would be refused by the API server: {shown}")
    if facts.identity_error is not None:
        return facts.identity_error
    identity = facts.identity
    if identity is None:
        return None  # not resolved yet
    selected = False
    if identity.allowed_namespace_labels:
        if facts.namespace_labels is None:
            return None  # not read yet
        labels = facts.namespace_labels
        selected = all(labels.get(k) == v for k, v in identity.allowed_namespace_labels)
    refused = allowlist.refusal(identity=identity.name, namespace=facts.namespace, role_arn=facts.role_arn,
                                allowed_namespaces=identity.allowed_namespaces,
                                allowed_role_arns=identity.allowed_role_arns, namespace_selected=selected)
    if refused:
        return NotAllowedError(refused)
    return facts.tenancy_error


def reusable_kept(facts: PassInput) -> KeptCredentials | None:
    """The kept credentials, when they were issued for what this pass would ask STS and are not yet due."""
    kept = facts.kept
    if kept is None or kept.key != facts.issue_key or facts.now >= kept.usable_until:
        return None
    return kept


def decide_pass(facts: PassInput, *, rotate_min_interval: timedelta = timedelta(0)) -> Plan:
    """What this pass does (the module says in which order)."""
    error = refusal(facts)
    if error is not None:
        return Refuse(error)
    decision = decide(now=facts.now, record=facts.record, spec_hash=facts.spec_hash,
                      rotate_request=facts.rotate_request, renew_before=facts.renew_before,
                      jitter_key=facts.jitter_key, rotate_min_interval=rotate_min_interval,
                      default_at_least=facts.renew_default_at_least)
    if decision.trigger is not None:
        return Issue(decision.trigger, reusable_kept(facts))
    assert facts.record is not None and decision.renew_at is not None  # decide() issues when there is no record
    return Report(facts.record, decision.renew_at, decision.deferred_until)


def sleep_seconds(until: datetime, *, now: datetime, max_sleep: float) -> float:
    """Seconds until the next pass of a credential that succeeded: at `until`, at least 1 s, at most `max_sleep`."""
    return min(max((until - now).total_seconds(), 1.0), max_sleep)
