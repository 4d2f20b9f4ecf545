"""One pass over one AssumedRoleCredential: gather, decide, act, report.

`CredentialReconciler.reconcile` is the whole pass, in four steps:

1. gather (services/gatherer.py): everything the pass reads, into one frozen `Gathered`;
2. decide (domain/credential_pass.py `decide_pass`): a pure function of what was gathered, a `Plan`:
   `Refuse`, `Issue` or `Report`;
3. act: `_issue` (kept credentials or the issuer, then the Secret writer, the former Secret, the status, the
   Event, consumer restarts), or `_report_current` (the status made to match the Secret, a deferred rotation's
   Event);
4. report: a `PassResult` for the controller (when to come back, what the status now says, the Secret to trust
   next time); a refusal or a failure is reported on the status (domain/credential_status.py decides what it says:
   RotationFailing, Ready kept True while the Secret is still valid for the spec, Reconciling or Stalled, the
   failure count and the next retry time) and as one Event per distinct failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from vault_sts_operator import metrics
from vault_sts_operator.api.conditions import apply_report, find_condition
from vault_sts_operator.api.specs import CredentialSpec
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain import credential_status, reasons
from vault_sts_operator.domain.credential_pass import Issue, Plan, Refuse, Report, decide_pass, sleep_seconds
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord, Trigger, record_renewal_time
from vault_sts_operator.domain.delivery import POD_IDENTITY, fingerprint
from vault_sts_operator.domain.errors import IssuingError
from vault_sts_operator.domain.kept_credentials import KeptCredentials, KeptCredentialStore
from vault_sts_operator.domain.renewal import retry_delay
from vault_sts_operator.domain.timefmt import format_time
from vault_sts_operator.services.credential_store import PodIdentityStore, Stored
from vault_sts_operator.services.gatherer import CredentialGatherer, Gathered, IdentityResolver, KnownSecret
from vault_sts_operator.services.issuer import CredentialIssuer
from vault_sts_operator.services.restarts import RolloutRestarter
from vault_sts_operator.services.secret_writer import SecretWriter

log = logging.getLogger(__name__)

# A credential re-decides at least this often (a pass that is not due asks the API server nothing when
# it knows the Secret it wrote). A Secret changed or deleted by hand is repaired at its next issue, or
# at once when the Secret watch calls the controller (services/watch.py). Without that watch
# (--no-watch-secrets), --secret-check-interval lowers this bound.
MAX_SLEEP_SECONDS = 3600.0

# A first issue still under way after this long is reported (Ready=False/Issuing, Reconciling=True), so kstatus
# reads the credential as InProgress rather than as Current for want of a status. Most first issues end sooner
# (p95 1.9 s for 1,000 at once), and then write one status instead of two.
ISSUING_REPORT_SECONDS = 2.0


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
    # The Ready condition after this pass: True while a failing rotation leaves a valid Secret (None: no failure)
    ready: bool | None = None
    renewal: float | None = None  # Unix time of the next scheduled rotation (after a successful pass)


class _CredentialGone(Exception):
    """The status patch found no CR."""


class _PendingReport:
    """A status write made only if the pass is still under way after `delay` seconds.

    `settle()` comes before the pass's own status write: it cancels the write if it has not started, or waits for
    it to finish if it has (so it never lands after, and overwrites, the pass's result). Its failure is logged
    only: the pass's own write follows.
    """

    def __init__(self, delay: float, write: Callable[[], Awaitable[None]]) -> None:
        self._started = False
        self._task = asyncio.create_task(self._run(delay, write))

    async def _run(self, delay: float, write: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(delay)
        self._started = True
        try:
            await write()
        except Exception as exc:  # the pass's own write follows and says what happened
            log.debug("could not report the issue under way: %s", exc)

    async def settle(self) -> None:
        if not self._started:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


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
        issuing_report_seconds: float = ISSUING_REPORT_SECONDS,
        store: PodIdentityStore | None = None,
    ) -> None:
        self._issuing_report_seconds = issuing_report_seconds
        self._store = store  # mode PodIdentity's credentials and bindings (None: the mode is not enabled)
        # Credentials issued in a pass whose Secret write failed: the next pass writes them instead of issuing.
        self._kept = kept if kept is not None else KeptCredentialStore()
        self._gatherer = CredentialGatherer(kube=kube, writer=writer, kept=self._kept, clock=clock, store=store)
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
        """One pass: gather, decide, act, report (the module says what each does).

        `failures`: consecutive failed passes before this one (the backoff). `secret_absent` and `known`:
        what the controller knows of the Secret (`CredentialGatherer.gather`).
        """
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        status = dict(body.get("status") or {})
        gathered: Gathered | None = None
        try:
            gathered = await self._gatherer.gather(body, resolve, secret_absent=secret_absent, known=known)
            plan: Plan = decide_pass(gathered.facts, rotate_min_interval=self._rotate_min_interval)
            written: dict[str, Any] | None
            match plan:
                case Refuse(error):
                    raise error
                case Issue():
                    pending = None
                    if plan.trigger is Trigger.MISSING and find_condition(status.get("conditions"),
                                                                          reasons.READY) is None:
                        pending = _PendingReport(self._issuing_report_seconds,
                                                 lambda: self._report_issuing(body, status))
                    try:
                        written, known, renew_at = await self._issue(gathered, plan, status, pending)
                    finally:
                        if pending is not None:  # before a failure is reported
                            await pending.settle()
                case Report():
                    written, known, renew_at = await self._report_current(gathered, plan, status)
            return PassResult(sleep_seconds(renew_at, now=self._clock(), max_sleep=self._max_sleep), failures=0,
                              status=written, secret=known, reason=reasons.ISSUED, ready=True,
                              renewal=renew_at.timestamp())
        except _CredentialGone:
            log.info("%s/%s no longer exists; forgetting it", namespace, name)
            return PassResult(MAX_SLEEP_SECONDS, failures=0, gone=True)
        except IssuingError as exc:
            failures += 1
            metrics.FAILURES.labels(reason=exc.reason).inc()
            delay = retry_delay(failures, transient=exc.transient, jitter_key=f"{namespace}/{name}")
            if self._store is not None and gathered is not None and gathered.spec is not None \
                    and not gathered.spec.delivery.writes_secret:
                # Agents waiting on this pass get the reason; held credentials stay servable only while the
                # failure is transient (an identity that stops allowing the tenant stops it being served).
                self._store.refused((namespace, name), exc.reason, exc.message, keep=exc.transient)
            reported, ready = await self._report_failure(body, exc, status, gathered, retry_in=delay)
            log.warning("%s/%s not issued (%s): %s; next attempt in %.0fs", namespace, name, exc.reason,
                        exc.detail, delay)
            return PassResult(delay, failures=failures, status=reported, reason=reasons.ISSUED if ready else exc.reason,
                              ready=ready)

    # -- act ---------------------------------------------------------------------------------------
    async def _issue(self, gathered: Gathered, plan: Issue, status: dict[str, Any],
                     pending: _PendingReport | None = None) -> tuple[dict[str, Any], KnownSecret | None, datetime]:
        """Issue (or write the kept credentials), write the Secret, remove a former one, then status and Event."""
        spec, identity, facts, body = gathered.spec, gathered.identity, gathered.facts, gathered.body
        assert spec is not None and identity is not None  # a pass that issues parsed and resolved both
        owner = gathered.owner
        self._kept.take(owner, facts.issue_key, now=facts.now)  # out of the store: written now, or superseded
        if plan.kept is not None:  # issued by an earlier pass whose write failed: STS is not asked again
            creds, issued_at = plan.kept.creds, plan.kept.issued_at
            log.info("%s/%s: writing %s, issued at %s by a pass whose Secret write failed", spec.namespace, spec.name,
                     creds.access_key_id, format_time(issued_at))
        else:
            creds = await self._issuer.issue(identity, spec)
            # Whole seconds, as the status and the Secret carry it: a restarted process that reads the record back
            # then computes the same renewalTime, instead of another one (off by a second) and a status rewrite.
            issued_at = self._clock().replace(microsecond=0)
        record = IssuedRecord(issued_at=issued_at, expiration=creds.expiration, spec_hash=facts.spec_hash,
                              rotate_request=facts.rotate_request, access_key_id=creds.access_key_id,
                              assumed_role_arn=creds.assumed_role_arn)
        renew_at = self._renew_at(spec, record)
        if not spec.delivery.writes_secret:
            return await self._hold(gathered, plan, status, creds, record, renew_at, pending)
        if self._store is not None:
            self._store.forget(owner[:2])  # switched back to mode Secret (the watch has told the store already)
        try:
            secret = await self._writer.write(spec=spec, owner_uid=owner[2], creds=creds, record=record,
                                              current=gathered.current, verified=gathered.verified)
        except IssuingError:
            self._kept.keep(owner, KeptCredentials(key=facts.issue_key, creds=creds, issued_at=issued_at,
                                                   usable_until=renew_at), now=self._clock())
            raise
        known = KnownSecret(spec.target.secret_name, str(secret["metadata"]["resourceVersion"]), record)
        old_secret = status.get("secretName")
        if old_secret and old_secret != spec.target.secret_name:
            await self._writer.delete_previous(spec.namespace, str(old_secret), owner[2])
        message = (f"issued {creds.access_key_id} for {spec.role_arn} into Secret {spec.target.secret_name} "
                   f"({plan.trigger.value}); expires {format_time(creds.expiration)}")
        if pending is not None:
            await pending.settle()  # its write, if it started, lands before this one
        written = await self._patch_status(body, spec, record, status, ready_message=message)
        first = facts.record is None
        # Counted and logged before the Event is posted: whoever sees the status finds both.
        metrics.ROTATIONS.labels(namespace=spec.namespace, trigger=plan.trigger.name.lower()).inc()
        log.info("%s/%s: %s", spec.namespace, spec.name, message)
        await self._events(body, type_="Normal", reason=reasons.ISSUED if first else reasons.ROTATED, message=message)
        if not first:  # a rotation, not a first issue: consumers hold old credentials
            self._restart_consumers(body, spec)
        return written, known, renew_at

    async def _hold(self, gathered: Gathered, plan: Issue, status: dict[str, Any], creds: TemporaryCredentials,
                    record: IssuedRecord, renew_at: datetime, pending: _PendingReport | None
                    ) -> tuple[dict[str, Any], None, datetime]:
        """Mode PodIdentity: the credentials go into this process's memory for the agents, never into a Secret;
        the Secret of an earlier mode Secret is deleted; status and Event name a fingerprint, not the key id."""
        spec, facts, body, owner = gathered.spec, gathered.facts, gathered.body, gathered.owner
        assert spec is not None and self._store is not None
        self._store.put(owner[:2], Stored(creds=creds, record=record, uid=owner[2]))
        old_secret = status.get("secretName")
        if old_secret:
            await self._writer.delete_previous(spec.namespace, str(old_secret), owner[2])
        accounts = ", ".join(spec.delivery.service_accounts)
        message = (f"issued credentials {fingerprint(creds.access_key_id)} for {spec.role_arn} to the pods of "
                   f"ServiceAccount(s) {accounts} ({_trigger_text(plan.trigger)}); expires "
                   f"{format_time(creds.expiration)}")
        if pending is not None:
            await pending.settle()
        written = await self._patch_status(body, spec, record, status, ready_message=message)
        first = facts.record is None and not status.get("credentialFingerprint")
        # Counted and logged before the Event is posted: whoever sees the status finds both.
        metrics.ROTATIONS.labels(namespace=spec.namespace, trigger=plan.trigger.name.lower()).inc()
        # The operator's log keeps the key id, to find the session in CloudTrail (logs are not etcd).
        log.info("%s/%s: %s (AccessKeyId %s)", spec.namespace, spec.name, message, creds.access_key_id)
        await self._events(body, type_="Normal", reason=reasons.ISSUED if first else reasons.ROTATED, message=message)
        return written, None, renew_at

    async def _report_current(self, gathered: Gathered, plan: Report, status: dict[str, Any]
                              ) -> tuple[dict[str, Any] | None, KnownSecret | None, datetime]:
        """Nothing to issue: make the status match the Secret (after a restart or a crash between writes), or in
        mode PodIdentity the credentials held (or, when none are held, leave the status as it is)."""
        spec, body, record = gathered.spec, gathered.body, plan.record
        assert spec is not None  # a pass that reports parsed its spec
        ready = find_condition(status.get("conditions"), reasons.READY)
        generation = (body.get("metadata") or {}).get("generation")
        written: dict[str, Any] | None = None
        pod_identity = not spec.delivery.writes_secret
        expected = self._delivery_fields(spec, record)
        if pod_identity and not gathered.held:
            expected = {}  # the status is the record: nothing newer to report
        if not (all(status.get(k) == v for k, v in expected.items()) and ready is not None
                and ready.get("status") == "True" and status.get("observedGeneration") == generation
                and status.get("renewalTime") == format_time(plan.renew_at)
                and credential_status.is_current(status)):
            message = f"{_holder(spec, record)} for {spec.role_arn}; expires {format_time(record.expiration)}"
            written = await self._patch_status(body, spec, record, status, ready_message=message)
        if plan.deferred_until is not None:
            await self._report_deferred(body, plan.deferred_until)
        return written, gathered.known, plan.come_back_at

    async def _report_deferred(self, body: Mapping[str, Any], until: datetime) -> None:
        meta = body.get("metadata") or {}
        message = (f"rotation requested by annotation waits until {format_time(until)}: the rotate annotation "
                   f"reissues a Secret at most once per {self._rotate_min_interval.total_seconds():.0f}s")
        await self._events(body, type_="Normal", reason=reasons.ROTATION_DEFERRED, message=message)
        log.info("%s/%s: %s", meta.get("namespace"), meta.get("name"), message)

    @staticmethod
    def _delivery_fields(spec: CredentialSpec, record: IssuedRecord) -> dict[str, Any]:
        """The status fields that say where the credentials are: the Secret and the key id, or (mode PodIdentity)
        the ServiceAccounts served and a fingerprint, with the other mode's fields removed (null in a merge
        patch), so no key id reaches etcd in mode PodIdentity."""
        if spec.delivery.writes_secret:
            return {"secretName": spec.target.secret_name, "accessKeyId": record.access_key_id,
                    "delivery": None, "credentialFingerprint": None, "rotateRequest": None}
        fields: dict[str, Any] = {
            "secretName": None, "accessKeyId": None,
            "delivery": {"mode": POD_IDENTITY, "serviceAccounts": list(spec.delivery.service_accounts)},
            "rotateRequest": record.rotate_request or None}
        if record.access_key_id:  # a record read back from the status has no key id: its fingerprint stays
            fields["credentialFingerprint"] = fingerprint(record.access_key_id)
        return fields

    def _renew_at(self, spec: CredentialSpec, record: IssuedRecord) -> datetime:
        return record_renewal_time(record, renew_before=spec.renew_before, jitter_key=f"{spec.namespace}/{spec.name}",
                                   default_at_least=spec.delivery.renew_default_at_least)

    async def _patch_status(self, body: Mapping[str, Any], spec: CredentialSpec, record: IssuedRecord,
                            status: Mapping[str, Any], *, ready_message: str) -> dict[str, Any]:
        generation = (body.get("metadata") or {}).get("generation")
        now = self._clock()
        report = credential_status.succeeded(ready_message=ready_message, now=now)
        new_status = {
            "conditions": apply_report(status.get("conditions"), report, generation=generation, now=now),
            **report.fields,
            "observedGeneration": generation,
            **self._delivery_fields(spec, record),
            "assumedRoleArn": record.assumed_role_arn,
            "issuedAt": format_time(record.issued_at),
            "expiration": format_time(record.expiration),
            "renewalTime": format_time(self._renew_at(spec, record)),
        }
        if await self._kube.patch_credential_status(spec.namespace, spec.name, new_status) is False:
            raise _CredentialGone
        return new_status

    async def _report_issuing(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """A first issue under way: Ready False and Reconciling True (kstatus: InProgress, not Current, meanwhile)."""
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        conditions = apply_report(status.get("conditions"), credential_status.issuing(), generation=generation,
                                  now=self._clock())
        await self._kube.patch_credential_status(str(meta.get("namespace")), str(meta.get("name")),
                                                 {"conditions": conditions, "observedGeneration": generation})

    async def _report_failure(self, body: Mapping[str, Any], exc: IssuingError, status: Mapping[str, Any],
                              gathered: Gathered | None, *, retry_in: float) -> tuple[dict[str, Any] | None, bool]:
        """Report a failed pass (domain/credential_status.py `failed`); returns what was written and whether Ready
        stays True (the Secret still holds valid credentials issued for the current spec)."""
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        now = self._clock()
        previous = find_condition(status.get("conditions"), reasons.ROTATION_FAILING)
        facts = gathered.facts if gathered is not None else None
        valid = credential_status.valid_until(
            now=now, spec_hash=facts.spec_hash if facts is not None else "",
            record=facts.record if facts is not None else None,
            record_known=gathered is not None and gathered.secret_known, status=status, generation=generation)
        failure = credential_status.Failure(reason=exc.reason, message=exc.message, transient=exc.transient, at=now,
                                            retry_at=now + timedelta(seconds=retry_in))
        secret_name = gathered.spec.target.secret_name if gathered is not None and gathered.spec is not None \
            else str(status.get("secretName") or "")
        report = credential_status.failed(failure, attempts=credential_status.previous_attempts(status) + 1,
                                          valid=valid, secret_name=secret_name)
        conditions = apply_report(status.get("conditions"), report, generation=generation, now=now)
        # Other status fields still describe the Secret, which stays valid until it expires.
        written: dict[str, Any] | None = {"conditions": conditions, **report.fields, "observedGeneration": generation}
        try:
            await self._kube.patch_credential_status(str(meta.get("namespace")), str(meta.get("name")), written or {})
        except IssuingError as patch_exc:
            written = None
            log.warning("could not report failure on %s/%s: %s", meta.get("namespace"), meta.get("name"),
                        patch_exc.message)
        # One Event per distinct failure, not one per retry (the condition's message adds the count and times).
        repeated = previous is not None and previous.get("status") == "True" and previous.get("reason") == exc.reason \
            and str(previous.get("message") or "").startswith(exc.message + " (")
        if not repeated:
            await self._events(body, type_="Warning", reason=exc.reason, message=exc.message)
        return written, valid is not None

    def _restart_consumers(self, body: Mapping[str, Any], spec: CredentialSpec) -> None:
        if self._restarter is None:
            return

        async def report(message: str) -> None:
            await self._events(body, type_="Warning", reason=reasons.ROLLOUT_RESTART_FAILED, message=message)

        for target in spec.rollout_restart_targets:
            self._restarter.request((target.kind, spec.namespace, target.name), report, credential=spec.name)



def _holder(spec: CredentialSpec, record: IssuedRecord) -> str:
    """Where the current credentials are, for the Ready message."""
    if spec.delivery.writes_secret:
        return f"Secret {spec.target.secret_name} holds {record.access_key_id}"
    if record.access_key_id:
        return f"the operator holds {fingerprint(record.access_key_id)}"
    return f"credentials for ServiceAccount(s) {', '.join(spec.delivery.service_accounts)}"


def _trigger_text(trigger: Trigger) -> str:
    return "first issue" if trigger is Trigger.MISSING else trigger.value
