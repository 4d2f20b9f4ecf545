"""Create a complete test identity on a running stack: IAM user, key, MFA device and roles in the
emulator; the key in Vault KV v2; the same TOTP seed in Vault's TOTP engine; a least-privilege
Vault policy and a kubernetes auth role. Used by tests, the demo and benchmarks.

The secret access key and the TOTP seed never appear in the returned object (so no repr or log
can leak them); ``SeededIdentity.read_secret_access_key`` reads the key back from Vault.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from devstack.env import StackEnv
from devstack.kubeconfig import VAULT_AUDIENCE

if TYPE_CHECKING:
    from devstack.sts_emulator.admin import AccessKey

DEFAULT_ACCOUNT = "123456789012"


@dataclass(frozen=True)
class RoleSpec:
    """An emulator role trusting the seeded user. ``name`` may carry a path (``team/app``)."""

    name: str
    require_mfa: bool = True
    max_session_duration: int = 43200
    external_id: str | None = None
    max_mfa_age_seconds: int | None = None


@dataclass(frozen=True)
class SeededIdentity:
    name: str
    account: str
    user_arn: str
    access_key_id: str
    mfa_serial: str
    totp_period: int
    role_arns: tuple[str, ...]
    kv_mount: str
    kv_path: str
    totp_mount: str
    totp_key: str
    policy: str
    auth_mount: str
    auth_role: str
    bound_namespaces: tuple[str, ...]
    bound_service_accounts: tuple[str, ...]
    access_key_id_key: str = "access_key_id"
    secret_access_key_key: str = "secret_access_key"
    aws_mount: str = ""  # "aws" when Vault's AWS engine was configured with this identity's key
    aws_role: str = ""  # Vault AWS role (credential_type assumed_role) over ``role_arns``
    aws_session_role: str = ""  # Vault AWS role (credential_type session_token, MFA serial set)
    vault_namespace: str = ""  # OpenBao / Vault Enterprise namespace holding every path above ("" = root)

    def role_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{name}"

    def read_secret_access_key(self, stack: StackEnv) -> str:
        vault = stack.vault(namespace=self.vault_namespace)
        try:
            data = vault.secrets.kv.v2.read_secret_version(
                path=self.kv_path, mount_point=self.kv_mount, raise_on_deleted_version=True
            )
            return str(data["data"]["data"][self.secret_access_key_key])
        finally:
            vault.adapter.close()


def new_totp_seed() -> str:
    """160 random bits, base32 without padding, as AWS virtual MFA devices use."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def policy_hcl(identity_name: str, *, kv_mount: str, kv_path: str, totp_mount: str, aws_mount: str) -> str:
    rules = [
        f'path "{totp_mount}/code/{identity_name}" {{ capabilities = ["read"] }}',
        f'path "{kv_mount}/data/{kv_path}" {{ capabilities = ["read"] }}',
    ]
    if aws_mount:
        rules += [
            f'path "{aws_mount}/creds/*" {{ capabilities = ["read", "update"] }}',
            f'path "{aws_mount}/sts/*" {{ capabilities = ["read", "update"] }}',
        ]
    return "\n".join(rules) + "\n"


