"""Nothing is spent before it can succeed (issue 17, item 5), tried on the real stack as a tenant would:

- a credential whose Secret the API server can never accept is refused before any Vault request, TOTP code or STS
  call, however often it is poked (a new rotate value, a spec change: each a pass at once), over 60 s and more;
- a Secret write the API server refuses with 403 (here: a ValidatingAdmissionPolicy refusing Secrets in the
  namespace, as an admission webhook, a policy engine or a quota would) spends
  exactly one issue: the pass reports SecretRefused, keeps the credentials it was issued, and every later pass
  writes those, with no STS call, until the quota goes and the Secret is written;
- `mfa: direct` is refused under an identity that does not list it in limits.mfaModes (the default is [session]);
- the apiserver runs with OwnerReferencesPermissionEnforcement (devstack/stack.py): a Secret whose ownerReference
  blocks the owner's deletion needs `update` on assumedrolecredentials/finalizers, which the chart grants.

Counting as tests/e2e/test_tenant_isolation.py counts (its Meter): STS calls of the identity's IAM user and codes of
its device from the emulator, Vault requests from the operator's metric.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA, OperatorProcess
from devstack.seed import RoleSpec, SeededIdentity, seed_identity
from tests.e2e.helpers import kubectl, wait_for
from tests.e2e.test_tenant_isolation import Counts, Meter, wait_identity_ready

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "vaultsts.io_assumedrolecredentials.yaml"
DIRECT = ["session", "direct"]
WINDOW_SECONDS = 65.0  # at least 60 s of pokes: a transient retry loop would have spent 4 to 5 AssumeRoles by then

TABLE: list[tuple[str, str, int, int, int]] = []


def record(attack: str, result: str, counts: Counts) -> None:
    TABLE.append((attack, result, counts.sts, counts.codes, counts.vault))


@pytest.fixture(scope="module", autouse=True)
def _print_table() -> Any:
    yield
    if TABLE:
        print("\n| attack | result | STS calls | TOTP codes | Vault requests |\n|---|---|---|---|---|")
        for row in TABLE:
            print("| " + " | ".join(str(c) for c in row) + " |")


@pytest.fixture
def tenant(kube: Any, unique: str) -> Iterator[str]:
    ns = kube.namespace(f"spend-{unique}")
    yield ns
    kube.core.delete_namespace(ns)


def identity(stack: Any, kube: Any, emulator_admin: Any, operator: OperatorProcess, prefix: str, namespace: str,
             unique: str, mfa_modes: list[str] | None = None) -> tuple[SeededIdentity, Meter]:
    seeded = seed_identity(stack, f"{prefix}-{unique}", roles=[RoleSpec(f"app-{prefix}-{unique}")])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[namespace], mfa_modes=mfa_modes))
    wait_identity_ready(kube, seeded.name)
    return seeded, Meter(emulator_admin, operator, seeded)


def poke(kube: Any, ns: str, name: str, seconds: float, every: float = 5.0) -> int:
    """A new rotate value every few seconds: each runs a pass at once (services/controller.py)."""
    deadline, count = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        count += 1
        kube.patch_credential(ns, name, {"metadata": {"annotations": {"vaultsts.io/rotate": f"poke-{count}"}}})
        time.sleep(every)
    return count


def reasons_of(kube: Any, ns: str, name: str) -> list[str]:
    return [e.reason for e in kube.events(ns, name)]


# --- a Secret the API server can never accept ------------------------------------------------------------------------


@pytest.fixture
def validation_off(stack: Any) -> Iterator[None]:
    """The credential CRD with its spec schema relaxed to "anything": a credential stored before the CRD's limits,
    or a CRD applied without them. The repository's CRD is applied again afterwards."""
    relaxed = copy.deepcopy(yaml.safe_load(CRD_FILE.read_text()))
    relaxed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump(relaxed))
    try:
        yield
    finally:
        kubectl(stack, "apply", "-f", str(CRD_FILE))


