"""The operator's Vault token (its ServiceAccount through kubernetes auth) reads codes and its KV path only."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from devstack.kubeconfig import VAULT_AUDIENCE, request_token
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA


@pytest.fixture
def operator_vault(stack, make_identity):
    ident = make_identity("leastpriv")
    neighbour = make_identity("neighbour")
    jwt = request_token(stack, OPERATOR_NAMESPACE, OPERATOR_SA, expiration_seconds=600,
                        audiences=[VAULT_AUDIENCE])
    client = stack.vault(token="")
    client.auth.kubernetes.login(role=ident.auth_role, jwt=jwt)
    yield client, ident, neighbour
    client.adapter.close()


def test_operator_token_reads_codes_and_its_key_only(operator_vault, stack):
    client, ident, neighbour = operator_vault
    assert client.read(f"{ident.totp_mount}/code/{ident.totp_key}")["data"]["code"].isdigit()
    kv = client.secrets.kv.v2.read_secret_version(path=ident.kv_path, mount_point=ident.kv_mount,
                                                  raise_on_deleted_version=True)
    assert kv["data"]["data"]["access_key_id"] == ident.access_key_id

    refused = [
        lambda: client.read(f"{ident.totp_mount}/keys/{ident.totp_key}"),  # the seed's key (export, metadata)
        lambda: client.list(f"{ident.totp_mount}/keys"),
        lambda: client.write(f"{ident.totp_mount}/keys/{ident.totp_key}", generate=True),
        lambda: client.delete(f"{ident.totp_mount}/keys/{ident.totp_key}"),
        lambda: client.write(f"{ident.totp_mount}/code/{ident.totp_key}", code="123456"),
        lambda: client.read(f"{neighbour.totp_mount}/code/{neighbour.totp_key}"),
        lambda: client.secrets.kv.v2.read_secret_version(path=neighbour.kv_path, mount_point=neighbour.kv_mount,
                                                         raise_on_deleted_version=True),
        lambda: client.secrets.kv.v2.create_or_update_secret(path=ident.kv_path, mount_point=ident.kv_mount,
                                                             secret={"access_key_id": "x"}),
        lambda: client.secrets.kv.v2.list_secrets(path="aws", mount_point=ident.kv_mount),
        lambda: client.secrets.kv.v2.read_secret_metadata(path=ident.kv_path, mount_point=ident.kv_mount),
        lambda: client.read("sys/policy/" + ident.policy),
        client.sys.list_mounted_secrets_engines,
        lambda: client.list("auth/token/accessors"),
        lambda: client.read("auth/kubernetes/config"),
        lambda: client.read(f"auth/kubernetes/role/{ident.auth_role}"),
    ]
    if stack.aws_mount:
        refused.append(lambda: client.read(f"{stack.aws_mount}/config/root"))
    for i, call in enumerate(refused):
        with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):
            call()
            pytest.fail(f"call #{i} was allowed")
