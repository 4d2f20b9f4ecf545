"""Vault-mediated mode: Vault's AWS secrets engine holds the long-term key; the operator never sees it.

The engine is HashiCorp Vault's own (builtin/logical/aws, v1.21.4) served to OpenBao as an
external plugin, pointed at the STS emulator (see devstack/vault-aws-plugin).
"""

from __future__ import annotations

import pytest

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.seed import RoleSpec, seed_identity

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def team(kube, unique):
    return kube.namespace(f"vaws-{unique}")


@pytest.fixture
def seeded(stack, unique):
    assert stack.aws_mount, "the stack has no Vault AWS engine mounted (devstack/build_vault_aws.sh)"
    return seed_identity(stack, f"vaws-{unique}", configure_vault_aws=True,
                         roles=[RoleSpec(f"app-mfa-{unique}"), RoleSpec(f"app-open-{unique}", require_mfa=False)])


def test_session_token_mode_passes_mfa_through_vault(stack, kube, team, seeded, emulator_admin, issued):
    manifest = mfa_identity(stack, seeded, allowed_namespaces=[team], vault_aws="sessionToken")
    manifest["spec"]["accessKey"]["vaultAWS"]["role"] = seeded.aws_session_role
    kube.apply_identity(manifest)
    names = ["one", "two", "three"]
    for name in names:
        kube.create_credential(assumed_role_credential(team, name, seeded.name, seeded.role_arns[0]))
    for name in names:
        status = kube.wait_ready(team, name)["status"]
        assert status["assumedRoleArn"].endswith(f"/app-mfa-{seeded.name.removeprefix('vaws-')}/{team}@{name}")
        issued.add_secret(kube.secret(team, name))
    # One code, sent by Vault's engine in GetSessionToken, served all three MFA-demanding roles.
    assert emulator_admin.counters()["codes_accepted_by_serial"].get(seeded.mfa_serial) == 1


def test_assumed_role_mode_works_without_mfa_and_says_why_mfa_roles_refuse(stack, kube, team, seeded, issued):
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team], vault_aws="assumedRole"))
    kube.create_credential(assumed_role_credential(team, "open", seeded.name, seeded.role_arns[1]))
    kube.wait_ready(team, "open")
    issued.add_secret(kube.secret(team, "open"))

    kube.create_credential(assumed_role_credential(team, "guarded", seeded.name, seeded.role_arns[0]))
    cond = kube.wait_reason(team, "guarded", "AccessDenied")
    assert "without MFA" in cond["message"]
    assert kube.secret(team, "guarded") is None