def create_when_accepted(kube: Any, manifest: dict[str, Any]) -> None:
    def created() -> bool:
        try:
            kube.create_credential(manifest)
        except ApiException as exc:
            if exc.status == 422:  # the apiserver takes a moment to serve a changed CRD schema
                return False
            raise
        return True
    wait_for(f"{manifest['metadata']['name']} accepted", created, timeout=30)


def test_a_secret_that_can_never_be_written_spends_nothing(stack, kube, operator, emulator_admin, tenant, unique,
                                                           validation_off):
    """mfa: direct (allowed here), so each issue would spend a TOTP code too: before this, such a credential made
    an AssumeRole (and spent a code) at each transient retry, 5 in 150 s."""
    seeded, meter = identity(stack, kube, emulator_admin, operator, "never", tenant, unique, mfa_modes=DIRECT)
    cases = [
        ("target.labels {a: 'not valid!'} (validation off)", "bad-label",
         {"target": {"labels": {"a": "not valid!"}}}, "spec.target.labels"),
        ("target.secretName 'app..aws' (the CRD's pattern lets it through)", "bad-name",
         {"target": {"secretName": "app..aws"}}, "spec.target.secretName must be a DNS subdomain"),
        ("a credential name of 64 characters (the Secret's vaultsts.io/credential label holds it)", "n" * 64,
         {"roleSessionName": "app"}, "vaultsts.io/credential"),
    ]
    for _attack, name, fields, _needle in cases:
        create_when_accepted(kube, assumed_role_credential(tenant, name, seeded.name, seeded.role_arns[0],
                                                           mfa="direct", durationSeconds=900, **fields))
    for _attack, name, _fields, needle in cases:
        cond = kube.wait_reason(tenant, name, "InvalidSpec", timeout=60)
        assert needle in cond["message"], cond["message"]
        assert "not valid!" not in cond["message"]
    refusal = meter.delta()  # the few seconds of the three refusals: nothing at all, Vault included
    assert refusal == Counts(0, 0, 0), refusal
    started = time.monotonic()
    pokes = poke(kube, tenant, "bad-name", WINDOW_SECONDS / 2)
    kube.patch_credential(tenant, "bad-label", {"spec": {"target": {"labels": {"a": "still not valid!"}}}})
    pokes += 1 + poke(kube, tenant, "bad-label", WINDOW_SECONDS / 2)
    elapsed = time.monotonic() - started
    counts = meter.delta()
    for attack, name, _fields, _needle in cases:
        assert kube.secret(tenant, name) is None
        cond = kube.ready(tenant, name) or {}
        assert cond.get("reason") == "InvalidSpec", (name, cond)
        record(attack + f"; mfa: direct; {pokes} passes forced over {elapsed:.0f} s",
               f"InvalidSpec: {cond['message'][:140]}", counts)
    # STS calls and codes are this identity's own; the Vault count is the operator's, for every identity on the
    # stack (each is verified every 300 s): over a minute it may see another identity's verification
    assert elapsed >= 60
    assert (counts.sts, counts.codes) == (0, 0), counts


# --- a Secret write refused by the API server: one issue, then the kept credentials -------------------------------


def secrets_admitted(stack: Any, ns: str) -> bool:
    probe = kubectl(stack, "create", "secret", "generic", "admission-probe", "-n", ns, "--from-literal=a=b",
                    "--dry-run=server", check=False)
    return probe.returncode == 0


