"""What differs between the two Vaults the stack runs (docs/vault-flavours.md), proven on whichever runs:
``make test`` runs this file against OpenBao and again against HashiCorp Vault (VSO_VAULT_FLAVOR).

- TLS: the Vault serves TLS only; an MFAIdentity trusts it through ``vault.caBundle`` or
  ``vault.caSecretRef`` (both work on both flavours); without a CA the operator refuses to talk to it.
- Namespaces: OpenBao has them without Enterprise; ``vault.namespace`` reaches only that namespace.
  HashiCorp Vault's namespaces are Enterprise only: this (community) build has no ``sys/namespaces`` and
  ignores ``X-Vault-Namespace``.
- Leases: the AWS engine's STS credentials are not renewable; Vault 1.21 and OpenBao register a lease
  for them (Vault 1.12 to 1.13 did not, vault#15869); the operator reads the lifetime from the response.
"""

from __future__ import annotations

import hvac.exceptions
import pytest

from devstack import vault_config
from devstack.manifests import assumed_role_credential, mfa_identity, vault_tls
from devstack.seed import RoleSpec, seed_identity

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def team(kube, unique):
    return kube.namespace(f"flavour-{unique}")


def identity_with_ca(stack, seeded, team, name, how):
    manifest = mfa_identity(stack, seeded, name=name, allowed_namespaces=[team])
    vault = {k: v for k, v in manifest["spec"]["vault"].items() if k not in ("caBundle", "caSecretRef")}
    manifest["spec"]["vault"] = {**vault, **(vault_tls(stack, how) if how else {})}
    return manifest


def test_tls_ca_from_bundle_or_secret_and_refused_without(stack, kube, team, unique, issued):
    assert stack.vault_addr.startswith("https://"), stack.vault_addr
    seeded = seed_identity(stack, f"tls-{unique}", roles=[RoleSpec(f"app-tls-{unique}")])
    for how in ("caBundle", "caSecretRef", ""):
        name = f"tls-{how.lower() or 'none'}-{unique}"
        kube.apply_identity(identity_with_ca(stack, seeded, team, name, how))
        kube.create_credential(assumed_role_credential(team, how.lower() or "none", name, seeded.role_arns[0]))
    for cred in ("cabundle", "casecretref"):
        kube.wait_ready(team, cred, timeout=90)
        issued.add_secret(kube.secret(team, cred))
    # No CA: the certificate is not trusted (the stack CA is in no system store), nothing is issued.
    cond = kube.wait_reason(team, "none", "VaultError", timeout=60)
    assert "SSLError" in cond["message"], cond["message"]
    assert kube.secret(team, "none") is None


def test_vault_namespace_reaches_only_its_namespace(stack, kube, team, unique, vault, issued):
    ns = f"tenant-{unique}"
    if stack.vault_flavor == "hashicorp":
        # Namespaces are a Vault Enterprise feature: the community server has no sys/namespaces ...
        with pytest.raises(hvac.exceptions.InvalidPath, match="enterprise-only"):
            vault.write_data(f"sys/namespaces/{ns}", data={})
        # ... and ignores X-Vault-Namespace: a namespace that does not exist reaches the root namespace
        # (OpenBao answers 404). docs/vault-flavours.md: do not set vault.namespace against it.
        scoped = stack.vault(namespace=ns)
        try:
            assert "secret/" in scoped.sys.list_mounted_secrets_engines()["data"]
        finally:
            scoped.adapter.close()
        return
    vault.write_data(f"sys/namespaces/{ns}", data={})
    scoped = stack.vault(namespace=ns)
    api = stack.api_client()
    try:
        vault_config.configure(scoped, kube_api=api, kube_host=stack.kube_api, ca_pem=stack.kube_ca.read_text(),
                               sts_endpoint=stack.sts_endpoint, plugin_sha256=None)
    finally:
        api.close()
        scoped.adapter.close()
    seeded = seed_identity(stack, f"nsid-{unique}", roles=[RoleSpec(f"app-ns-{unique}")], vault_namespace=ns)
    # Everything the identity needs lives in the namespace only.
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault.secrets.kv.v2.read_secret_version(path=seeded.kv_path, mount_point=seeded.kv_mount,
                                                raise_on_deleted_version=True)
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team], vault_namespace=ns))
    kube.create_credential(assumed_role_credential(team, "in-ns", seeded.name, seeded.role_arns[0]))
    kube.wait_ready(team, "in-ns", timeout=90)
    issued.add_secret(kube.secret(team, "in-ns"))

    # The same identity without the namespace logs in to the root namespace, where its role does not exist.
    rootless = mfa_identity(stack, seeded, name=f"{seeded.name}-root", allowed_namespaces=[team])
    kube.apply_identity(rootless)
    kube.create_credential(assumed_role_credential(team, "in-root", rootless["metadata"]["name"],
                                                   seeded.role_arns[0]))
    # Refused logins carry one reason on both flavours (OpenBao answers 400 for an unknown role, 403 for an
    # unbound ServiceAccount): clients/vault.py, docs/vault-flavours.md.
    cond = kube.wait_reason(team, "in-root", "VaultPermissionDenied", timeout=60)
    assert "login" in cond["message"], cond["message"]
    assert kube.secret(team, "in-root") is None


def test_sts_credentials_from_the_aws_engine_are_not_renewable(stack, vault, unique):
    """Both flavours register a lease for STS credentials but refuse to renew it, and say how long the
    credentials live in the response itself: the operator takes the lifetime from there, never from a lease."""
    assert stack.aws_mount, "the stack has no Vault AWS engine mounted"
    seeded = seed_identity(stack, f"lease-{unique}", roles=[RoleSpec(f"app-lease-{unique}")],
                           configure_vault_aws=True)
    code = vault.read(f"{seeded.totp_mount}/code/{seeded.totp_key}")["data"]["code"]
    response = vault.write_data(f"{seeded.aws_mount}/creds/{seeded.aws_session_role}",
                                data={"mfa_code": code, "ttl": "1h"})
    assert response["renewable"] is False
    assert 3500 <= int(response["data"]["ttl"]) <= 3600, response["data"]["ttl"]
    assert 3500 <= response["lease_duration"] <= 3600, response["lease_duration"]
    assert response["lease_id"].startswith(f"{seeded.aws_mount}/creds/{seeded.aws_session_role}/")
    with pytest.raises(hvac.exceptions.VaultError) as refused:
        vault.sys.renew_lease(lease_id=response["lease_id"], increment=60)
    assert "not renewable" in str(refused.value) or "cannot be renewed" in str(refused.value), str(refused.value)
