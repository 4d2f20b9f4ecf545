"""Tenants cannot pass as each other at AWS (issue 10): each attack tried as a tenant (or an identity author) would,
on the real stack, and shown refused with nothing issued: no Secret, no STS call of the identity's IAM user, no TOTP
code, no Vault request. Then what the operator does send (reserved tags, SourceIdentity, ExternalId, session names)
shown arriving at STS and working with trust policies that rely on it.

Counting: STS calls per IAM user come from the emulator (``calls_by_caller``), codes per MFA serial from the
emulator, Vault requests from the operator's ``vault_sts_operator_vault_requests_total`` (all identities: each
window opens once the operator has made no Vault request for 2 s, and lasts the few seconds of one refusal;
OpenBao refuses audit devices enabled through its API, so there is no per-identity count from OpenBao).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from devstack.manifests import GROUP, VERSION, assumed_role_credential, mfa_identity
from devstack.operator_run import TEST_ROTATE_MIN_INTERVAL, OperatorProcess
from devstack.seed import RoleSpec, SeededIdentity, seed_identity
from tests.e2e.helpers import ARC, MFAID, kubectl, wait_for
from vault_sts_operator.domain.timefmt import parse_time

# One row per attack or check, printed at the end of the module (and kept for the table).
TABLE: list[tuple[str, str, int, int, int]] = []


@dataclass
class Counts:
    sts: int
    codes: int
    vault: int


class Meter:
    """STS calls of one IAM user, TOTP codes of its device, and Vault requests of the operator."""

    def __init__(self, emulator_admin: Any, operator: OperatorProcess, seeded: SeededIdentity) -> None:
        self.admin, self.operator, self.seeded = emulator_admin, operator, seeded
        self.start = self.settled()

    def settled(self, quiet: float = 2.0, timeout: float = 60.0) -> Counts:
        """Counts once the operator made no Vault request for `quiet` seconds: the Vault metric covers every
        identity, so the window opens when other credentials (a just-started operator resuming them) are idle."""
        deadline = time.monotonic() + timeout
        last = self.now()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            current = self.now()
            if current.vault == last.vault:
                return current
            last = current
        raise AssertionError(f"the operator kept calling Vault for {timeout}s")

    def now(self) -> Counts:
        counters = self.admin.counters()
        user = self.seeded.name
        sts = sum(n for key, n in counters["calls_by_caller"].items() if key.split(" ", 1)[1] == user)
        serial = self.seeded.mfa_serial
        codes = counters["codes_accepted_by_serial"].get(serial, 0) + counters["codes_refused_by_serial"].get(serial, 0)
        vault = 0
        for family in text_string_to_metric_families(self.operator.metrics_text()):
            if family.name == "vault_sts_operator_vault_requests":
                vault = int(sum(s.value for s in family.samples if s.name.endswith("_total")))
        return Counts(sts, codes, vault)

    def delta(self) -> Counts:
        now = self.now()
        return Counts(now.sts - self.start.sts, now.codes - self.start.codes, now.vault - self.start.vault)


def record(attack: str, result: str, counts: Counts) -> None:
    TABLE.append((attack, result, counts.sts, counts.codes, counts.vault))


@pytest.fixture(scope="module", autouse=True)
def _print_table() -> Any:
    yield
    if TABLE:
        print("\n| attack | result | STS calls | TOTP codes | Vault requests |\n|---|---|---|---|---|")
        for row in TABLE:
            print("| " + " | ".join(str(c) for c in row) + " |")


def wait_identity_ready(kube: Any, name: str) -> None:
    def ready() -> bool:
        body = kube.custom.get_cluster_custom_object(GROUP, VERSION, MFAID, name)
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (body.get("status") or {}).get("conditions") or ())
    wait_for(f"MFAIdentity {name} Ready", ready, timeout=60)


@pytest.fixture
def tenants(kube: Any, unique: str) -> Iterator[tuple[str, str]]:
    namespaces = kube.namespace(f"ta-{unique}"), kube.namespace(f"tb-{unique}")
    yield namespaces
    # Credentials left behind would keep calling STS on a shared stack (an AccessDenied one retries every
    # 10 min, direct ones spend codes when they rotate) and show up in other tests' call counts.
    for ns in namespaces:
        for item in kube.custom.list_namespaced_custom_object(GROUP, VERSION, ns, ARC)["items"]:
            kube.delete_credential(ns, item["metadata"]["name"])


@pytest.fixture
def make(stack: Any, kube: Any, unique: str, operator: OperatorProcess, emulator_admin: Any
         ) -> Callable[..., tuple[SeededIdentity, Meter]]:
    """Seed an identity (its own IAM user, device, roles) and apply its MFAIdentity with `extra` spec fields."""

    def build(prefix: str, namespaces: list[str], roles: list[str], *, allowed_role_arns: list[str] | None = None,
              vault_aws: str = "", totp_period: int = 30, expect_ready: bool = True,
              **extra: Any) -> tuple[SeededIdentity, Meter]:
        seeded = seed_identity(stack, f"{prefix}-{unique}", roles=[RoleSpec(r) for r in roles],
                               totp_period=totp_period)
        manifest = mfa_identity(stack, seeded, allowed_namespaces=namespaces, vault_aws=vault_aws,
                                allowed_role_arns=allowed_role_arns)
        manifest["spec"].update(extra)
        kube.apply_identity(manifest)
        if not vault_aws and expect_ready:
            wait_identity_ready(kube, seeded.name)
        return seeded, Meter(emulator_admin, operator, seeded)

    return build


def refused(kube: Any, meter: Meter, ns: str, name: str, reason: str, attack: str) -> dict[str, str]:
    cond = kube.wait_reason(ns, name, reason, timeout=60)
    assert kube.secret(ns, name) is None
    counts = meter.delta()
    record(attack, f"{reason}: {cond['message']}", counts)
    assert counts == Counts(0, 0, 0), (attack, counts)
    return cond


# --- AWS side: what a tenant must not control -------------------------------------------------------------


def test_tenant_tags_need_a_listed_key(kube, tenants, make, unique):
    team_a, _ = tenants
    seeded, meter = make("tags", [team_a], [f"app-tags-{unique}"])
    kube.create_credential(assumed_role_credential(team_a, "spoof", seeded.name, seeded.role_arns[0],
                                                   tags={"team": "team-b"}))
    cond = refused(kube, meter, team_a, "spoof", "NotAllowed", "session tag {team: team-b} from team-a")
    assert "'team' is not one MFAIdentity" in cond["message"]


def test_reserved_tag_keys_are_refused_at_apply(stack, tenants):
    team_a, _ = tenants
    for key in ("vaultsts:namespace", "VaultSTS:Namespace", "aws:PrincipalTag"):
        manifest = assumed_role_credential(team_a, "reserved", "any", "arn:aws:iam::123456789012:role/x",
                                           tags={key: "team-b"})
        result = kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump(manifest), check=False)
        assert result.returncode != 0 and "are reserved" in result.stderr, (key, result.stderr)
    TABLE.append(("tag key VaultSTS:Namespace (reserved, other case)", "refused at apply (CEL)", 0, 0, 0))


def test_tenant_external_id_is_refused(kube, tenants, make, unique):
    team_a, _ = tenants
    seeded, meter = make("xid", [team_a], [f"app-xid-{unique}"])
    kube.create_credential(assumed_role_credential(team_a, "xid", seeded.name, seeded.role_arns[0],
                                                   externalId="victim-external-id"))
    cond = refused(kube, meter, team_a, "xid", "NotAllowed", "tenant-chosen ExternalId")
    assert "does not let tenants choose the ExternalId" in cond["message"]

    other, meter2 = make("xid2", [team_a], [f"app-xid2-{unique}"], externalId={"value": "acme-${namespace}"})
    kube.create_credential(assumed_role_credential(team_a, "xid2", other.name, other.role_arns[0],
                                                   externalId="acme-tb"))
    cond = refused(kube, meter2, team_a, "xid2", "NotAllowed", "tenant ExternalId where the identity sets one")
    assert "sets the ExternalId" in cond["message"]


def test_external_id_templates_and_assigned_values_cannot_be_confused(kube, tenants, make, unique):
    """Issue 17, item 3: `acme-${namespace}-${name}` gave team/a-x and team-a/x the same ExternalId (InvalidSpec
    now); with byNamespace and tenant values allowed, a namespace may not send another namespace's assigned one."""
    team_a, team_b = tenants
    joined, meter = make("xjoin", [team_a], [f"app-xjoin-{unique}"], expect_ready=False,
                         externalId={"value": "acme-${namespace}-${name}"})
    kube.create_credential(assumed_role_credential(team_a, "joined", joined.name, joined.role_arns[0]))
    cond = refused(kube, meter, team_a, "joined", "InvalidSpec", "ExternalId template acme-${namespace}-${name}")
    assert "externalId.value" in cond["message"] and "followed by '-'" in cond["message"]

    assigned, meter2 = make("xassign", [team_a, team_b], [f"app-xassign-{unique}"],
                            externalId={"byNamespace": {team_b: f"acme-{team_b}"}, "allowTenantValue": True})
    kube.create_credential(assumed_role_credential(team_a, "borrowed", assigned.name, assigned.role_arns[0],
                                                   externalId=f"acme-{team_b}"))
    cond = refused(kube, meter2, team_a, "borrowed", "NotAllowed", "team-a sends team-b's assigned ExternalId")
    assert "reserves this ExternalId for another tenant" in cond["message"]
    assert team_b not in cond["message"].replace(f"acme-{team_b}", "")


