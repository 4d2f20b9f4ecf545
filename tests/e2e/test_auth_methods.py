"""The other ways in: AppRole and token auth to Vault, and namespaces allowed by label selector."""

from __future__ import annotations

import pytest

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.operator_run import OPERATOR_NAMESPACE
from devstack.seed import RoleSpec, seed_identity

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def seeded(stack, unique):
    return seed_identity(stack, f"auth-{unique}", roles=[RoleSpec(f"app-auth-{unique}")])


def store(kube, name: str, value: str) -> None:
    kube.core.create_namespaced_secret(OPERATOR_NAMESPACE, {"metadata": {"name": name}, "stringData": {"v": value}})


def test_approle_auth(stack, kube, vault, seeded, unique, issued):
    team = kube.namespace(f"approle-{unique}")
    if "approle/" not in vault.sys.list_auth_methods():
        vault.sys.enable_auth_method("approle")
    role = f"vso-{unique}"
    vault.write(f"auth/approle/role/{role}", token_policies=[seeded.policy], token_ttl="10m")
    role_id = vault.read(f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = vault.write(f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
    store(kube, f"approle-{unique}", secret_id)
    manifest = mfa_identity(stack, seeded, allowed_namespaces=[team])
    manifest["spec"]["vault"]["auth"] = {"appRole": {"roleId": role_id, "secretIdRef": {
        "name": f"approle-{unique}", "namespace": OPERATOR_NAMESPACE, "key": "v"}}}
    kube.apply_identity(manifest)
    kube.create_credential(assumed_role_credential(team, "a", seeded.name, seeded.role_arns[0]))
    kube.wait_ready(team, "a")
    issued.add_secret(kube.secret(team, "a"))
    issued.values.add(secret_id)  # the leak scan looks for the SecretID too


def test_token_auth(stack, kube, vault, seeded, unique, issued):
    team = kube.namespace(f"token-{unique}")
    token = vault.auth.token.create(policies=[seeded.policy], ttl="1h")["auth"]["client_token"]
    store(kube, f"token-{unique}", token)
    manifest = mfa_identity(stack, seeded, allowed_namespaces=[team])
    manifest["spec"]["vault"]["auth"] = {"tokenSecretRef": {
        "name": f"token-{unique}", "namespace": OPERATOR_NAMESPACE, "key": "v"}}
    kube.apply_identity(manifest)
    kube.create_credential(assumed_role_credential(team, "t", seeded.name, seeded.role_arns[0]))
    kube.wait_ready(team, "t")
    issued.add_secret(kube.secret(team, "t"))
    issued.values.add(token)


def test_namespaces_allowed_by_label_selector(stack, kube, seeded, unique, issued):
    labeled = f"labeled-{unique}"
    kube.core.create_namespace({"metadata": {"name": labeled, "labels": {"aws-access": f"ops-{unique}"}}})
    unlabeled = kube.namespace(f"unlabeled-{unique}")
    manifest = mfa_identity(stack, seeded, allowed_namespaces=[])
    manifest["spec"]["allowedNamespaceSelector"] = {"matchLabels": {"aws-access": f"ops-{unique}"}}
    kube.apply_identity(manifest)
    kube.create_credential(assumed_role_credential(labeled, "yes", seeded.name, seeded.role_arns[0]))
    kube.create_credential(assumed_role_credential(unlabeled, "no", seeded.name, seeded.role_arns[0]))
    kube.wait_ready(labeled, "yes")
    issued.add_secret(kube.secret(labeled, "yes"))
    cond = kube.wait_reason(unlabeled, "no", "NotAllowed")
    assert unlabeled in cond["message"]
    assert kube.secret(unlabeled, "no") is None
