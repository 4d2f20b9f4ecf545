"""Tables for one reconciler pass: what it asks of the API server, and what it leaves behind.

The API server and the issuer are small in-memory stand-ins here (pure pass logic); the
end-to-end and fault suites run the same passes against the real apiserver, Vault and STS.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vault_sts_operator.api.specs import ConnectionRules, parse_identity
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.errors import StsError
from vault_sts_operator.domain.timefmt import format_time
from vault_sts_operator.services.reconciler import CredentialReconciler
from vault_sts_operator.services.secret_writer import SecretWriter

ALLOWED_VAULTS = ("https://127.0.0.1:8200", "https://v:8200", "https://v", "http://v:8200", "https://other:8200")
RULES = ConnectionRules(vault_addresses=ALLOWED_VAULTS)


NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
UID = "uid-1"
IDENTITY = parse_identity("ops", "u", {
    "vault": {"address": "https://v", "auth": {"tokenSecretRef": {"name": "t", "key": "k"}}},
    "accessKey": {"kv": {"path": "aws/ops"}},
    "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/ops", "totp": {"key": "ops"}},
    "allowedNamespaces": ["team"], "allowedRoleArns": ["arn:aws:iam::123456789012:role/*"],
    "limits": {"mfaModes": ["session", "direct"]}},  # direct is the admin's explicit choice
    default_vault=None, operator_namespace="x", rules=RULES)



class Api:
    """Secrets and CR statuses in memory; logs each request as "VERB resource"."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.requests: list[str] = []
        self.version = 0
        self.gone = False  # the CR was deleted

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests.append("GET secrets")
        found = self.secrets.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def _store(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(manifest)
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["metadata"].setdefault("uid", f"secret-{self.version}")
        self.secrets[(stored["metadata"]["namespace"], stored["metadata"]["name"])] = stored
        return stored

    async def create_secret(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        self.requests.append("POST secrets")
        if (manifest["metadata"]["namespace"], manifest["metadata"]["name"]) in self.secrets:
            return None
        return self._store(manifest)

    async def replace_secret(self, manifest: dict[str, Any], resource_version: str) -> dict[str, Any] | None:
        self.requests.append("PUT secrets")
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if self.secrets.get(key, {}).get("metadata", {}).get("resourceVersion") != resource_version:
            return None
        return self._store(manifest)

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        self.requests.append("DELETE secrets")
        self.secrets.pop((namespace, name), None)

    async def patch_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        self.requests.append("PATCH status")
        if self.gone:
            return False
        self.status.update(copy.deepcopy(status))
        return True

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        self.requests.append("GET namespaces")
        return {}


class Issuer:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.issued = 0

    async def issue(self, identity: Any, spec: Any) -> TemporaryCredentials:
        if self.fail is not None:
            raise self.fail
        self.issued += 1
        return TemporaryCredentials(access_key_id=f"ASIA{self.issued}", secret_access_key="s", session_token="t",
                                    expiration=NOW + timedelta(hours=1), assumed_role_arn="arn:role")


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    async def __call__(self, body: Any, *, type_: str, reason: str, message: str) -> None:
        self.posted.append((type_, reason))


def body(status: dict[str, Any] | None = None, rotate: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
        "metadata": {"name": "app", "namespace": "team", "uid": UID, "generation": 1,
                     "annotations": {"vaultsts.io/rotate": rotate} if rotate else {}},
        "spec": {"identityRef": {"name": "ops"}, "roleArn": "arn:aws:iam::123456789012:role/app",
                 "target": {"secretName": "app-aws"}},
        "status": status or {},
    }


def cond(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c["type"] == type_), None)


def make(api: Api, issuer: Issuer, events: Events) -> CredentialReconciler:
    return CredentialReconciler(kube=api, issuer=issuer, writer=SecretWriter(api), events=events,  # type: ignore[arg-type]
                                clock=lambda: NOW)


def run_pass(reconciler: CredentialReconciler, cr: dict[str, Any], failures: int = 0, **kwargs: Any) -> Any:
    return asyncio.run(reconciler.reconcile(cr, lambda name: IDENTITY, failures, **kwargs))


def issued_cr() -> tuple[Api, dict[str, Any]]:
    """An API server holding a CR issued once (Secret and status), and that CR's body."""
    api, cr, _ = issued_with_known()
    return api, cr


def issued_with_known() -> tuple[Api, dict[str, Any], Any]:
    api, events = Api(), Events()
    result = run_pass(make(api, Issuer(), events), body(), secret_absent=True)
    return api, body(status={**api.status, **(result.status or {})}), result.secret


FOREIGN = {"metadata": {"name": "app-aws", "namespace": "team", "resourceVersion": "7", "uid": "s0",
                        "annotations": {}}, "data": {"x": "eQ=="}}
OTHER_CR = {"metadata": {"name": "app-aws", "namespace": "team", "resourceVersion": "7", "uid": "s0",
                         "ownerReferences": [{"apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
                                              "name": "other", "uid": "uid-other", "controller": True}]},
            "data": {"x": "eQ=="}}


@pytest.mark.parametrize(("hint", "expected"), [
    (True, ["POST secrets", "PATCH status"]),                  # a new CR: no GET before the create
    (False, ["GET secrets", "POST secrets", "PATCH status"]),  # nothing known: read first
])
def test_first_issue_requests(hint: bool, expected: list[str]) -> None:
    api, issuer, events = Api(), Issuer(), Events()
    result = run_pass(make(api, issuer, events), body(), secret_absent=hint)
    assert api.requests == expected
    assert events.posted == [("Normal", "Issued")]
    assert result.failures == 0 and issuer.issued == 1
    assert api.status["accessKeyId"] == "ASIA1" and api.status["renewalTime"]
    assert result.status == api.status
    assert 0 < result.sleep_seconds <= 3600
    assert {c["type"]: (c["status"], c["reason"]) for c in api.status["conditions"]} == {
        "Ready": ("True", "Issued"), "RotationFailing": ("False", "Succeeded")}  # Reconciling is gone
    assert api.status["failedAttempts"] == 0 and api.status["nextRetryTime"] is None


@pytest.mark.parametrize(("existing", "reason", "writes"), [
    (FOREIGN, "SecretConflict", []),    # not ours: never overwritten
    (OTHER_CR, "SecretConflict", []),   # another CR's Secret
])
@pytest.mark.parametrize("hint", [True, False])
def test_conflicts_leave_the_secret_alone(existing: dict[str, Any], reason: str, writes: list[str],
                                          hint: bool) -> None:
    api, issuer, events = Api(), Issuer(), Events()
    api.secrets[("team", "app-aws")] = copy.deepcopy(existing)
    result = run_pass(make(api, issuer, events), body(), secret_absent=hint)
    assert api.secrets[("team", "app-aws")] == existing
    assert [r for r in api.requests if r in ("PUT secrets", "DELETE secrets")] == writes
    assert (cond(api.status, "Ready")["status"], cond(api.status, "Ready")["reason"]) == ("False", reason)
    assert (cond(api.status, "Stalled")["status"], cond(api.status, "Stalled")["reason"]) == ("True", reason)
    assert cond(api.status, "Reconciling") is None
    assert events.posted == [("Warning", reason)]
    assert result.failures == 1 and result.sleep_seconds == 600.0  # a configuration error: retried slowly
    # Without the hint no STS call is spent on a CR whose Secret is not ours.
    assert issuer.issued == (1 if hint else 0)


def test_direct_mode_always_reads_first() -> None:
    """mfa: direct spends a TOTP code per issue: never before knowing the Secret is ours to write."""
    api, issuer, events = Api(), Issuer(), Events()
    api.secrets[("team", "app-aws")] = copy.deepcopy(FOREIGN)
    cr = body()
    cr["spec"]["mfa"] = "direct"
    run_pass(make(api, issuer, events), cr, secret_absent=True)
    assert api.requests[0] == "GET secrets"
    assert issuer.issued == 0 and api.secrets[("team", "app-aws")] == FOREIGN


def test_a_wrong_hint_replaces_our_own_secret() -> None:
    """The hint said "no Secret", but our Secret is there (a status patch lost in a crash): replaced once."""
    api, _cr = issued_cr()
    api.requests.clear()
    issuer, events = Issuer(), Events()
    issuer.issued = 5
    run_pass(make(api, issuer, events), body(), secret_absent=True)
    assert api.requests == ["POST secrets", "GET secrets", "PUT secrets", "PATCH status"]
    assert api.status["accessKeyId"] == "ASIA6"


def test_failure_keeps_the_secret_and_reports_once() -> None:
    api, cr = issued_cr()
    secret = copy.deepcopy(api.secrets[("team", "app-aws")])
    cr["metadata"]["annotations"] = {"vaultsts.io/rotate": "now"}  # forces an issue
    events = Events()
    reconciler = make(api, Issuer(fail=StsError("STS down")), events)
    first = run_pass(reconciler, cr)
    cr["status"] = {**cr["status"], **(first.status or {})}
    second = run_pass(reconciler, cr, failures=first.failures)
    assert api.secrets[("team", "app-aws")] == secret  # the valid Secret stays
    assert api.status["accessKeyId"] == secret["metadata"]["annotations"]["vaultsts.io/access-key-id"]
    # The Secret is valid and issued for this spec: Ready stays True, the failure is RotationFailing's.
    assert (cond(api.status, "Ready")["status"], cond(api.status, "Ready")["reason"]) == ("True", "Issued")
    assert (cond(api.status, "RotationFailing")["status"],
            cond(api.status, "RotationFailing")["reason"]) == ("True", "STSUnavailable")
    assert cond(api.status, "RotationFailing")["message"].startswith("STS down (2 consecutive failed attempts")
    assert cond(api.status, "Reconciling")["status"] == "True" and cond(api.status, "Stalled") is None
    assert api.status["failedAttempts"] == 2 and api.status["lastFailureTime"] == "2026-11-26T12:00:00Z"
    assert api.status["nextRetryTime"] == format_time(NOW + timedelta(seconds=second.sleep_seconds))
    assert (first.ready, second.ready, second.reason) == (True, True, "Issued")
    assert events.posted == [("Warning", "STSUnavailable")]  # one Event per distinct failure
    assert (first.failures, second.failures) == (1, 2)
    assert 5 <= first.sleep_seconds < second.sleep_seconds <= 300 * 1.25


@pytest.mark.parametrize(("damage", "expected"), [
    ({}, []),                                               # status matches the Secret: nothing to do
    ({"accessKeyId": "stale"}, ["PATCH status"]),           # a crash between Secret and status: repaired
    ({"renewalTime": "2000-01-01T00:00:00Z"}, ["PATCH status"]),
    ({"observedGeneration": 0}, ["PATCH status"]),
])
def test_repairing_only_the_status(damage: dict[str, Any], expected: list[str]) -> None:
    api, cr = issued_cr()
    cr["status"].update(damage)
    secret = copy.deepcopy(api.secrets[("team", "app-aws")])
    api.requests.clear()
    issuer, events = Issuer(), Events()
    result = run_pass(make(api, issuer, events), cr)
    assert api.requests == ["GET secrets", *expected]
    assert issuer.issued == 0 and events.posted == []
    assert api.secrets[("team", "app-aws")] == secret
    assert result.failures == 0


def test_rotation_replaces_at_the_read_version() -> None:
    api, cr = issued_cr()
    cr["metadata"]["annotations"] = {"vaultsts.io/rotate": "1"}
    api.requests.clear()
    issuer, events = Issuer(), Events()
    issuer.issued = 1
    run_pass(make(api, issuer, events), cr)
    assert api.requests == ["GET secrets", "PUT secrets", "PATCH status"]
    assert events.posted == [("Normal", "Rotated")]
    assert api.secrets[("team", "app-aws")]["metadata"]["annotations"]["vaultsts.io/rotate-request"] == "1"


def test_a_credential_deleted_unseen_is_reported_gone() -> None:
    api, issuer, events = Api(), Issuer(), Events()
    api.gone = True
    result = run_pass(make(api, issuer, events), body(), secret_absent=True)
    assert result.gone and result.failures == 0
    assert events.posted == []  # nothing announced about an object that is not there


def _rotate(cr: dict[str, Any]) -> dict[str, Any]:
    cr["metadata"]["annotations"] = {"vaultsts.io/rotate": "1"}
    return cr


@pytest.mark.parametrize(("meddle", "expected"), [
    (None, ["PUT secrets", "PATCH status"]),                                   # as we left it: no read
    ("replace", ["PUT secrets", "GET secrets", "PUT secrets", "PATCH status"]),  # changed since: read, check
    ("delete", ["PUT secrets", "GET secrets", "POST secrets", "PATCH status"]),  # deleted by hand: created
])
def test_a_known_secret_is_replaced_without_a_read(meddle: str | None, expected: list[str]) -> None:
    api, cr, known = issued_with_known()
    assert known is not None and known.name == "app-aws"
    if meddle == "replace":
        api._store(api.secrets[("team", "app-aws")])
    elif meddle == "delete":
        del api.secrets[("team", "app-aws")]
    api.requests.clear()
    issuer, events = Issuer(), Events()
    issuer.issued = 1
    result = run_pass(make(api, issuer, events), _rotate(cr), known=known)
    assert api.requests == expected
    secret = api.secrets[("team", "app-aws")]
    assert secret["metadata"]["annotations"]["vaultsts.io/access-key-id"] == "ASIA2"
    assert result.secret.resource_version == secret["metadata"]["resourceVersion"]


def test_a_known_secret_of_another_owner_is_not_overwritten() -> None:
    api, cr, known = issued_with_known()
    api.secrets[("team", "app-aws")] = copy.deepcopy(FOREIGN)  # replaced by someone else meanwhile
    result = run_pass(make(api, Issuer(), Events()), _rotate(cr), known=known)
    assert api.secrets[("team", "app-aws")] == FOREIGN
    assert result.failures == 1 and api.status["conditions"][-1]["reason"] == "SecretConflict"


def test_a_pass_that_is_not_due_asks_nothing() -> None:
    api, cr, known = issued_with_known()
    api.requests.clear()
    result = run_pass(make(api, Issuer(), Events()), cr, known=known)
    assert api.requests == []
    assert result.secret == known and result.failures == 0


class SlowIssuer(Issuer):
    async def issue(self, identity: Any, spec: Any) -> TemporaryCredentials:
        await asyncio.sleep(0.2)
        return await super().issue(identity, spec)


@pytest.mark.parametrize("fail", [False, True])
def test_a_slow_first_issue_is_reported_as_issuing_before_its_result(fail: bool) -> None:
    """A first issue still under way after the delay writes Ready=False/Issuing, Reconciling=True first; the
    result's write comes after it and replaces it (no Reconciling left after a success)."""
    api, events = Api(), Events()
    issuer = SlowIssuer(fail=StsError("STS down") if fail else None)
    patches: list[dict[str, Any]] = []
    record = api.patch_credential_status

    async def patch(namespace: str, name: str, status: dict[str, Any]) -> bool:
        patches.append(copy.deepcopy(status))
        return await record(namespace, name, status)

    api.patch_credential_status = patch  # type: ignore[method-assign]
    reconciler = CredentialReconciler(kube=api, issuer=issuer, writer=SecretWriter(api), events=events,  # type: ignore[arg-type]
                                      clock=lambda: NOW, issuing_report_seconds=0.05)
    run_pass(reconciler, body(), secret_absent=True)
    first = {c["type"]: (c["status"], c["reason"]) for c in patches[0]["conditions"]}
    assert first == {"Ready": ("False", "Issuing"), "Reconciling": ("True", "Issuing")}
    assert len(patches) == 2
    final = {c["type"]: (c["status"], c["reason"]) for c in api.status["conditions"]}
    if fail:
        assert final == {"Ready": ("False", "STSUnavailable"), "RotationFailing": ("True", "STSUnavailable"),
                         "Reconciling": ("True", "STSUnavailable")}
    else:
        assert final == {"Ready": ("True", "Issued"), "RotationFailing": ("False", "Succeeded")}


def test_a_restarted_operator_finds_the_status_current_whatever_the_issue_time_fraction() -> None:
    """The status and the Secret carry times in whole seconds; the record a pass issues must be the one they carry,
    or a restarted operator computes a renewalTime a second off and rewrites the status: an API write for nothing
    per such credential on every restart (248 of 10,000 in the benchmark's PodIdentity restart)."""
    rewritten = []
    for tenths in range(10):
        issued_at = NOW + timedelta(seconds=tenths / 10 + 0.05)
        api, events = Api(), Events()
        first = CredentialReconciler(kube=api, issuer=Issuer(), writer=SecretWriter(api), events=events,  # type: ignore[arg-type]
                                     clock=lambda moment=issued_at: moment)  # type: ignore[misc]
        result = asyncio.run(first.reconcile(body(), lambda name: IDENTITY, 0, secret_absent=True))
        cr = body(status={**api.status, **(result.status or {})})
        api.requests.clear()
        restarted = make(api, Issuer(), Events())  # a new process: it knows only the Secret and the status
        asyncio.run(restarted.reconcile(cr, lambda name: IDENTITY, 0))
        if "PATCH status" in api.requests:
            rewritten.append(tenths)
    assert rewritten == []
