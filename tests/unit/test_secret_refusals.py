"""Nothing is spent on a Secret that cannot be written (issue 17, item 5).

- A Secret the API server's own rules refuse (labels, annotations, name, size) is refused before any request:
  apimachinery's rules, checked locally (domain/object_meta.py, outputs/secret_manifest.secret_problems).
- A 4xx answer to the write (RBAC, admission, quota) is SecretRefused, a configuration error: retried slowly, and
  the credentials that pass issued are kept and written by the next pass, with no STS call while they are valid.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.test_reconciler import NOW, Api, Events, Issuer, body, make, run_pass
from vault_sts_operator.api.specs import parse_credential
from vault_sts_operator.clients.kube import REDACTED, KubeGateway, redact_sent_values
from vault_sts_operator.clients.kube_rest import ApiError, status_message
from vault_sts_operator.domain import object_meta
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.errors import KubernetesError, SecretRefusedError
from vault_sts_operator.domain.kept_credentials import KeptCredentials, KeptCredentialStore
from vault_sts_operator.outputs.secret_data import render_secret_data
from vault_sts_operator.outputs.secret_manifest import secret_problems
from vault_sts_operator.services.reconciler import CredentialReconciler

# -- apimachinery's rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "ok"), [
    ("app", True), ("a", True), ("example.com/team", True), ("A_b.c-D", True), ("x" * 63, True),
    ("x" * 64, False), ("-app", False), ("app-", False), ("not valid!", False), ("", False),
    ("a/b/c", False), ("/app", False), ("Example.com/team", False), ("ex..ample.com/team", False),
    ("example.com/", False), (("p" * 254) + "/x", False),
])
def test_qualified_names(key: str, ok: bool) -> None:
    assert (object_meta.qualified_name_problem(key) is None) == ok, key


@pytest.mark.parametrize(("value", "ok"), [
    ("", True), ("v", True), ("a.b_c-D9", True), ("x" * 63, True), ("x" * 64, False), ("not valid!", False),
    ("-v", False), ("v.", False), ("é", False), ("a b", False),
])
def test_label_values(value: str, ok: bool) -> None:
    assert (object_meta.label_value_problem(value) is None) == ok, value


@pytest.mark.parametrize(("name", "ok"), [
    ("app-aws", True), ("a.b", True), ("a" * 253, True), ("a" * 254, False), ("a..b", False), ("a.-b", False),
    ("App", False), ("a_b", False), ("-a", False), ("", False),
])
def test_secret_names(name: str, ok: bool) -> None:
    assert (object_meta.dns_subdomain_problem(name) is None) == ok, name


def test_annotation_keys_are_checked_lowercased_and_their_total_size_counts_reserved_bytes() -> None:
    assert object_meta.annotation_problems({"Example.com/Note": "x"}, "a") == []  # as apimachinery: lowercased
    assert object_meta.annotation_problems({"bad key": "x"}, "a")
    just = {"k": "v" * (object_meta.TOTAL_ANNOTATION_SIZE_MAX - 1 - 100)}
    assert object_meta.annotation_problems(just, "a", reserved=100) == []
    assert object_meta.annotation_problems(just, "a", reserved=101)


def spec_of(**target: Any) -> Any:
    """A credential whose target is taken as given (parse_credential's own limits, domain/sts_limits.py, refuse
    some of these first: secret_problems is checked on its own here)."""
    spec = parse_credential("team", "app", {"identityRef": {"name": "ops"},
                                            "roleArn": "arn:aws:iam::123456789012:role/app"})
    return dataclasses.replace(spec, target=dataclasses.replace(spec.target, **{
        {"secretName": "secret_name"}.get(k, k): v for k, v in target.items()}))


@pytest.mark.parametrize(("target", "needle"), [
    ({"labels": {"a": "not valid!"}}, "spec.target.labels value of 'a'"),
    ({"labels": {"not valid!": "v"}}, "spec.target.labels key 'not valid!'"),
    ({"annotations": {"big": "x" * (256 * 1024)}}, "spec.target.annotations total"),
    ({"annotations": {"x/y/z": "v"}}, "spec.target.annotations key 'x/y/z'"),
    ({"secretName": "a..b"}, "spec.target.secretName must be a DNS subdomain"),
    ({"profile": "p" * (1024 * 1024)}, "the Secret's data would be"),
])
def test_secret_problems_name_what_the_api_server_would_refuse(target: dict[str, Any], needle: str) -> None:
    problems = secret_problems(spec_of(**target), rotate_request="", now=NOW)
    assert any(needle in p for p in problems), problems
    assert not any("x" * 50 in p for p in problems)  # no value (nor a long key) is echoed


def test_secret_problems_accept_what_the_api_server_accepts() -> None:
    ok = spec_of(secretName="app.aws", labels={"example.com/team": "a", "empty": ""},
                 annotations={"note": "x" * (200 * 1024)})
    assert secret_problems(ok, rotate_request="r" * 1000, now=NOW) == []
    # a tenant value for one of the operator's own labels is overwritten by the operator's, so never refused
    overridden = spec_of(labels={"app.kubernetes.io/managed-by": "not valid!"})
    assert secret_problems(overridden, rotate_request="", now=NOW) == []


def test_the_operators_own_annotations_and_rotate_value_take_part_of_the_limit() -> None:
    room = 256 * 1024 - len("note") - 2000
    assert secret_problems(spec_of(annotations={"note": "x" * room}), rotate_request="", now=NOW) == []
    assert secret_problems(spec_of(annotations={"note": "x" * room}), rotate_request="r" * 2000, now=NOW)


def test_a_credential_name_longer_than_a_label_value_is_refused() -> None:
    long = dataclasses.replace(spec_of(secretName="short"), name="n" * 64)
    assert any("vaultsts.io/credential" in p for p in secret_problems(long, rotate_request="", now=NOW))


# -- the API server's answer ---------------------------------------------------------------------------------------

CREDS = TemporaryCredentials(access_key_id="ASIAEXAMPLEEXAMPLE01",
                             secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
                             session_token="FwoGZXIvYXdzEBYaDEXAMPLETOKENVALUE+/=", expiration=NOW)


def manifest() -> dict[str, Any]:
    return {"metadata": {"namespace": "team", "name": "app-aws"},
            "stringData": render_secret_data(CREDS, "default")}


class Rest:
    def __init__(self, error: ApiError) -> None:
        self.error = error

    async def request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise self.error


def write(error: ApiError, verb: str) -> Any:
    gateway = KubeGateway(Rest(error))  # type: ignore[arg-type]
    call = gateway.create_secret(manifest()) if verb == "create" else gateway.replace_secret(manifest(), "1")
    return asyncio.run(call)


@pytest.mark.parametrize("verb", ["create", "replace"])
@pytest.mark.parametrize("status", [400, 403, 413, 422])
def test_a_4xx_answer_to_the_secret_write_is_a_configuration_error(verb: str, status: int) -> None:
    with pytest.raises(SecretRefusedError) as caught:
        write(ApiError(status, "Refused", 'admission webhook "x" denied the request: no'), verb)
    assert not caught.value.transient and caught.value.reason == "SecretRefused"
    assert f"HTTP {status} Refused: admission webhook" in caught.value.message


@pytest.mark.parametrize(("status", "verb", "expected"), [
    (409, "create", None), (409, "replace", None), (404, "replace", None),  # handled by the writer: unchanged
])
def test_conflicts_and_vanished_secrets_are_not_refusals(status: int, verb: str, expected: Any) -> None:
    assert write(ApiError(status, "x"), verb) is expected


@pytest.mark.parametrize("status", [0, 401, 404, 429, 500, 503])
def test_other_answers_stay_transient(status: int) -> None:
    verb = "create"
    with pytest.raises(KubernetesError) as caught:
        write(ApiError(status, "x"), verb)
    assert caught.value.transient and not isinstance(caught.value, SecretRefusedError)


def test_a_refusal_that_quotes_the_secret_shows_none_of_its_values() -> None:
    import base64

    said = (f"denied: {CREDS.secret_access_key} and {CREDS.session_token} in "
            f"{base64.b64encode(CREDS.session_token.encode()).decode()} and "
            f"{base64.b64encode(render_secret_data(CREDS, 'default')['credentials'].encode()).decode()}")
    with pytest.raises(SecretRefusedError) as caught:
        write(ApiError(403, "Forbidden", said), "create")
    text = f"{caught.value.message} {caught.value.detail} {caught.value!r}"
    for secret in (CREDS.secret_access_key, CREDS.session_token, "EXAMPLEKEY", "TOKENVALUE"):
        assert secret not in text
    assert text.count(REDACTED) >= 4
    assert redact_sent_values("nothing secret here", manifest()) == "nothing secret here"


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"kind":"Status","message":"secrets \\"x\\" is forbidden","code":403}', 'secrets "x" is forbidden'),
    (b"not json", ""), (b"[]", ""), (b"", ""), (b'{"message": "' + b"m" * 5000 + b'"}', "m" * 1024),
])
def test_status_message(raw: bytes, expected: str) -> None:
    assert status_message(raw) == expected


# -- kept credentials ----------------------------------------------------------------------------------------------


def kept(key: str = "k", until: timedelta = timedelta(minutes=40)) -> KeptCredentials:
    return KeptCredentials(key=key, creds=CREDS, issued_at=NOW, usable_until=NOW + until)


def test_kept_credentials_are_taken_once_for_the_same_request_before_their_renewal() -> None:
    store = KeptCredentialStore()
    owner = ("team", "app", "uid")
    store.keep(owner, kept(), now=NOW)
    assert store.take(owner, "other-request", now=NOW) is None and owner not in store  # dropped
    store.keep(owner, kept(), now=NOW)
    assert store.take(owner, "k", now=NOW + timedelta(minutes=40)) is None and len(store) == 0  # due: dropped
    store.keep(owner, kept(), now=NOW)
    assert store.take(("team", "app", "new-uid"), "k", now=NOW) is None  # a CR created again is another owner
    taken = store.take(owner, "k", now=NOW + timedelta(minutes=39))
    assert taken is not None and taken.creds == CREDS and len(store) == 0
    assert CREDS.secret_access_key not in repr(taken) and CREDS.session_token not in repr(taken)


def test_the_store_is_bounded() -> None:
    store = KeptCredentialStore(max_entries=3)
    for i in range(3):
        store.keep(("team", f"c{i}", "u"), kept(until=timedelta(minutes=10 + i)), now=NOW)
    store.keep(("team", "c9", "u"), kept(until=timedelta(minutes=30)), now=NOW)
    assert len(store) == 3 and ("team", "c0", "u") not in store  # the one nearest its end went
    store.keep(("team", "c8", "u"), kept(until=timedelta(minutes=30)), now=NOW + timedelta(minutes=20))
    assert len(store) == 2  # expired ones go at each keep
    store.keep(("team", "c7", "u"), kept(until=timedelta(0)), now=NOW)
    assert ("team", "c7", "u") not in store  # nothing already due is kept


# -- one pass, then the next ------------------------------------------------------------------------------------------


class RefusingApi(Api):
    """The API server refusing every Secret write (RBAC, an admission rule, a quota) until `refuse` is cleared."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = True

    async def create_secret(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        if self.refuse:
            self.requests.append("POST secrets (403)")
            raise SecretRefusedError("the API server refused to create Secret team/app-aws: HTTP 403 Forbidden")
        return await super().create_secret(manifest)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


def reconciler_with_clock(api: Api, issuer: Issuer, events: Events, clock: Clock) -> CredentialReconciler:
    from vault_sts_operator.services.secret_writer import SecretWriter

    return CredentialReconciler(kube=api, issuer=issuer, writer=SecretWriter(api), events=events,  # type: ignore[arg-type]
                                clock=clock)


def test_a_refused_write_is_reported_once_retried_slowly_and_spends_no_second_issue() -> None:
    api, issuer, events, clock = RefusingApi(), Issuer(), Events(), Clock()
    reconciler = reconciler_with_clock(api, issuer, events, clock)
    cr = body()
    first = run_pass(reconciler, cr, secret_absent=True)
    assert issuer.issued == 1 and first.failures == 1 and first.sleep_seconds == 600.0
    assert api.status["conditions"][-1]["reason"] == "SecretRefused"
    assert events.posted == [("Warning", "SecretRefused")]
    cr["status"] = {**api.status}
    for minutes in (10, 20, 30):  # the configuration delay, or a spec change: each pass writes the same credentials
        clock.now = NOW + timedelta(minutes=minutes)
        again = run_pass(reconciler, cr, failures=1)
        assert again.failures == 2 and again.sleep_seconds == 600.0
    assert issuer.issued == 1 and events.posted == [("Warning", "SecretRefused")]
    api.refuse = False  # the admin fixed the RBAC (or the admission rule): the kept credentials are written
    clock.now = NOW + timedelta(minutes=35)
    fixed = run_pass(reconciler, cr, failures=2)
    assert fixed.failures == 0 and issuer.issued == 1
    assert api.status["accessKeyId"] == "ASIA1" and api.status["issuedAt"] == "2026-11-26T12:00:00Z"
    assert api.secrets[("team", "app-aws")]["metadata"]["annotations"]["vaultsts.io/issued-at"] == \
        "2026-11-26T12:00:00Z"  # the renewal is computed from the first issue, not from the write


def test_kept_credentials_are_not_used_past_their_renewal_time_or_for_another_request() -> None:
    api, issuer, events, clock = RefusingApi(), Issuer(), Events(), Clock()
    reconciler = reconciler_with_clock(api, issuer, events, clock)
    cr = body()
    run_pass(reconciler, cr, secret_absent=True)
    clock.now = NOW + timedelta(minutes=41)  # 1 h credentials, renewBefore a third: due after at most 40 min
    run_pass(reconciler, cr)
    assert issuer.issued == 2
    cr["spec"]["roleArn"] = "arn:aws:iam::123456789012:role/other"  # another request: issued afresh
    run_pass(reconciler, cr)
    assert issuer.issued == 3
    cr["spec"]["target"]["labels"] = {"fixed": "yes"}  # only the Secret's shape changed: the same request
    run_pass(reconciler, cr)
    assert issuer.issued == 3
    api.refuse = False
    run_pass(reconciler, cr)
    assert issuer.issued == 3 and api.secrets[("team", "app-aws")]["metadata"]["labels"]["fixed"] == "yes"


def test_a_transient_write_failure_keeps_the_credentials_too() -> None:
    class FlakyApi(Api):
        fail = True

        async def create_secret(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
            if self.fail:
                raise KubernetesError("creating Secret team/app-aws: HTTP 503 Service Unavailable")
            return await super().create_secret(manifest)

    api, issuer, events = FlakyApi(), Issuer(), Events()
    reconciler = make(api, issuer, events)
    first = run_pass(reconciler, body(), secret_absent=True)
    assert first.failures == 1 and first.sleep_seconds < 10  # transient: the usual quick backoff
    api.fail = False
    assert run_pass(reconciler, body(), failures=1).failures == 0 and issuer.issued == 1


def test_a_secret_the_api_server_would_refuse_is_refused_before_anything_is_asked() -> None:
    api, issuer, events = Api(), Issuer(), Events()
    cr = body()
    cr["spec"]["target"]["secretName"] = "app..aws"  # the CRD's pattern lets it through; the API server would not
    result = run_pass(make(api, issuer, events), cr, secret_absent=True)
    assert issuer.issued == 0 and api.requests == ["PATCH status"]  # no Secret read, no namespace read
    cond = api.status["conditions"][-1]
    assert cond["reason"] == "InvalidSpec" and "spec.target.secretName must be a DNS subdomain" in cond["message"]
    cr["spec"]["target"] = {"secretName": "app-aws", "labels": {"a": "not valid!"}}  # refused either way
    run_pass(make(api, issuer, events), cr, secret_absent=True)
    assert issuer.issued == 0 and api.status["conditions"][-1]["reason"] == "InvalidSpec"
    assert "not valid!" not in api.status["conditions"][-1]["message"]
    assert result.sleep_seconds == 600.0 and [r for _t, r in events.posted] == ["InvalidSpec", "InvalidSpec"]


# -- mfa: direct is the admin's explicit choice ----------------------------------------------------------------------


def test_an_identity_that_lists_no_mfa_modes_allows_session_only() -> None:
    from vault_sts_operator.api.specs import ConnectionRules, parse_identity
    from vault_sts_operator.domain.errors import NotAllowedError
    from vault_sts_operator.domain.tenancy import TenantPolicy
    from vault_sts_operator.services.issuer import tenant_parameters

    raw = {"vault": {"address": "https://v", "auth": {"tokenSecretRef": {"name": "t", "key": "k"}}},
           "accessKey": {"kv": {"path": "aws/ops"}},
           "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/ops", "totp": {"key": "ops"}},
           "allowedNamespaces": ["team"], "allowedRoleArns": ["arn:aws:iam::123456789012:role/*"]}
    rules = ConnectionRules(vault_addresses=("https://v",))
    assert TenantPolicy().mfa_modes == ("session",)
    for limits in ({}, {"limits": {}}, {"limits": {"maxDurationSeconds": 3600}}):
        identity = parse_identity("ops", "u", {**raw, **limits}, default_vault=None, operator_namespace="x",
                                  rules=rules)
        assert identity.tenancy.mfa_modes == ("session",), limits
        direct = parse_credential("team", "app", {"identityRef": {"name": "ops"}, "mfa": "direct",
                                                  "roleArn": "arn:aws:iam::123456789012:role/app"})
        with pytest.raises(NotAllowedError, match=r"limits\.mfaModes: session"):
            tenant_parameters(identity, direct)
    both = parse_identity("ops", "u", {**raw, "limits": {"mfaModes": ["session", "direct"]}}, default_vault=None,
                          operator_namespace="x", rules=rules)
    assert both.tenancy.mfa_modes == ("session", "direct")


def test_the_crd_defaults_mfa_modes_to_session() -> None:
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    for path in (root / "crds/vaultsts.io_mfaidentities.yaml",
                 root / "charts/vault-sts-operator/files/crds/vaultsts.io_mfaidentities.yaml"):
        crd = yaml.safe_load(path.read_text())
        limits = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["limits"]
        assert limits["default"] == {}  # so that the nested default applies to an identity without limits
        assert limits["properties"]["mfaModes"]["default"] == ["session"], path