def seed_identity(
    stack: StackEnv,
    name: str = "ops",
    account: str = DEFAULT_ACCOUNT,
    totp_period: int = 30,
    roles: list[RoleSpec] | None = None,
    *,
    bound_namespaces: tuple[str, ...] = ("vault-sts-operator",),
    bound_service_accounts: tuple[str, ...] = ("vault-sts-operator",),
    configure_vault_aws: bool = False,
    vault_namespace: str = "",
) -> SeededIdentity:
    """Seed identity ``name``; names must be unique per running stack (the emulator refuses a second user).

    ``configure_vault_aws``: when the stack has the Vault AWS plugin, also put this identity's key into
    ``aws/config/root`` (one identity per mount: the last seeded wins) and create two Vault AWS roles:
    ``name`` (``assumed_role`` over the seeded role ARNs, no MFA: ``aws/sts/<name>``) and
    ``<name>-session`` (``session_token`` with this MFA serial: ``aws/creds/<name>-session`` with ``mfa_code``).

    ``vault_namespace``: seed the Vault side into that namespace (which must already hold the KV, TOTP and
    kubernetes auth mounts: ``devstack.vault_config.configure`` on a client in that namespace).
    """
    roles = roles if roles is not None else [RoleSpec(f"app-{name}")]
    admin = stack.emulator()
    user = admin.create_user(name, account=account)
    key = admin.create_access_key(name)
    seed = new_totp_seed()
    serial = f"arn:aws:iam::{account}:mfa/{name}"
    admin.create_mfa_device(name, serial=serial, seed=seed, period=totp_period)
    role_arns = []
    for spec in roles:
        role = admin.create_role(
            f"arn:aws:iam::{account}:role/{spec.name}",
            [user["arn"]],
            require_mfa=spec.require_mfa,
            max_session_duration=spec.max_session_duration,
            external_id=spec.external_id,
            max_mfa_age_seconds=spec.max_mfa_age_seconds,
        )
        role_arns.append(role["arn"])

    kv_mount, kv_path, totp_mount = "secret", f"aws/{name}", "totp"
    aws_mount = "" if vault_namespace else stack.aws_mount
    policy = f"vault-sts-operator-{name}"
    vault = stack.vault(namespace=vault_namespace)
    try:
        vault.secrets.kv.v2.create_or_update_secret(
            path=kv_path,
            mount_point=kv_mount,
            secret={"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]},
        )
        label = quote(f"AWS:{name}", safe=":")
        vault.delete(f"{totp_mount}/keys/{name}")
        vault.write_data(
            f"{totp_mount}/keys/{name}",
            data={"url": f"otpauth://totp/{label}?secret={seed}&issuer=AWS&period={totp_period}"},
        )
        vault.sys.create_or_update_policy(
            name=policy,
            policy=policy_hcl(name, kv_mount=kv_mount, kv_path=kv_path, totp_mount=totp_mount, aws_mount=aws_mount),
        )
        vault.auth.kubernetes.create_role(
            name=policy,
            bound_service_account_names=list(bound_service_accounts),
            bound_service_account_namespaces=list(bound_namespaces),
            policies=[policy],
            ttl="1h",
            audience=VAULT_AUDIENCE,
            mount_point="kubernetes",
        )
        aws_role = ""
        if configure_vault_aws and aws_mount:
            _configure_vault_aws(vault, stack, mount=aws_mount, name=name, key=key, role_arns=role_arns, serial=serial)
            aws_role = name
    finally:
        vault.adapter.close()

    return SeededIdentity(
        name=name,
        account=account,
        user_arn=user["arn"],
        access_key_id=key["AccessKeyId"],
        mfa_serial=serial,
        totp_period=totp_period,
        role_arns=tuple(role_arns),
        kv_mount=kv_mount,
        kv_path=kv_path,
        totp_mount=totp_mount,
        totp_key=name,
        policy=policy,
        auth_mount="kubernetes",
        auth_role=policy,
        bound_namespaces=bound_namespaces,
        bound_service_accounts=bound_service_accounts,
        aws_mount=aws_mount if aws_role else "",
        aws_role=aws_role,
        aws_session_role=f"{aws_role}-session" if aws_role else "",
        vault_namespace=vault_namespace,
    )


def _configure_vault_aws(
    vault: Any, stack: StackEnv, *, mount: str, name: str, key: AccessKey, role_arns: list[str], serial: str
) -> None:
    vault.write_data(
        f"{mount}/config/root",
        data={
            "access_key": key["AccessKeyId"],
            "secret_key": key["SecretAccessKey"],
            "region": "us-east-1",
            "sts_endpoint": stack.sts_endpoint,
            "iam_endpoint": stack.sts_endpoint,
        },
    )
    vault.write_data(
        f"{mount}/roles/{name}",
        data={"credential_type": "assumed_role", "role_arns": role_arns},
    )
    vault.write_data(
        f"{mount}/roles/{name}-session",
        data={"credential_type": "session_token", "mfa_serial_number": serial},
    )
