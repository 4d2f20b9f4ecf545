"""What a tenant may send to AWS: pure tables over domain/tenancy.py, allow-list globs, renewal limits and the
fair device queue."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from vault_sts_operator.api.specs import ConnectionRules, parse_credential, parse_identity
from vault_sts_operator.domain import allowlist
from vault_sts_operator.domain.consumers import opted_in
from vault_sts_operator.domain.decisions import IssuedRecord, Trigger, decide
from vault_sts_operator.domain.errors import InvalidSpecError, NotAllowedError
from vault_sts_operator.domain.renewal import renew_before_refusal
from vault_sts_operator.domain.session_name import qualified_session_name
from vault_sts_operator.domain.tenancy import TenantPolicy, session_parameters, source_identity
from vault_sts_operator.services.issuer import tenant_parameters
from vault_sts_operator.services.limiter import FairLock

ALLOWED_VAULTS = ("https://127.0.0.1:8200", "https://v:8200", "https://v", "http://v:8200", "https://other:8200")
RULES = ConnectionRules(vault_addresses=ALLOWED_VAULTS)

ACCOUNT = "arn:aws:iam::123456789012"
IDENTITY = {
    "vault": {"address": "https://127.0.0.1:8200/", "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}},
    "accessKey": {"kv": {"path": "aws/ops"}},
    "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/ops", "totp": {"key": "ops"}},
    "allowedNamespaces": ["team-a"],
    "allowedRoleArns": [f"{ACCOUNT}:role/app-*"],
}



def params(policy: TenantPolicy, **kw: object):
    args: dict[str, object] = {"identity": "ops", "namespace": "team-a", "name": "billing",
                               "requested_session_name": "", "tenant_tags": {}, "tenant_external_id": "",
                               "duration_seconds": 3600, "mfa_mode": "session"}
    args.update(kw)
    return session_parameters(policy, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "pattern", "matches"),
    [
        (f"{ACCOUNT}:role/app-billing", f"{ACCOUNT}:role/app-*", True),
        (f"{ACCOUNT}:role/app-legacy/PowerUser", f"{ACCOUNT}:role/app-*", False),  # * never crosses /
        (f"{ACCOUNT}:role/app-legacy/PowerUser", f"{ACCOUNT}:role/app-legacy/*", True),
        (f"{ACCOUNT}:role/a/b/c", f"{ACCOUNT}:role/*", False),
        (f"{ACCOUNT}:role/app-x", f"{ACCOUNT}:role/app-?", True),
        (f"{ACCOUNT}:role/app-/", f"{ACCOUNT}:role/app-?", False),
        (f"{ACCOUNT}:role/app-[x]", f"{ACCOUNT}:role/app-[x]", True),  # no character classes: [ is literal
        (f"{ACCOUNT}:role/app-x", f"{ACCOUNT}:role/app-[x]", False),
        ("team-ab", "team-a*", True),  # documented: a prefix glob; use exact names for one namespace
        ("team-a", "team-a", True),
        ("team-ab", "team-a", False),
    ],
)

def test_globs_do_not_cross_slashes(value, pattern, matches):
    assert allowlist.glob_match(value, pattern) is matches


def test_namespace_placeholder_maps_roles_per_namespace():
    patterns = [f"{ACCOUNT}:role/${{namespace}}_*"]
    ok = allowlist.refusal(identity="ops", namespace="team-a", role_arn=f"{ACCOUNT}:role/team-a_billing",
                           allowed_namespaces=["team-*"], allowed_role_arns=patterns)
    assert ok is None
    other = allowlist.refusal(identity="ops", namespace="team-a", role_arn=f"{ACCOUNT}:role/team-b_billing",
                              allowed_namespaces=["team-*"], allowed_role_arns=patterns)
    assert other is not None and "allowedRoleArns" in other and "team-a" in other
    # the namespace's own prefix cannot reach a longer namespace's roles through a path
    assert allowlist.refusal(identity="ops", namespace="team-a", role_arn=f"{ACCOUNT}:role/team-a_x/admin",
                             allowed_namespaces=["team-*"], allowed_role_arns=patterns) is not None


def test_session_names_always_start_with_the_namespace():
    assert qualified_session_name("team-a", "billing") == "team-a@billing"
    assert qualified_session_name("team-a", "team-x-payments") == "team-a@team-x-payments"
    assert qualified_session_name("team-a", "team-a@kept") == "team-a@kept"
    assert qualified_session_name("team-a", "team-b@spoof") == "team-a@team-b@spoof"
    long_ns = "n" * 63
    assert qualified_session_name(long_ns, "x") == long_ns + "@"
    for ns, name in (("team-a", "b-x"), ("team-a-b", "x"), (long_ns, "y" * 80)):
        assert qualified_session_name(ns, name).split("@", 1)[0] == ns  # the namespace reads back
    assert qualified_session_name("team-a", "b-x") != qualified_session_name("team-a-b", "x")


def test_tenant_tags_need_the_identity_to_list_their_keys():
    with pytest.raises(NotAllowedError, match=r"'team' is not one MFAIdentity 'ops' lets tenants set") as refused:
        params(TenantPolicy(tenant_tag_keys=("CostCenter", "Secret-Project")), tenant_tags={"team": "team-b"})
    # the platform's list of keys is not the tenant's to read
    assert "CostCenter" not in refused.value.message and "Secret-Project" not in refused.value.message
    allowed = params(TenantPolicy(tenant_tag_keys=("CostCenter",)), tenant_tags={"costcenter": "42"})
    # tenant tags never travel alone: the reserved, transitive ones come first
    assert allowed.tags == (("vaultsts:namespace", "team-a"), ("vaultsts:credential", "billing"),
                            ("costcenter", "42"))
    assert allowed.transitive_tag_keys == ("vaultsts:namespace", "vaultsts:credential")


@pytest.mark.parametrize("key", ["vaultsts:namespace", "VaultSTS:Namespace", "VAULTSTS:credential",
                                 "vaultsts:other", "aws:foo"])
def test_reserved_tag_keys_are_refused_case_insensitively(key):
    with pytest.raises(InvalidSpecError, match="is reserved"):
        params(TenantPolicy(tenant_tag_keys=("team",), reserved_tags=True), tenant_tags={key: "team-b"})


def test_duplicate_tag_keys_differing_in_case_are_refused():
    with pytest.raises(InvalidSpecError, match="appears twice"):
        params(TenantPolicy(tenant_tag_keys=("team",)), tenant_tags=[("team", "a"), ("Team", "b")])


def test_reserved_tags_and_source_identity_when_the_identity_asks():
    none = params(TenantPolicy())
    assert none.tags == () and none.source_identity == "" and none.external_id == ""
    full = params(TenantPolicy(reserved_tags=True, source_identity=True))
    assert dict(full.tags) == {"vaultsts:namespace": "team-a", "vaultsts:credential": "billing"}
    assert full.source_identity == "team-a@billing"


def test_source_identity_keeps_the_namespace_and_fits_64():
    long_name = "a" * 200
    value = source_identity("team-a", long_name)
    assert len(value) == 64 and value.startswith("team-a@aaa") and "+" in value
    assert source_identity("team-a", long_name) != source_identity("team-a", long_name[:-1] + "b")
    assert source_identity("n" * 63, "x").startswith("n" * 63 + "@")


def test_external_id_comes_from_the_identity():
    policy = TenantPolicy(external_id="acme-${namespace}", external_ids=(("team-z", "zz-special"),))
    assert params(policy).external_id == "acme-team-a"
    assert params(policy, namespace="team-z").external_id == "zz-special"
    assert params(policy, tenant_external_id="acme-team-a").external_id == "acme-team-a"  # same value: harmless
    with pytest.raises(NotAllowedError, match="sets the ExternalId"):
        params(policy, tenant_external_id="chosen-by-tenant")
    with pytest.raises(NotAllowedError, match="does not let tenants choose"):
        params(TenantPolicy(), tenant_external_id="chosen-by-tenant")
    assert params(TenantPolicy(allow_tenant_external_id=True), tenant_external_id="t-1").external_id == "t-1"


def test_a_tenant_value_is_never_another_namespaces_assigned_external_id():
    policy = TenantPolicy(external_ids=(("team-a", "acme-team-a"), ("team-b", "acme-team-b")),
                          allow_tenant_external_id=True)
    with pytest.raises(NotAllowedError, match="reserves this ExternalId for another tenant"):
        params(policy, namespace="team-c", tenant_external_id="acme-team-a")
    assert params(policy, namespace="team-c", tenant_external_id="acme-team-c").external_id == "acme-team-c"
    assert params(policy, namespace="team-a").external_id == "acme-team-a"


@pytest.mark.parametrize(("template", "problem"), [
    ("acme-${namespace}-${name}", "followed by '-'"),  # team/a-x and team-a/x both gave acme-team-a-x
    ("acme-${name}.${namespace}", "followed by '.'"),  # names hold dots
    ("acme-${namespace}${name}", "another placeholder"),
    ("acme-${tenant}", "unknown placeholder"),
])
def test_external_id_templates_must_join_placeholders_unambiguously(template, problem):
    with pytest.raises(InvalidSpecError, match=re.escape(problem)):
        parse_identity("ops", "uid", {**IDENTITY, "externalId": {"value": template}}, default_vault=None,
                       operator_namespace="ops", rules=RULES)


@pytest.mark.parametrize("template", ["acme-${namespace}", "acme-${namespace}.${name}", "acme-${namespace}_${name}",
                                      "acme:${namespace}/${name}", "${name}@${namespace}"])
def test_unambiguous_external_id_templates_are_accepted(template):
    ident = parse_identity("ops", "uid", {**IDENTITY, "externalId": {"value": template}}, default_vault=None,
                           operator_namespace="ops", rules=RULES)
    assert ident.tenancy.external_id == template


@pytest.mark.parametrize(("pattern", "ok"), [
    ("arn:aws:iam::123456789012:role/${namespace}-*", False),  # namespace team reached team-a-billing
    ("arn:aws:iam::123456789012:role/${namespace}*", False),
    ("arn:aws:iam::123456789012:role/${namespace}?x", False),
    ("arn:aws:iam::123456789012:role/*-${namespace}_app", False),  # team matched role/x-a-team_app... of a-team
    ("arn:aws:iam::123456789012:role/${name}", False),  # not a role-pattern placeholder
    ("arn:aws:iam::123456789012:role/${namespace}/*", True),  # an IAM path per namespace
    ("arn:aws:iam::123456789012:role/${namespace}_*", True),
    ("arn:aws:iam::123456789012:role/${namespace}.app", True),
    ("arn:aws:iam::123456789012:role/${namespace}", True),
    ("arn:aws:iam::123456789012:role/*/${namespace}_app", True),  # a glob in an earlier segment only
])
def test_role_patterns_cannot_let_one_namespace_reach_anothers_roles(pattern, ok):
    spec = {**IDENTITY, "allowedRoleArns": [pattern]}
    if ok:
        assert parse_identity("ops", "uid", spec, default_vault=None, operator_namespace="ops",
                              rules=RULES).allowed_role_arns == (pattern,)
    else:
        with pytest.raises(InvalidSpecError, match=r"spec\.allowedRoleArns: "):
            parse_identity("ops", "uid", spec, default_vault=None, operator_namespace="ops", rules=RULES)


def test_accepted_role_patterns_keep_namespaces_apart():
    """With every accepted form, namespace `team` matches none of namespace `team-a`'s roles."""
    for pattern, theirs in (("role/${namespace}/*", "role/team-a/app"), ("role/${namespace}_*", "role/team-a_app"),
                            ("role/${namespace}.app", "role/team-a.app")):
        assert allowlist.placeholder_problems(pattern) == []
        assert not allowlist.glob_match(theirs, allowlist.expand_namespace(pattern, "team"))
        assert allowlist.glob_match(theirs, allowlist.expand_namespace(pattern, "team-a"))