def test_slash_does_not_match_a_glob(kube, tenants, make, unique, emulator_admin):
    team_a, _ = tenants
    seeded, meter = make("glob", [team_a], [f"app-{unique}", f"app-legacy-{unique}/PowerUser"],
                         allowed_role_arns=["arn:aws:iam::123456789012:role/app-*"])
    kube.create_credential(assumed_role_credential(team_a, "power", seeded.name, seeded.role_arns[1]))
    cond = refused(kube, meter, team_a, "power", "NotAllowed", "role/app-* against role/app-legacy/PowerUser")
    assert "allowedRoleArns" in cond["message"]


def test_namespace_placeholder_maps_each_namespace_to_its_roles(kube, tenants, make):
    team_a, team_b = tenants
    seeded, meter = make("map", [team_a, team_b], [f"{team_a}_app", f"{team_b}_app"],
                         allowed_role_arns=["arn:aws:iam::123456789012:role/${namespace}_*"])
    kube.create_credential(assumed_role_credential(team_a, "theirs", seeded.name, seeded.role_arn(f"{team_b}_app")))
    refused(kube, meter, team_a, "theirs", "NotAllowed", "team-a asks for team-b's role under role/${namespace}_*")
    kube.create_credential(assumed_role_credential(team_a, "mine", seeded.name, seeded.role_arn(f"{team_a}_app")))
    status = kube.wait_ready(team_a, "mine")["status"]
    assert status["assumedRoleArn"].endswith(f"assumed-role/{team_a}_app/{team_a}@mine")
    record("team-a asks for its own role under role/${namespace}_*", "issued", meter.delta())


