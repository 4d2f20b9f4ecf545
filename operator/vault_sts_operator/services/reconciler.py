"""One pass over one AssumedRoleCredential: gather, decide, act, report.

Gather the spec, the identity and the current Secret; decide with pure functions
(allow-lists, ownership, `decide`); act (issue, write the Secret, then the status);
report (condition, Event, metrics). Returns how long to sleep before the next pass.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from vault_sts_operator import metrics
from vault_sts_operator.api import constants as c
from vault_sts_operator.api import reasons
from vault_sts_operator.api.conditions import find_condition, set_condition
from vault_sts_operator.api.specs import CredentialSpec, IdentitySpec, parse_credential
from vault_sts_operator.api.timefmt import format_time
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain import allowlist
from vault_sts_operator.domain.decisions import Decision, IssuedRecord, Trigger, decide, record_renewal_time
from vault_sts_operator.domain.errors import InvalidSpecError, IssuingError, NotAllowedError
from vault_sts_operator.domain.kept_credentials import KeptCredentials, KeptCredentialStore, Owner
from vault_sts_operator.domain.renewal import retry_delay
from vault_sts_operator.outputs.issued_record import read_issued_record
from vault_sts_operator.outputs.secret_manifest import secret_problems
from vault_sts_operator.services.issuer import CredentialIssuer, tenant_parameters
from vault_sts_operator.services.restarts import RolloutRestarter
from vault_sts_operator.services.secret_writer import SecretWriter

log = logging.getLogger(__name__)

IdentityResolver = Callable[[str], IdentitySpec]
# A credential re-decides at least this often (a pass that is not due asks the API server nothing when
# it knows the Secret it wrote). A Secret changed or deleted by hand is repaired at its next issue, or
# at once when the Secret watch calls the controller (services/watch.py). Without that watch
# (--no-watch-secrets), --secret-check-interval lowers this bound.
MAX_SLEEP_SECONDS = 3600.0


class EventSink(Protocol):
    async def __call__(self, body: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None: ...


@dataclass
class PassResult:
    sleep_seconds: float
    failures: int  # consecutive failures, for the next pass's backoff
    status: dict[str, Any] | None = None  # the status fields this pass wrote (None: none)
    gone: bool = False  # the CR no longer exists (deleted while the watch was away): stop scheduling it
    secret: KnownSecret | None = None  # for the next pass (None after a failure: keep the previous one)
    # For the per-credential metric series (kept by the controller, rendered at scrape time):
    reason: str = ""  # the Ready condition's reason after this pass ("" when gone)
    renewal: float | None = None  # Unix time of the next scheduled rotation (after a successful pass)


@dataclass(frozen=True)
class KnownSecret:
    """The Secret a pass last wrote or read for a CR: enough to decide, and to replace it at its version
    without reading it again (a changed or vanished Secret makes the replace fail; it is then read)."""

    name: str
    resource_version: str
    record: IssuedRecord


class _CredentialGone(Exception):
    """The status patch found no CR."""


class CredentialReconciler:
    def __init__(
        self,
        *,
        kube: KubeGateway,
        issuer: CredentialIssuer,
        writer: SecretWriter,
        events: EventSink,
        restarter: RolloutRestarter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rotate_min_interval: timedelta = timedelta(0),
        max_sleep_seconds: float = MAX_SLEEP_SECONDS,
        kept: KeptCredentialStore | None = None,
    ) -> None:
        # Credentials issued in a pass whose Secret write failed: the next pass writes them instead of issuing.
        self._kept = kept if kept is not None else KeptCredentialStore()
        self._rotate_min_interval = rotate_min_interval
        self._max_sleep = max_sleep_seconds
        self._restarter = restarter
        self._kube = kube
        self._issuer = issuer
        self._writer = writer
        self._events = events
        self._clock = clock

    async def reconcile(self, body: Mapping[str, Any], resolve: IdentityResolver, failures: int, *,
                        secret_absent: bool = False, known: KnownSecret | None = None) -> PassResult:
        """One pass.

        `secret_absent`: the caller knows no Secret was issued for this CR yet (a new CR with an empty
        status), so in session mode the Secret is created without reading it first (a Secret found by
        the create is then read and checked as usual). `known`: what the previous pass of this process
        wrote or read; the pass decides from it and replaces at its version without a read.
        """
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        status = dict(body.get("status") or {})
        rotate_request = str((meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION, ""))
        try:
            spec = parse_credential(namespace, name, body.get("spec") or {})
            self._check_secret(spec, rotate_request)
            identity = resolve(spec.identity_name)
            await self._check_allowed(identity, spec)
            # Skipping the read is only for session mode: should a Secret be there after all, the pass has
            # spent an AssumeRole on the shared session, never a TOTP code of its own (mfa: direct).
            skip_read = secret_absent and spec.mfa_mode == "session"
            verified = True
            current: dict[str, Any] | None
            record: IssuedRecord | None
            if known is not None and known.name == spec.target.secret_name:
                current, record = {"metadata": {"resourceVersion": known.resource_version}}, known.record
                verified = False
            else:
                known = None
                current = None if skip_read else await self._writer.read(spec, str(meta.get("uid")))
                record = read_issued_record(((current or {}).get("metadata") or {}).get("annotations"))
                if current is not None and record is not None:
                    known = KnownSecret(spec.target.secret_name, str(current["metadata"]["resourceVersion"]), record)
            decision = decide(now=self._clock(), record=record, spec_hash=spec.issuance_hash(),
                              rotate_request=rotate_request, renew_before=spec.renew_before,
                              jitter_key=f"{namespace}/{name}", rotate_min_interval=self._rotate_min_interval)
            written: dict[str, Any] | None
            if decision.issue_now:
                record, written, known = await self._issue(body, spec, identity, current, verified, record, decision,
                                                           rotate_request)
            else:
                assert record is not None  # decide() issues when there is no record
                written = await self._report_current(body, spec, record, status)
            renew_at = self._renew_at(spec, record)
            if decision.deferred_until is not None:
                renew_at = min(renew_at, decision.deferred_until)
                await self._report_deferred(body, decision.deferred_until)
            return PassResult(min(max((renew_at - self._clock()).total_seconds(), 1.0), self._max_sleep),
                              failures=0, status=written, secret=known, reason=reasons.ISSUED,
                              renewal=renew_at.timestamp())
        except _CredentialGone:
            log.info("%s/%s no longer exists; forgetting it", namespace, name)
            return PassResult(MAX_SLEEP_SECONDS, failures=0, gone=True)
        except IssuingError as exc:
            failures += 1
            metrics.FAILURES.labels(reason=exc.reason).inc()
            reported = await self._report_failure(body, exc, status)
            delay = retry_delay(failures, transient=exc.transient, jitter_key=f"{namespace}/{name}")
            log.warning("%s/%s not issued (%s): %s; next attempt in %.0fs", namespace, name, exc.reason,
                        exc.detail, delay)
            return PassResult(delay, failures=failures, status=reported, reason=exc.reason)

    def _check_secret(self, spec: CredentialSpec, rotate_request: str) -> None:
        """Refuse a credential whose Secret the API server would refuse whatever it holds: before anything is spent
        (apimachinery's rules, checked locally: no request; admission, quota and RBAC answer at the write)."""
        problems = secret_problems(spec, rotate_request=rotate_request, now=self._clock())
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise InvalidSpecError(f"the Secret would be refused by the API server: {shown}")

    async def _check_allowed(self, identity: IdentitySpec, spec: CredentialSpec) -> None:
        selected = False
        if identity.allowed_namespace_labels:
            labels = await self._kube.namespace_labels(spec.namespace)
            selected = all(labels.get(k) == v for k, v in identity.allowed_namespace_labels)
        refusal = allowlist.refusal(identity=identity.name, namespace=spec.namespace, role_arn=spec.role_arn,
                                    allowed_namespaces=identity.allowed_namespaces,
                                    allowed_role_arns=identity.allowed_role_arns, namespace_selected=selected)
        if refusal:
            raise NotAllowedError(refusal)
        tenant_parameters(identity, spec)  # tags, ExternalId, limits: refused before anything is read or sent

    async def _report_deferred(self, body: Mapping[str, Any], until: datetime) -> None:
        meta = body.get("metadata") or {}
        message = (f"rotation requested by annotation waits until {format_time(until)}: the rotate annotation "
                   f"reissues a Secret at most once per {self._rotate_min_interval.total_seconds():.0f}s")
        await self._events(body, type_="Normal", reason=reasons.ROTATION_DEFERRED, message=message)
        log.info("%s/%s: %s", meta.get("namespace"), meta.get("name"), message)

    def _renew_at(self, spec: CredentialSpec, record: IssuedRecord) -> datetime:
        return record_renewal_time(record, renew_before=spec.renew_before, jitter_key=f"{spec.namespace}/{spec.name}")

    async def _issue(self, body: Mapping[str, Any], spec: CredentialSpec, identity: IdentitySpec,
                     current: dict[str, Any] | None, verified: bool, previous: IssuedRecord | None,
                     decision: Decision, rotate_request: str) -> tuple[IssuedRecord, dict[str, Any], KnownSecret]:
        meta = body["metadata"]
        owner: Owner = (spec.namespace, spec.name, str(meta["uid"]))
        key = issue_key(identity, spec)
        kept = self._kept.take(owner, key, now=self._clock())
        if kept is not None:  # issued by an earlier pass whose write failed: STS is not asked again
            creds, issued_at = kept.creds, kept.issued_at
            log.info("%s/%s: writing %s, issued at %s by a pass whose Secret write failed", spec.namespace, spec.name,
                     creds.access_key_id, format_time(issued_at))
        else:
            creds = await self._issuer.issue(identity, spec)
            issued_at = self._clock()
        record = IssuedRecord(issued_at=issued_at, expiration=creds.expiration, spec_hash=spec.issuance_hash(),
                              rotate_request=rotate_request, access_key_id=creds.access_key_id,
                              assumed_role_arn=creds.assumed_role_arn)
        try:
            secret = await self._writer.write(spec=spec, owner_uid=str(meta["uid"]), creds=creds, record=record,
                                              current=current, verified=verified)
        except IssuingError:
            self._kept.keep(owner, KeptCredentials(key=key, creds=creds, issued_at=issued_at,
                                                   usable_until=self._renew_at(spec, record)), now=self._clock())
            raise
        known = KnownSecret(spec.target.secret_name, str(secret["metadata"]["resourceVersion"]), record)
        status = dict(body.get("status") or {})
        old_secret = status.get("secretName")
        if old_secret and old_secret != spec.target.secret_name:
            await self._writer.delete_previous(spec.namespace, str(old_secret), str(meta["uid"]))
        trigger = decision.trigger or Trigger.MISSING
        message = (f"issued {creds.access_key_id} for {spec.role_arn} into Secret {spec.target.secret_name} "
                   f"({trigger.value}); expires {format_time(creds.expiration)}")
        written = await self._patch_status(body, spec, record, status, ready_message=message)
        await self._events(body, type_="Normal", reason=reasons.ISSUED if previous is None else reasons.ROTATED,
                           message=message)
        metrics.ROTATIONS.labels(namespace=spec.namespace, trigger=trigger.name.lower()).inc()
        log.info("%s/%s: %s", spec.namespace, spec.name, message)
        if previous is not None:  # a rotation, not a first issue: consumers hold old credentials
            self._restart_consumers(body, spec)
        return record, written, known

    async def _report_current(self, body: Mapping[str, Any], spec: CredentialSpec, record: IssuedRecord,
                              status: dict[str, Any]) -> dict[str, Any] | None:
        """Nothing to issue: make the status match the Secret (after a restart or a crash between writes)."""
        ready = find_condition(status.get("conditions"), reasons.READY)
        generation = (body.get("metadata") or {}).get("generation")
        if (status.get("accessKeyId") == record.access_key_id and ready is not None
                and ready.get("status") == "True" and status.get("observedGeneration") == generation
                and status.get("secretName") == spec.target.secret_name
                and status.get("renewalTime") == format_time(self._renew_at(spec, record))):
            return None
        message = (f"Secret {spec.target.secret_name} holds {record.access_key_id} for {spec.role_arn}; "
                   f"expires {format_time(record.expiration)}")
        return await self._patch_status(body, spec, record, status, ready_message=message)

    async def _patch_status(self, body: Mapping[str, Any], spec: CredentialSpec, record: IssuedRecord,
                            status: Mapping[str, Any], *, ready_message: str) -> dict[str, Any]:
        generation = (body.get("metadata") or {}).get("generation")
        new_status = {
            "conditions": set_condition(status.get("conditions"), type_=reasons.READY, status=True,
                                        reason=reasons.ISSUED, message=ready_message, generation=generation,
                                        now=self._clock()),
            "observedGeneration": generation,
            "secretName": spec.target.secret_name,
            "assumedRoleArn": record.assumed_role_arn,
            "accessKeyId": record.access_key_id,
            "issuedAt": format_time(record.issued_at),
            "expiration": format_time(record.expiration),
            "renewalTime": format_time(self._renew_at(spec, record)),
        }
        if await self._kube.patch_credential_status(spec.namespace, spec.name, new_status) is False:
            raise _CredentialGone
        return new_status

    async def _report_failure(self, body: Mapping[str, Any], exc: IssuingError,
                              status: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        previous = find_condition(status.get("conditions"), reasons.READY)
        conditions = set_condition(status.get("conditions"), type_=reasons.READY, status=False, reason=exc.reason,
                                   message=exc.message, generation=generation, now=self._clock())
        # Other status fields still describe the Secret, which stays valid until it expires.
        written: dict[str, Any] | None = {"conditions": conditions, "observedGeneration": generation}
        try:
            await self._kube.patch_credential_status(str(meta.get("namespace")), str(meta.get("name")), written or {})
        except IssuingError as patch_exc:
            written = None
            log.warning("could not report failure on %s/%s: %s", meta.get("namespace"), meta.get("name"),
                        patch_exc.message)
        repeated = previous is not None and previous.get("reason") == exc.reason and \
            previous.get("message") == exc.message
        if not repeated:  # one Event per distinct failure, not one per retry
            await self._events(body, type_="Warning", reason=exc.reason, message=exc.message)
        return written

    def _restart_consumers(self, body: Mapping[str, Any], spec: CredentialSpec) -> None:
        if self._restarter is None:
            return

        async def report(message: str) -> None:
            await self._events(body, type_="Warning", reason=reasons.ROLLOUT_RESTART_FAILED, message=message)

        for target in spec.rollout_restart_targets:
            self._restarter.request((target.kind, spec.namespace, target.name), report, credential=spec.name)


def issue_key(identity: IdentitySpec, spec: CredentialSpec) -> str:
    """What a pass asks STS for this credential (identity, role, duration, mode, scope and what tenancy sends):
    kept credentials are written only for the same request. The Secret's shape (name, labels, profile) is not
    part of it: fixing a label refused by an admission rule writes the credentials already issued."""
    shaped = [identity.name, identity.uid, identity.session_key, repr(tenant_parameters(identity, spec)),
              spec.role_arn, str(spec.duration_seconds), spec.mfa_mode, spec.policy, repr(spec.policy_arns)]
    return hashlib.sha256("\x00".join(shaped).encode()).hexdigest()[:32]