@pytest.fixture
def refuse_secrets(stack: Any, tenant: str) -> Iterator[Callable[[], None]]:
    """A ValidatingAdmissionPolicy refusing every Secret write in `tenant` (403); call the result to lift it.
    (The stack runs no resourcequota controller, so a ResourceQuota is not enforced here; on a cluster, a quota
    on count/secrets answers the same 403.)"""
    name = f"refuse-secrets-{tenant}"
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                               "operations": ["CREATE", "UPDATE"],
                                                               "resources": ["secrets"]}]},
                       "validations": [{"expression": "false", "reason": "Forbidden",
                                        "message": "no Secrets in this namespace (test policy)"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name},
               "spec": {"policyName": name, "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": tenant}}}}}
    kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump_all([policy, binding]))
    wait_for("the policy in effect", lambda: not secrets_admitted(stack, tenant), timeout=30)

    def lift() -> None:
        kubectl(stack, "delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        wait_for("the policy lifted", lambda: secrets_admitted(stack, tenant), timeout=30)

    try:
        yield lift
    finally:
        kubectl(stack, "delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        kubectl(stack, "delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def test_a_refused_write_spends_one_issue_then_writes_the_kept_credentials(stack, kube, operator, emulator_admin,
                                                                           tenant, unique, refuse_secrets, issued):
    seeded, meter = identity(stack, kube, emulator_admin, operator, "refused", tenant, unique)
    kube.create_credential(assumed_role_credential(tenant, "app", seeded.name, seeded.role_arns[0]))
    cond = kube.wait_reason(tenant, "app", "SecretRefused", timeout=60)
    assert "HTTP 403" in cond["message"] and "no Secrets in this namespace" in cond["message"], cond["message"]
    wait_for("a SecretRefused Event", lambda: "SecretRefused" in reasons_of(kube, tenant, "app"), timeout=15)
    first = meter.delta()
    # one issue: GetSessionToken (the identity's one code) and one AssumeRole
    assert (first.sts, first.codes) == (2, 1), first
    record("a Secret write refused with 403 (an admission policy refusing Secrets in the namespace)",
           f"SecretRefused: {cond['message'][:120]}", first)

    again = Meter(emulator_admin, operator, seeded)
    started = time.monotonic()
    pokes = poke(kube, tenant, "app", WINDOW_SECONDS / 2)
    kube.patch_credential(tenant, "app", {"spec": {"target": {"labels": {"fixed": "no"}}}})  # a spec change
    pokes += 1 + poke(kube, tenant, "app", WINDOW_SECONDS / 2)
    elapsed = time.monotonic() - started
    during = again.delta()
    assert kube.secret(tenant, "app") is None
    assert (kube.ready(tenant, "app") or {}).get("reason") == "SecretRefused"
    assert reasons_of(kube, tenant, "app").count("SecretRefused") == 1  # one Event per distinct failure
    record(f"the same, {pokes} passes forced over {elapsed:.0f} s (rotate values, a spec change)",
           "SecretRefused each time; the kept credentials are retried, STS is not asked", during)
    assert elapsed >= 60 and (during.sts, during.codes) == (0, 0), during  # (Vault: see the test above)

    refuse_secrets()  # the admin lifts the policy; the next pass (a spec change) writes the kept credentials
    kube.patch_credential(tenant, "app", {"spec": {"target": {"labels": {"fixed": "yes"}}}})
    status = kube.wait_ready(tenant, "app", timeout=60)["status"]
    secret = kube.secret(tenant, "app")
    assert secret is not None and secret["metadata"].labels["fixed"] == "yes"
    issued.add_secret(secret)  # kept in memory through 15 refused writes: the leak scan looks for them everywhere
    log = operator.log_text()
    assert secret["data"]["AWS_SECRET_ACCESS_KEY"] not in log and secret["data"]["AWS_SESSION_TOKEN"] not in log
    assert secret["data"]["AWS_ACCESS_KEY_ID"] == status["accessKeyId"]
    facts = emulator_admin.credential(status["accessKeyId"])  # the credentials of the one AssumeRole
    assert facts, status["accessKeyId"]
    after = again.delta()
    record("the policy lifted, then a spec change", "Issued with the kept credentials", after)
    assert (after.sts, after.codes) == (0, 0), after
    total = meter.delta()
    assert (total.sts, total.codes) == (2, 1), total


# --- mfa: direct is the identity's explicit choice ----------------------------------------------------------------


def test_direct_is_refused_where_the_identity_does_not_list_it(stack, kube, operator, emulator_admin, tenant, unique):
    seeded, meter = identity(stack, kube, emulator_admin, operator, "nodirect", tenant, unique)
    kube.create_credential(assumed_role_credential(tenant, "direct", seeded.name, seeded.role_arns[0], mfa="direct",
                                                   durationSeconds=900))
    cond = kube.wait_reason(tenant, "direct", "NotAllowed", timeout=60)
    assert "limits.mfaModes: session" in cond["message"], cond["message"]
    assert kube.secret(tenant, "direct") is None
    counts = meter.delta()
    record("mfa: direct under an identity without limits.mfaModes (default [session])",
           f"NotAllowed: {cond['message'][:120]}", counts)
    assert counts == Counts(0, 0, 0), counts
    # the identity's spec as the API server serves it shows the default
    served = kube.custom.get_cluster_custom_object("vaultsts.io", "v1alpha1", "mfaidentities", seeded.name)
    assert served["spec"]["limits"]["mfaModes"] == ["session"]


# --- OwnerReferencesPermissionEnforcement ------------------------------------------------------------------------


def owned_secret(ns: str, name: str, owner: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns, "ownerReferences": [{
            "apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "stringData": {"key": "value"}})


def test_the_chart_rbac_sets_block_owner_deletion_under_owner_references_permission_enforcement(
        stack, kube, operator, emulator_admin, tenant, unique):
    seeded, meter = identity(stack, kube, emulator_admin, operator, "owner", tenant, unique)
    kube.create_credential(assumed_role_credential(tenant, "app", seeded.name, seeded.role_arns[0]))
    cr = kube.wait_ready(tenant, "app")
    ref = kube.secret(tenant, "app")["metadata"].owner_references[0]
    assert (ref.kind, ref.uid, ref.block_owner_deletion, ref.controller) == (
        "AssumedRoleCredential", cr["metadata"]["uid"], True, True)
    record("the operator (chart RBAC) writes a Secret with blockOwnerDeletion; apiserver with "
           "OwnerReferencesPermissionEnforcement", "Issued (one issue: GetSessionToken and AssumeRole)", meter.delta())

    # The plugin is on: an account that may create Secrets but not update the owner's finalizers is refused.
    kubectl(stack, "create", "serviceaccount", "no-finalizers", "-n", tenant)
    kubectl(stack, "create", "role", "secrets-only", "-n", tenant, "--verb=create,get",
            "--resource=secrets,assumedrolecredentials.vaultsts.io")
    kubectl(stack, "create", "rolebinding", "secrets-only", "-n", tenant, "--role=secrets-only",
            f"--serviceaccount={tenant}:no-finalizers")
    wait_for("the Role in effect", lambda: kubectl(
        stack, "auth", "can-i", "create", "secrets", "-n", tenant, f"--as=system:serviceaccount:{tenant}:no-finalizers",
        check=False).stdout.strip() == "yes", timeout=15)
    refused = kubectl(stack, "create", "-f", "-", f"--as=system:serviceaccount:{tenant}:no-finalizers",
                      stdin=owned_secret(tenant, "probe", cr), check=False)
    assert refused.returncode != 0 and "cannot set blockOwnerDeletion" in refused.stderr, refused.stderr
    # the chart's ServiceAccount, as the e2e operator runs with it, may
    chart_sa = f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"
    allowed = kubectl(stack, "create", "-f", "-", chart_sa, stdin=owned_secret(tenant, "probe", cr), check=False)
    assert allowed.returncode == 0, allowed.stderr
    record("a ServiceAccount without update on assumedrolecredentials/finalizers sets blockOwnerDeletion",
           "403 from OwnerReferencesPermissionEnforcement (the chart's ServiceAccount: created)", Counts(0, 0, 0))