@pytest.fixture
def prefix_namespaces(kube: Any, unique: str) -> Iterator[tuple[str, str]]:
    """Two namespaces where one's name is a prefix of the other's: `tc-x` and `tc-x-a`."""
    namespaces = kube.namespace(f"tc-{unique}"), kube.namespace(f"tc-{unique}-a")
    yield namespaces
    for ns in namespaces:
        for item in kube.custom.list_namespaced_custom_object(GROUP, VERSION, ns, ARC)["items"]:
            kube.delete_credential(ns, item["metadata"]["name"])


def test_a_placeholder_a_namespace_could_continue_is_refused(kube, prefix_namespaces, make):
    """Issue 17, item 2: with `role/${namespace}-*` and namespaces `team` and `team-a`, `team` reached STS with
    `role/team-a-app`. Such a pattern is now InvalidSpec: the identity and every credential, nothing spent."""
    team, team_a = prefix_namespaces
    seeded, meter = make("prefix", [team, team_a], [f"{team_a}-app"], expect_ready=False,
                         allowed_role_arns=["arn:aws:iam::123456789012:role/${namespace}-*"])
    kube.create_credential(assumed_role_credential(team, "theirs", seeded.name, seeded.role_arn(f"{team_a}-app")))
    cond = refused(kube, meter, team, "theirs", "InvalidSpec",
                   "namespace team asks for team-a's role under role/${namespace}-* (a namespace could continue it)")
    assert "${namespace} is followed by '-'" in cond["message"], cond["message"]


