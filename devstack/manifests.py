"""Custom resources for a seeded identity: what a platform admin and an app team would apply."""

from __future__ import annotations

from typing import Any

from devstack.env import StackEnv
from devstack.seed import SeededIdentity

GROUP, VERSION = "vaultsts.io", "v1alpha1"
# The Secret (in the operator's namespace) holding the CA of the stack's Vault: devstack/vault_config.py.
VAULT_CA_SECRET, VAULT_CA_KEY = "vault-ca", "ca.crt"


def vault_tls(stack: StackEnv, how: str = "") -> dict[str, Any]:
    """How an MFAIdentity trusts the stack's Vault certificate: ``caBundle`` (the PEM inline) or
    ``caSecretRef`` (the Secret devstack publishes). By default each flavour takes one, so the suites
    cover both paths: ``caBundle`` on HashiCorp Vault, ``caSecretRef`` on OpenBao."""
    ca = stack.vault_ca
    if ca is None:
        return {}
    how = how or ("caBundle" if stack.vault_flavor == "hashicorp" else "caSecretRef")
    if how == "caBundle":
        return {"caBundle": ca.read_text()}
    if how == "caSecretRef":
        return {"caSecretRef": {"name": VAULT_CA_SECRET, "key": VAULT_CA_KEY}}
    raise ValueError(f"unknown CA source {how!r}")


def mfa_identity(
    stack: StackEnv,
    seeded: SeededIdentity,
    *,
    name: str | None = None,
    allowed_namespaces: list[str],
    allowed_role_arns: list[str] | None = None,
    vault_aws: str = "",  # "", "assumedRole" or "sessionToken"
    session_seconds: int = 43200,
    vault_namespace: str = "",
    mfa_modes: list[str] | None = None,  # limits.mfaModes; None: the default, [session] (no mfa: direct)
) -> dict[str, Any]:
    access_key: dict[str, Any]
    if vault_aws:
        access_key = {"vaultAWS": {"mount": seeded.aws_mount or "aws", "role": seeded.aws_role or seeded.name,
                                   "credentialType": vault_aws}}
    else:
        access_key = {"kv": {"mount": seeded.kv_mount, "path": seeded.kv_path}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MFAIdentity",
        "metadata": {"name": name or seeded.name},
        "spec": {
            "vault": {"address": stack.vault_addr, **vault_tls(stack),
                      **({"namespace": vault_namespace} if vault_namespace else {}),
                      "auth": {"kubernetes": {"mount": seeded.auth_mount, "role": seeded.auth_role}}},
            "accessKey": access_key,
            "mfa": {"serialNumber": seeded.mfa_serial,
                    "totp": {"mount": seeded.totp_mount, "key": seeded.totp_key, "period": seeded.totp_period}},
            "session": {"durationSeconds": session_seconds},
            "sts": {"region": "us-east-1", "endpoint": stack.sts_endpoint},
            "allowedNamespaces": allowed_namespaces,
            "allowedRoleArns": allowed_role_arns if allowed_role_arns is not None else list(seeded.role_arns),
            **({"limits": {"mfaModes": mfa_modes}} if mfa_modes is not None else {}),
        },
    }


def assumed_role_credential(namespace: str, name: str, identity: str, role_arn: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AssumedRoleCredential",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"identityRef": {"name": identity}, "roleArn": role_arn, **spec},
    }