def test_identity_limits():
    with pytest.raises(NotAllowedError, match=r"limits\.maxDurationSeconds"):
        params(TenantPolicy(max_duration_seconds=1800), duration_seconds=3600)
    with pytest.raises(NotAllowedError, match=r"limits\.mfaModes"):
        params(TenantPolicy(mfa_modes=("session",)), mfa_mode="direct")
    assert params(TenantPolicy(max_duration_seconds=3600), duration_seconds=3600).session_name == "team-a@billing"


def test_identity_policy_is_parsed_and_checked():
    spec = {**IDENTITY, "sessionTags": {"reserved": True, "tenantKeys": ["team"]}, "sourceIdentity": {"enabled": True},
            "externalId": {"value": "x-${namespace}", "byNamespace": {"b": "bb"}},
            "limits": {"maxDurationSeconds": 1800, "mfaModes": ["session"]}}
    ident = parse_identity("ops", "uid", spec, default_vault=None, operator_namespace="ops", rules=RULES)
    assert ident.tenancy == TenantPolicy(reserved_tags=True, tenant_tag_keys=("team",), source_identity=True,
                                         external_id="x-${namespace}", external_ids=(("b", "bb"),),
                                         max_duration_seconds=1800, mfa_modes=("session",))
    with pytest.raises(InvalidSpecError, match="is reserved"):
        parse_identity("ops", "uid", {**IDENTITY, "sessionTags": {"tenantKeys": ["VaultSTS:namespace"]}},
                       default_vault=None, operator_namespace="ops", rules=RULES)
    assumed = {**IDENTITY, "accessKey": {"vaultAWS": {"role": "r", "credentialType": "assumedRole"}},
               "sourceIdentity": {"enabled": True}}
    with pytest.raises(InvalidSpecError, match="cannot send session tags, SourceIdentity or an ExternalId"):
        parse_identity("ops", "uid", assumed, default_vault=None, operator_namespace="ops", rules=RULES)