def test_separated_placeholders_keep_a_prefix_namespace_out(kube, prefix_namespaces, make):
    """The documented forms (`role/${namespace}/*`, an IAM path; `role/${namespace}_*`): `team` cannot reach
    `team-a`'s role, `team-a` can."""
    team, team_a = prefix_namespaces
    seeded, meter = make("sep", [team, team_a], [f"{team_a}/app", f"{team_a}_app"],
                         allowed_role_arns=["arn:aws:iam::123456789012:role/${namespace}/*",
                                            "arn:aws:iam::123456789012:role/${namespace}_*"])
    for name, role in (("path", f"{team_a}/app"), ("sep", f"{team_a}_app")):
        kube.create_credential(assumed_role_credential(team, name, seeded.name, seeded.role_arn(role)))
        attack = f"namespace team asks for role/{role.replace(team_a, 'team-a')}"
        cond = refused(kube, meter, team, name, "NotAllowed", attack)
        assert "allowedRoleArns" in cond["message"]
    kube.create_credential(assumed_role_credential(team_a, "mine", seeded.name, seeded.role_arn(f"{team_a}_app")))
    kube.wait_ready(team_a, "mine")


def test_identity_limits_duration_and_mfa_modes(kube, tenants, make, unique):
    team_a, _ = tenants
    seeded, meter = make("limits", [team_a], [f"app-limits-{unique}"],
                         limits={"maxDurationSeconds": 1800, "mfaModes": ["session"]})
    kube.create_credential(assumed_role_credential(team_a, "long", seeded.name, seeded.role_arns[0],
                                                   durationSeconds=3600))
    refused(kube, meter, team_a, "long", "NotAllowed", "durationSeconds 3600 above limits.maxDurationSeconds 1800")
    kube.create_credential(assumed_role_credential(team_a, "direct", seeded.name, seeded.role_arns[0],
                                                   mfa="direct", durationSeconds=1800))
    refused(kube, meter, team_a, "direct", "NotAllowed", "mfa: direct where limits.mfaModes is [session]")


def test_vault_assumed_role_refuses_fields_it_would_drop(kube, tenants, make, unique):
    team_a, _ = tenants
    seeded, meter = make("vaws", [team_a], [f"app-vaws-{unique}"], vault_aws="assumedRole")
    kube.create_credential(assumed_role_credential(
        team_a, "scoped", seeded.name, seeded.role_arns[0],
        policy='{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}'))
    cond = refused(kube, meter, team_a, "scoped", "InvalidSpec", "scope-down policy through credentialType assumedRole")
    assert "cannot pass them" in cond["message"]


def test_renew_before_at_the_lifetime_is_refused_at_apply(stack, tenants):
    team_a, _ = tenants
    manifest = assumed_role_credential(team_a, "hot", "any", "arn:aws:iam::123456789012:role/x",
                                       durationSeconds=900, renewBefore="15m")
    result = kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0 and "renewBefore must be shorter than durationSeconds" in result.stderr
    TABLE.append(("renewBefore 15m with durationSeconds 900", "refused at apply (CEL)", 0, 0, 0))


# --- what the operator sends, and trust policies relying on it --------------------------------------------


def tenant_trust(user_arn: str, namespace: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": user_arn},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        "Condition": {
            "Bool": {"aws:MultiFactorAuthPresent": "true"},
            "StringEquals": {"aws:RequestTag/vaultsts:namespace": namespace, "sts:ExternalId": f"acme-{namespace}"},
            "StringLike": {"sts:SourceIdentity": f"{namespace}@*", "sts:RoleSessionName": f"{namespace}@*"},
            "ForAnyValue:StringEquals": {"sts:TransitiveTagKeys": "vaultsts:namespace"},
        }}]}


