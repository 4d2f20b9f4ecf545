"""One pass, gathered then decided: the pure decision over a PassInput (a table), and what the gatherer reads
(which requests, in which order, and where it stops) into the frozen value it returns."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.test_reconciler import IDENTITY, NOW, UID, Api, body
from vault_sts_operator.api.specs import parse_identity
from vault_sts_operator.domain.credential_pass import (
    IdentityAccess,
    Issue,
    PassInput,
    Plan,
    Refuse,
    Report,
    decide_pass,
    refusal,
    sleep_seconds,
)
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord, Trigger
from vault_sts_operator.domain.errors import IdentityNotFoundError, InvalidSpecError
from vault_sts_operator.domain.kept_credentials import KeptCredentials, KeptCredentialStore
from vault_sts_operator.outputs.issued_record import record_annotations
from vault_sts_operator.services.gatherer import CredentialGatherer, KnownSecret, issue_key
from vault_sts_operator.services.secret_writer import SecretWriter

ROLE = "arn:aws:iam::123456789012:role/app"
ACCESS = IdentityAccess("ops", ("team",), ("arn:aws:iam::123456789012:role/*",))
BY_LABEL = IdentityAccess("ops", (), ("arn:aws:iam::123456789012:role/*",), (("tier", "gold"),))
RECORD = IssuedRecord(issued_at=NOW - timedelta(minutes=10), expiration=NOW + timedelta(minutes=50),
                      spec_hash="h", rotate_request="", access_key_id="ASIA1", assumed_role_arn="arn:role")
CREDS = TemporaryCredentials(access_key_id="ASIAKEPT", secret_access_key="s", session_token="t",
                             expiration=NOW + timedelta(hours=1), assumed_role_arn="arn:role")
KEPT = KeptCredentials(key="k", creds=CREDS, issued_at=NOW - timedelta(minutes=1),
                       usable_until=NOW + timedelta(minutes=30))
BAD_SPEC = InvalidSpecError("spec.roleArn is required")
NO_IDENTITY = IdentityNotFoundError("MFAIdentity 'ops' does not exist")
TENANCY = InvalidSpecError("spec.tags: not allowed")

FULL = PassInput(namespace="team", name="app", now=NOW, role_arn=ROLE, spec_hash="h", identity=ACCESS,
                 issue_key="k", record=RECORD)


def plan_of(**changes: Any) -> Plan:
    return decide_pass(dataclasses.replace(FULL, **changes), rotate_min_interval=timedelta(minutes=5))


CASES: list[tuple[str, dict[str, Any], Plan]] = [
    ("unparsable spec first", {"spec_error": BAD_SPEC, "secret_problems": ("x",)}, Refuse(BAD_SPEC)),
    ("missing identity", {"identity": None, "identity_error": NO_IDENTITY}, Refuse(NO_IDENTITY)),
    ("tenancy refused", {"tenancy_error": TENANCY}, Refuse(TENANCY)),
    ("current Secret", {}, Report(RECORD, RECORD.expiration)),  # (renew_at: jittered, checked by its range)
    ("no Secret yet", {"record": None}, Issue(Trigger.MISSING)),
    ("spec changed", {"spec_hash": "other"}, Issue(Trigger.SPEC_CHANGED)),
    ("expired", {"now": NOW + timedelta(hours=1)}, Issue(Trigger.EXPIRED)),
    ("rotation requested, Secret old enough", {"rotate_request": "1"}, Issue(Trigger.ROTATION_REQUESTED)),
    ("kept credentials for the same request", {"record": None, "kept": KEPT}, Issue(Trigger.MISSING, KEPT)),
    ("kept credentials for another request", {"record": None, "kept": KEPT, "issue_key": "other"},
     Issue(Trigger.MISSING)),
    ("kept credentials past their renewal time", {"record": None, "kept": KEPT, "now": NOW + timedelta(minutes=30)},
     Issue(Trigger.MISSING)),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_plan(changes: dict[str, Any], expected: Plan) -> None:
    plan = plan_of(**changes)
    if isinstance(expected, Report):  # the renewal time is jittered: it is the record's, before its expiry
        assert isinstance(plan, Report) and plan.record == RECORD and plan.deferred_until is None
        assert NOW < plan.renew_at < RECORD.expiration
    else:
        assert plan == expected


def test_a_rotation_requested_too_soon_is_deferred_and_comes_back_then() -> None:
    plan = plan_of(record=dataclasses.replace(RECORD, issued_at=NOW - timedelta(minutes=1)), rotate_request="1")
    assert isinstance(plan, Report) and plan.deferred_until == NOW + timedelta(minutes=4)
    assert plan.come_back_at == plan.deferred_until


@pytest.mark.parametrize(("changes", "reason"), [
    ({"secret_problems": ("metadata.labels: bad",)}, "InvalidSpec"),
    ({"namespace": "elsewhere"}, "NotAllowed"),
    ({"role_arn": "arn:aws:iam::999999999999:role/app"}, "NotAllowed"),
    ({"identity": BY_LABEL, "namespace_labels": {"tier": "silver"}}, "NotAllowed"),
])
def test_refusals(changes: dict[str, Any], reason: str) -> None:
    plan = plan_of(**changes)
    assert isinstance(plan, Refuse) and plan.error.reason == reason


def test_the_secrets_problems_are_named_up_to_five() -> None:
    plan = plan_of(secret_problems=tuple(f"p{i}" for i in range(7)))
    assert isinstance(plan, Refuse)
    assert plan.error.message == "the Secret would be refused by the API server: p0; p1; p2; p3; p4; and 2 more"


def test_a_label_selected_namespace_is_allowed_and_undecided_before_its_labels_are_read() -> None:
    assert isinstance(plan_of(identity=BY_LABEL, namespace_labels={"tier": "gold"}), Report)
    # labels not read yet: nothing refuses so far, not even what comes after the allow-lists
    assert refusal(dataclasses.replace(FULL, identity=BY_LABEL, tenancy_error=TENANCY)) is None
    assert refusal(dataclasses.replace(FULL, identity=None)) is None  # identity not resolved yet


def test_sleep_seconds_is_bounded() -> None:
    assert sleep_seconds(NOW + timedelta(seconds=90), now=NOW, max_sleep=3600) == 90
    assert sleep_seconds(NOW - timedelta(seconds=90), now=NOW, max_sleep=3600) == 1.0
    assert sleep_seconds(NOW + timedelta(hours=5), now=NOW, max_sleep=3600) == 3600


# --- the gatherer --------------------------------------------------------------------------------------------------

class LabelledApi(Api):
    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        self.requests.append("GET namespaces")
        return {"tier": "gold"}


def gather(api: Api, cr: dict[str, Any], resolve: Any = lambda name: IDENTITY, *,
           kept: KeptCredentialStore | None = None, **kwargs: Any) -> Any:
    gatherer = CredentialGatherer(kube=api, writer=SecretWriter(api), kept=kept or KeptCredentialStore(),  # type: ignore[arg-type]
                                  clock=lambda: NOW)
    return asyncio.run(gatherer.gather(cr, resolve, **kwargs))


def secret_with(record: IssuedRecord) -> dict[str, Any]:
    return {"metadata": {"name": "app-aws", "namespace": "team", "resourceVersion": "7",
                         "annotations": record_annotations(record),
                         "ownerReferences": [{"apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
                                              "name": "app", "uid": UID, "controller": True}]}}


def test_gathers_everything_into_one_frozen_value() -> None:
    api = Api()
    api.secrets[("team", "app-aws")] = secret_with(RECORD)
    store = KeptCredentialStore()
    store.keep(("team", "app", UID), KEPT, now=NOW)
    gathered = gather(api, body(rotate="r1"), kept=store)
    facts = gathered.facts
    assert api.requests == ["GET secrets"]
    assert (facts.namespace, facts.name, facts.now, facts.rotate_request) == ("team", "app", NOW, "r1")
    assert facts.role_arn == ROLE and facts.identity == IdentityAccess(
        "ops", ("team",), ("arn:aws:iam::123456789012:role/*",))
    assert facts.record == RECORD and facts.kept == KEPT and len(store) == 1  # read, not taken
    assert facts.issue_key == issue_key(IDENTITY, gathered.spec) and facts.spec_hash == gathered.spec.issuance_hash()
    assert gathered.known == KnownSecret("app-aws", "7", RECORD) and gathered.verified
    with pytest.raises(dataclasses.FrozenInstanceError):
        gathered.facts = facts  # type: ignore[misc]


def test_a_known_secret_is_trusted_without_a_read() -> None:
    api = Api()
    known = KnownSecret("app-aws", "9", RECORD)
    gathered = gather(api, body(), known=known)
    assert api.requests == [] and gathered.facts.record == RECORD and not gathered.verified
    assert gathered.current == {"metadata": {"resourceVersion": "9"}}


def test_a_new_credential_in_session_mode_reads_nothing() -> None:
    api = Api()
    gathered = gather(api, body(), secret_absent=True)
    assert api.requests == [] and gathered.facts.record is None and gathered.current is None


def test_the_namespace_labels_are_read_only_for_an_identity_that_selects_by_label() -> None:
    spec = {"vault": {"address": "https://v", "auth": {"tokenSecretRef": {"name": "t", "key": "k"}}},
            "accessKey": {"kv": {"path": "aws/ops"}},
            "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/ops", "totp": {"key": "ops"}},
            "allowedNamespaceSelector": {"matchLabels": {"tier": "gold"}},
            "allowedRoleArns": ["arn:aws:iam::123456789012:role/*"]}
    from tests.unit.test_reconciler import RULES
    by_label = parse_identity("ops", "u", spec, default_vault=None, operator_namespace="x", rules=RULES)
    assert by_label.allowed_namespace_labels == (("tier", "gold"),)
    api = LabelledApi()
    gathered = gather(api, body(), lambda name: by_label)
    assert api.requests == ["GET namespaces", "GET secrets"]
    assert gathered.facts.namespace_labels == {"tier": "gold"} and isinstance(decide_pass(gathered.facts), Issue)


@pytest.mark.parametrize(("change", "reason"), [
    ("bad spec", "InvalidSpec"),
    ("bad Secret", "InvalidSpec"),
    ("no identity", "IdentityNotFound"),
    ("not allowed", "NotAllowed"),
])
def test_gathering_stops_before_any_request_once_the_pass_is_refused(change: str, reason: str) -> None:
    cr = body()
    resolve: Any = lambda name: IDENTITY  # noqa: E731
    if change == "bad spec":
        del cr["spec"]["roleArn"]
    elif change == "bad Secret":
        cr["spec"]["target"]["labels"] = {"bad label!": "x"}
    elif change == "no identity":
        def resolve(name: str) -> Any:
            raise IdentityNotFoundError(f"MFAIdentity {name!r} does not exist")
    else:
        cr["metadata"]["namespace"] = "elsewhere"
    api = Api()
    gathered = gather(api, cr, resolve)
    plan = decide_pass(gathered.facts)
    assert api.requests == [] and isinstance(plan, Refuse) and plan.error.reason == reason
    assert gathered.current is None and gathered.facts.record is None