@pytest.mark.parametrize("field", [{"policy": '{"Version":"2012-10-17"}'}, {"policyArns": [f"{ACCOUNT}:policy/p"]},
                                   {"tags": {"team": "a"}}, {"externalId": "abc"}])
def test_vault_assumed_role_refuses_fields_it_would_drop(field):
    spec = {**IDENTITY, "accessKey": {"vaultAWS": {"role": "r", "credentialType": "assumedRole"}}}
    ident = parse_identity("ops", "uid", spec, default_vault=None, operator_namespace="ops", rules=RULES)
    cred = parse_credential("team-a", "billing", {"identityRef": {"name": "ops"},
                                                  "roleArn": f"{ACCOUNT}:role/app-x", **field})
    with pytest.raises(InvalidSpecError, match=f"spec.{next(iter(field))}.*cannot pass them"):
        tenant_parameters(ident, cred)


def test_renew_before_at_or_above_the_lifetime_is_refused():
    assert renew_before_refusal(timedelta(minutes=59), timedelta(hours=1)) is None
    assert "must be shorter" in (renew_before_refusal(timedelta(hours=1), timedelta(hours=1)) or "")
    with pytest.raises(InvalidSpecError, match="renewBefore"):
        parse_credential("team-a", "x", {"identityRef": {"name": "ops"}, "roleArn": f"{ACCOUNT}:role/app-x",
                                         "durationSeconds": 900, "renewBefore": "15m"})


