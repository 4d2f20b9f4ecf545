"""One pass over one AssumedRoleCredential: gather, decide, act, report.

Gather the spec, the identity and the current Secret; decide with pure functions
(allow-lists, ownership, `decide`); act (issue, write the Secret, then the status);
report (condition, Event, metrics). Returns how long to sleep before the next pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from vault_sts_operator import metrics
from vault_sts_operator.api import constants as c
from vault_sts_operator.api import reasons
from vault_sts_operator.api.conditions import find_condition, set_condition
from vault_sts_operator.api.specs import CredentialSpec, IdentitySpec, parse_credential
from vault_sts_operator.api.timefmt import format_time
from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain import allowlist
from vault_sts_operator.domain.decisions import Decision, IssuedRecord, Trigger, decide, read_issued_record
from vault_sts_operator.domain.errors import IssuingError, NotAllowedError
from vault_sts_operator.domain.renewal import backoff_delay, renewal_time
from vault_sts_operator.services.issuer import CredentialIssuer
from vault_sts_operator.services.restarts import RolloutRestarter
from vault_sts_operator.services.secret_writer import SecretWriter

log = logging.getLogger(__name__)

IdentityResolver = Callable[[str], IdentitySpec]
# Transient failures back off from 5 s to 5 min; configuration errors are retried every 10 min
# (and at once when the CR or its identity changes).
TRANSIENT_BACKOFF = (5.0, 300.0)
CONFIG_RETRY_SECONDS = 600.0
# Never sleep longer than this, so the loop also notices a Secret deleted by hand.
MAX_SLEEP_SECONDS = 3600.0


class EventSink(Protocol):
    def __call__(self, body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


@dataclass
class PassResult:
    sleep_seconds: float
    ready: bool
    failures: int  # consecutive failures, for the next pass's backoff


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
    ) -> None:
        self._restarter = restarter
        self._kube = kube
        self._issuer = issuer
        self._writer = writer
        self._events = events
        self._clock = clock

    async def reconcile(self, body: Mapping[str, Any], resolve: IdentityResolver, failures: int) -> PassResult:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        status = dict(body.get("status") or {})
        try:
            spec = parse_credential(namespace, name, body.get("spec") or {})
            identity = resolve(spec.identity_name)
            await self._check_allowed(identity, spec)
            current = await self._writer.read(spec, str(meta.get("uid")))
            record = read_issued_record(((current or {}).get("metadata") or {}).get("annotations"))
            rotate_request = str((meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION, ""))
            decision = decide(now=self._clock(), record=record, spec_hash=spec.issuance_hash(),
                              rotate_request=rotate_request, renew_before=spec.renew_before,
                              jitter_key=f"{namespace}/{name}")
            if decision.issue_now:
                record = await self._issue(body, spec, identity, current, record, decision, rotate_request)
            else:
                assert record is not None  # decide() issues when there is no record
                await self._report_current(body, spec, record, decision, status)
            renew_at = self._renew_at(spec, record)
            metrics.SECONDS_UNTIL_EXPIRY.labels(namespace=namespace, name=name).set(
                (record.expiration - self._clock()).total_seconds())
            metrics.EXPIRATION_TIMESTAMP.labels(namespace=namespace, name=name).set(record.expiration.timestamp())
            metrics.RENEWAL_TIMESTAMP.labels(namespace=namespace, name=name).set(renew_at.timestamp())
            metrics.credential_ready(namespace, name, ready=True, reason=reasons.ISSUED)
            return PassResult(min(max((renew_at - self._clock()).total_seconds(), 1.0), MAX_SLEEP_SECONDS),
                              ready=True, failures=0)
        except IssuingError as exc:
            failures += 1
            metrics.FAILURES.labels(reason=exc.reason).inc()
            metrics.credential_ready(namespace, name, ready=False, reason=exc.reason)
            await self._report_failure(body, exc, status)
            delay = (backoff_delay(failures, base=TRANSIENT_BACKOFF[0], cap=TRANSIENT_BACKOFF[1],
                                   jitter_key=f"{namespace}/{name}")
                     if exc.transient else CONFIG_RETRY_SECONDS)
            log.warning("%s/%s not issued (%s): %s; next attempt in %.0fs", namespace, name, exc.reason,
                        exc.message, delay)
            return PassResult(delay, ready=False, failures=failures)

    async def _check_allowed(self, identity: IdentitySpec, spec: CredentialSpec) -> None:
        selected = False
        if identity.allowed_namespace_labels:
            labels = await asyncio.to_thread(self._kube.namespace_labels, spec.namespace)
            selected = all(labels.get(k) == v for k, v in identity.allowed_namespace_labels)
        refusal = allowlist.refusal(identity=identity.name, namespace=spec.namespace, role_arn=spec.role_arn,
                                    allowed_namespaces=identity.allowed_namespaces,
                                    allowed_role_arns=identity.allowed_role_arns, namespace_selected=selected)
        if refusal:
            raise NotAllowedError(refusal)

    def _renew_at(self, spec: CredentialSpec, record: IssuedRecord) -> datetime:
        return renewal_time(issued_at=record.issued_at, expiration=record.expiration,
                            renew_before=spec.renew_before,
                            jitter_key=f"{spec.namespace}/{spec.name}/{format_time(record.expiration)}")

    async def _issue(self, body: Mapping[str, Any], spec: CredentialSpec, identity: IdentitySpec,
                     current: dict[str, Any] | None, previous: IssuedRecord | None, decision: Decision,
                     rotate_request: str) -> IssuedRecord:
        meta = body["metadata"]
        creds = await self._issuer.issue(identity, spec)
        issued_at = self._clock()
        record = IssuedRecord(issued_at=issued_at, expiration=creds.expiration, spec_hash=spec.issuance_hash(),
                              rotate_request=rotate_request, access_key_id=creds.access_key_id,
                              assumed_role_arn=creds.assumed_role_arn)
        await self._writer.write(spec=spec, owner_uid=str(meta["uid"]), creds=creds, record=record, current=current)
        status = dict(body.get("status") or {})
        old_secret = status.get("secretName")
        if old_secret and old_secret != spec.target.secret_name:
            await self._writer.delete_previous(spec.namespace, str(old_secret), str(meta["uid"]))
        trigger = decision.trigger or Trigger.MISSING
        message = (f"issued {creds.access_key_id} for {spec.role_arn} into Secret {spec.target.secret_name} "
                   f"({trigger.value}); expires {format_time(creds.expiration)}")
        await self._patch_status(body, spec, record, status, ready_message=message)
        self._events(body, type="Normal", reason="Issued" if previous is None else "Rotated", message=message)
        metrics.ROTATIONS.labels(namespace=spec.namespace, trigger=trigger.name.lower()).inc()
        log.info("%s/%s: %s", spec.namespace, spec.name, message)
        if previous is not None:  # a rotation, not a first issue: consumers hold old credentials
            self._restart_consumers(body, spec)
        return record

    async def _report_current(self, body: Mapping[str, Any], spec: CredentialSpec, record: IssuedRecord,
                              decision: Decision, status: dict[str, Any]) -> None:
        """Nothing to issue: make the status match the Secret (after a restart or a crash between writes)."""
        ready = find_condition(status.get("conditions"), reasons.READY)
        generation = (body.get("metadata") or {}).get("generation")
        if (status.get("accessKeyId") == record.access_key_id and ready is not None
                and ready.get("status") == "True" and status.get("observedGeneration") == generation
                and status.get("secretName") == spec.target.secret_name):
            return
        message = (f"Secret {spec.target.secret_name} holds {record.access_key_id} for {spec.role_arn}; "
                   f"expires {format_time(record.expiration)}")
        await self._patch_status(body, spec, record, status, ready_message=message)

    async def _patch_status(self, body: Mapping[str, Any], spec: CredentialSpec, record: IssuedRecord,
                            status: Mapping[str, Any], *, ready_message: str) -> None:
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
        await asyncio.to_thread(self._kube.patch_credential_status, spec.namespace, spec.name, new_status)

    async def _report_failure(self, body: Mapping[str, Any], exc: IssuingError, status: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        previous = find_condition(status.get("conditions"), reasons.READY)
        conditions = set_condition(status.get("conditions"), type_=reasons.READY, status=False, reason=exc.reason,
                                   message=exc.message, generation=generation, now=self._clock())
        # Other status fields still describe the Secret, which stays valid until it expires.
        try:
            await asyncio.to_thread(self._kube.patch_credential_status, str(meta.get("namespace")),
                                    str(meta.get("name")),
                                    {"conditions": conditions, "observedGeneration": generation})
        except IssuingError as patch_exc:
            log.warning("could not report failure on %s/%s: %s", meta.get("namespace"), meta.get("name"),
                        patch_exc.message)
        repeated = previous is not None and previous.get("reason") == exc.reason and \
            previous.get("message") == exc.message
        if not repeated:  # one Event per distinct failure, not one per retry
            self._events(body, type="Warning", reason=exc.reason, message=exc.message)

    def _restart_consumers(self, body: Mapping[str, Any], spec: CredentialSpec) -> None:
        if self._restarter is None:
            return

        def report(target: tuple[str, str, str], message: str) -> None:
            self._events(body, type="Warning", reason="RolloutRestartFailed", message=message)

        for target in spec.rollout_restart_targets:
            self._restarter.request((target.kind, spec.namespace, target.name), report)