def sts_client(stack: Any, secret: dict[str, Any]) -> Any:
    data = secret["data"]
    return boto3.client("sts", endpoint_url=stack.sts_endpoint, region_name="us-east-1",
                        aws_access_key_id=data["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=data["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=data["AWS_SESSION_TOKEN"],
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def test_reserved_tags_source_identity_and_external_id_reach_sts(stack, kube, tenants, make, unique, emulator_admin,
                                                                 issued):
    team_a, team_b = tenants
    seeded, meter = make("trust", [team_a, team_b], [],
                         allowed_role_arns=["arn:aws:iam::123456789012:role/${namespace}_*"],
                         sessionTags={"reserved": True}, sourceIdentity={"enabled": True},
                         externalId={"value": "acme-${namespace}"})
    account = "123456789012"
    role_a = f"arn:aws:iam::{account}:role/{team_a}_data"
    role_b = f"arn:aws:iam::{account}:role/{team_b}_data"
    emulator_admin.create_role(role_a, [], trust_policy=tenant_trust(seeded.user_arn, team_a))
    # team-b's role trusts sessions naming team-a: a confused deputy would let team-b in
    emulator_admin.create_role(role_b, [], trust_policy=tenant_trust(seeded.user_arn, team_a))
    kube.create_credential(assumed_role_credential(team_a, "app", seeded.name, role_a,
                                                   roleSessionName="team-x-payments"))
    kube.create_credential(assumed_role_credential(team_b, "app", seeded.name, role_b))
    status = kube.wait_ready(team_a, "app")["status"]
    assert status["assumedRoleArn"].endswith(f"/{team_a}@team-x-payments")  # the namespace stays readable
    secret = kube.secret(team_a, "app")
    issued.add_secret(secret)
    facts = emulator_admin.credential(secret["data"]["AWS_ACCESS_KEY_ID"])
    assert facts["session_tags"] == {"vaultsts:namespace": team_a, "vaultsts:credential": "app"}
    assert facts["transitive_tag_keys"] == ["vaultsts:credential", "vaultsts:namespace"]
    assert facts["source_identity"] == f"{team_a}@app"
    cond = kube.wait_reason(team_b, "app", "AccessDenied")
    assert "not authorized to perform: sts:AssumeRole" in cond["message"]
    assert kube.secret(team_b, "app") is None
    counts = meter.delta()
    # one GetSessionToken (one code) for the identity, one AssumeRole each: team-a's issued, team-b's refused by STS
    assert (counts.sts, counts.codes) == (3, 1), counts
    record(f"session name team-x-payments from {team_a}; reserved tags, SourceIdentity, ExternalId from the identity",
           f"issued as {team_a}@team-x-payments with tags/SourceIdentity naming {team_a}", Counts(2, 1, counts.vault))
    record(f"{team_b} against a role whose trust policy demands {team_a}'s tags, SourceIdentity, ExternalId",
           "AccessDenied by STS: the operator sent team-b's values", Counts(1, 0, 0))

    # role chaining: a role trusting only sessions tagged (transitively) and sourced from team-a
    chained = f"arn:aws:iam::{account}:role/chained-{unique}"
    emulator_admin.create_role(chained, [], trust_policy={"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": account},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        "Condition": {"StringEquals": {"aws:PrincipalTag/vaultsts:namespace": team_a},
                      "StringLike": {"aws:SourceIdentity": f"{team_a}@*"}}}]})
    client = sts_client(stack, secret)
    with pytest.raises(ClientError):  # the tenant cannot override the transitive namespace tag down the chain
        client.assume_role(RoleArn=chained, RoleSessionName="next",
                           Tags=[{"Key": "vaultsts:namespace", "Value": team_b}])
    second = client.assume_role(RoleArn=chained, RoleSessionName="next", SourceIdentity=f"{team_b}@forged")
    chained_facts = emulator_admin.credential(second["Credentials"]["AccessKeyId"])
    assert chained_facts["source_identity"] == f"{team_a}@app"
    assert chained_facts["session_tags"]["vaultsts:namespace"] == team_a
    client.close()


# --- abuse of shared resources ----------------------------------------------------------------------------


def test_rotate_annotation_is_rate_limited(kube, tenants, make, unique):
    team_a, _ = tenants
    seeded, meter = make("rotate", [team_a], [f"app-rotate-{unique}"])
    kube.create_credential(assumed_role_credential(team_a, "spam", seeded.name, seeded.role_arns[0]))
    first = kube.wait_ready(team_a, "spam")["status"]
    issued_at = time.time()
    before = meter.now()
    for i in range(8):  # a tenant hammering the annotation
        kube.patch_credential(team_a, "spam", {"metadata": {"annotations": {"vaultsts.io/rotate": f"spam-{i}"}}})
        time.sleep(0.5)
    # nothing before the minimum interval, then exactly one rotation for all eight requests
    assert kube.credential(team_a, "spam")["status"]["accessKeyId"] == first["accessKeyId"] or \
        time.time() - issued_at >= TEST_ROTATE_MIN_INTERVAL
    rotated = wait_for("one rotation after the minimum interval", lambda: (
        k := kube.credential(team_a, "spam")["status"].get("accessKeyId")) != first["accessKeyId"] and k, timeout=30)
    time.sleep(TEST_ROTATE_MIN_INTERVAL + 2)
    now = meter.now()
    assert kube.credential(team_a, "spam")["status"]["accessKeyId"] == rotated
    assert now.sts - before.sts == 1, "eight rotate requests within the interval made more than one AssumeRole"
    assert now.codes == before.codes  # mfa: session: the MFA session serves the rotation
    assert any(e.reason == "RotationDeferred" for e in kube.events(team_a, "spam"))
    record(f"8 rotate annotations in 4 s (minimum interval {TEST_ROTATE_MIN_INTERVAL}s)", "1 rotation",
           Counts(now.sts - before.sts, 0, 0))