T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_rotate_requests_wait_for_the_minimum_interval():
    rec = IssuedRecord(issued_at=T0, expiration=T0 + timedelta(hours=1), spec_hash="h", rotate_request="",
                       access_key_id="ASIA", assumed_role_arn="arn")
    early = decide(now=T0 + timedelta(seconds=5), record=rec, spec_hash="h", rotate_request="r1",
                   renew_before=None, jitter_key="k", rotate_min_interval=timedelta(seconds=60))
    assert early.trigger is None and early.deferred_until == T0 + timedelta(seconds=60)
    late = decide(now=T0 + timedelta(seconds=60), record=rec, spec_hash="h", rotate_request="r1",
                  renew_before=None, jitter_key="k", rotate_min_interval=timedelta(seconds=60))
    assert late.trigger is Trigger.ROTATION_REQUESTED


def test_restart_opt_in_names_the_credential():
    key = "vaultsts.io/restart-on-rotation"
    assert opted_in({key: "billing"}, "billing")
    assert opted_in({key: "a, billing ,c"}, "billing")
    assert not opted_in({key: "billing-2"}, "billing")
    assert not opted_in({}, "billing") and not opted_in(None, "billing")


def test_the_device_queue_is_fair_between_namespaces():
    """team-a holds the device with four more uses queued when team-b asks once: team-b goes next; a team-b
    that asks only after team-a's second turn began still goes before team-a's third."""
    async def run(b_after: int) -> list[str]:
        lock = FairLock()
        order: list[str] = []

        async def use(tenant: str, index: int) -> None:
            async with lock.hold(tenant):
                order.append(f"{tenant}{index}")
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(use("a", 0))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(use("a", i)) for i in range(1, 5)]
        while len(order) < b_after:
            await asyncio.sleep(0.001)
        tasks.append(asyncio.create_task(use("b", 0)))
        await asyncio.gather(*tasks)
        assert not lock._held and not lock._queues  # released, and no waiter queue kept
        return order

    assert asyncio.run(run(0)) == ["a0", "b0", "a1", "a2", "a3", "a4"]
    assert asyncio.run(run(2)) == ["a0", "a1", "b0", "a2", "a3", "a4"]


def test_a_cancelled_waiter_leaves_the_lock_usable():
    async def run() -> bool:
        lock = FairLock()
        await lock.acquire("a")
        waiter = asyncio.create_task(lock.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        lock.release()
        await asyncio.wait_for(lock.acquire("c"), 1)
        return lock._held

    assert asyncio.run(run())


def test_a_namespace_selector_on_a_label_tenants_may_set_is_warned_about():
    assert allowlist.selector_warnings([("kubernetes.io/metadata.name", "team-a")]) == []
    (warning,) = allowlist.selector_warnings([("team", "payments"), ("kubernetes.io/metadata.name", "x")])
    assert "matches on team" in warning and "kubernetes.io/metadata.name" in warning