def workload(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}}}


def test_rollout_restarts_only_workloads_that_opt_in(kube, tenants, make, unique, emulator_admin):
    team_a, _ = tenants
    seeded, _meter = make("restart", [team_a], [f"app-restart-{unique}"])
    kube.apps.create_namespaced_deployment(team_a, workload("victim", {}))
    kube.apps.create_namespaced_deployment(team_a, workload("other", {"vaultsts.io/restart-on-rotation": "someone"}))
    kube.apps.create_namespaced_deployment(team_a, workload("consumer",
                                                            {"vaultsts.io/restart-on-rotation": "x, app"}))
    kube.create_credential(assumed_role_credential(
        team_a, "app", seeded.name, seeded.role_arns[0],
        rolloutRestartTargets=[{"kind": "Deployment", "name": n} for n in ("victim", "other", "consumer")]))
    first = kube.wait_ready(team_a, "app")["status"]["accessKeyId"]
    time.sleep(TEST_ROTATE_MIN_INTERVAL)
    kube.patch_credential(team_a, "app", {"metadata": {"annotations": {"vaultsts.io/rotate": "r1"}}})
    wait_for("rotation", lambda: kube.credential(team_a, "app")["status"].get("accessKeyId") != first, timeout=30)

    def stamp(name: str) -> str | None:
        template = kube.apps.read_namespaced_deployment(name, team_a).spec.template.metadata
        return (template.annotations or {}).get("vaultsts.io/restartedAt")

    wait_for("the opted-in Deployment restarted", lambda: stamp("consumer"), timeout=30)
    wait_for("two refusal Events", lambda: sum(
        "does not opt in" in (e.message or "") for e in kube.events(team_a, "app")) >= 2, timeout=15)
    assert stamp("victim") is None and stamp("other") is None
    TABLE.append(("rolloutRestartTargets naming a Deployment that does not opt in", "not restarted (Event)", 0, 0, 0))


def test_device_queue_is_fair_between_namespaces(kube, tenants, make, unique, emulator_admin):
    """Six `mfa: direct` credentials in team-a, then one in team-b, all waiting for one MFA device (a code per
    10 s period): team-b's is issued within the first three, not seventh as a first-come queue would have it."""
    team_a, team_b = tenants
    # a 10 s period: team-b's pass reaches the device queue a few seconds after it is created (3 to 6 s measured)
    seeded, meter = make("fair", [team_a, team_b], [f"app-fair-{unique}"], totp_period=10,
                         limits={"mfaModes": ["session", "direct"]})
    names = [f"a{i}" for i in range(6)]
    for name in names:
        kube.create_credential(assumed_role_credential(team_a, name, seeded.name, seeded.role_arns[0], mfa="direct"))
    time.sleep(1)
    b_created = datetime.now(UTC).replace(microsecond=0)  # issuedAt has whole seconds
    kube.create_credential(assumed_role_credential(team_b, "b0", seeded.name, seeded.role_arns[0], mfa="direct"))
    issued_at = {}
    for ns, name in [(team_a, n) for n in names] + [(team_b, "b0")]:
        issued_at[(ns, name)] = kube.wait_ready(ns, name, timeout=120)["status"]["issuedAt"]
    order = [key for key, _ in sorted(issued_at.items(), key=lambda item: item[1])]
    position = order.index((team_b, "b0")) + 1
    counts = meter.delta()
    assert counts.codes == 7 and counts.sts == 7, counts  # one code and one AssumeRole per credential
    # Counted from b0's creation, not from the start: a0 takes the current period's code at once, and when
    # that period is about to end a1 takes the next one before b0's pass reaches the queue (3 to 6 s). Fair:
    # at most that one and the credential holding the device when b0 queues go before b0. FIFO: five or six.
    b_issued = parse_time(issued_at[(team_b, "b0")])
    ahead = [key for key, at in issued_at.items() if key[0] == team_a and b_created < parse_time(at) <= b_issued]
    assert len(ahead) <= 2, f"{len(ahead)} team-a credentials were issued after b0 was created and before it: {order}"
    record("6 mfa: direct credentials in team-a queued before 1 in team-b on one device",
           f"team-b issued {position} of 7 (FIFO: 7th)", counts)
