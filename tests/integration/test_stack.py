"""The local stack does what issue 2 promises: real apiserver, real OpenBao, an MFA-enforcing STS."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import hvac
import hvac.exceptions
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devstack.env import StackEnv
from devstack.kubeconfig import VAULT_AUDIENCE, kubeconfig_for_service_account, request_token
from devstack.seed import RoleSpec, SeededIdentity, seed_identity

pytestmark = pytest.mark.stack

INVALID_CODE = "MultiFactorAuthentication failed with invalid MFA one time pass code."

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.stacktest.vaultsts.io}
spec:
  group: stacktest.vaultsts.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, properties: {size: {type: integer}}}
"""


def kubectl(stack: StackEnv, *args: str, stdin: str | None = None, kubeconfig: Path | None = None) -> str:
    env = stack.subprocess_env()
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run(
        ["kubectl", *args], input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


@pytest.fixture
def namespace(kube_api: Any, unique: str) -> Iterator[str]:
    name = f"stack-test-{unique}"
    core = k8s.CoreV1Api(kube_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def service_account(kube_api: Any, namespace: str, name: str) -> None:
    k8s.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    )


def sts(stack: StackEnv, key_id: str, secret: str, token: str | None = None) -> Any:
    return boto3.client(
        "sts",
        endpoint_url=stack.sts_endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def vault_code(vault: Any, identity: SeededIdentity) -> str:
    code = str(vault.read(f"{identity.totp_mount}/code/{identity.totp_key}")["data"]["code"])
    assert len(code) == 6 and code.isdigit()
    return code


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return str(err["Code"]), str(err["Message"])


# --------------------------------------------------------------------------- Kubernetes


def test_kubectl_get_namespaces(stack: StackEnv) -> None:
    out = kubectl(stack, "get", "ns", "-o", "name")
    assert "namespace/default" in out.split()
    assert "namespace/kube-system" in out.split()


def test_kubectl_applies_a_crd_and_serves_it(stack: StackEnv, namespace: str) -> None:
    kubectl(stack, "apply", "-f", "-", stdin=CRD)
    try:
        kubectl(stack, "wait", "--for=condition=Established", "crd/widgets.stacktest.vaultsts.io", "--timeout=30s")
        widget = "apiVersion: stacktest.vaultsts.io/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"
        kubectl(stack, "apply", "-n", namespace, "-f", "-", stdin=widget)
        assert kubectl(stack, "get", "widgets", "-n", namespace, "-o", "jsonpath={.items[0].spec.size}") == "3"
    finally:
        kubectl(stack, "delete", "crd", "widgets.stacktest.vaultsts.io", "--wait=false")


def test_garbage_collector_deletes_secret_owned_by_deleted_configmap(kube_api: Any, namespace: str) -> None:
    core = k8s.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner")))
    assert owner.metadata is not None and owner.metadata.uid
    ref = k8s.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_secret(
        namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="owned", owner_references=[ref]))
    )
    core.delete_namespaced_config_map("owner", namespace)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_secret("owned", namespace)
        except ApiException as exc:
            assert exc.status == 404
            return
        time.sleep(0.25)
    pytest.fail("kube-controller-manager's garbage collector did not delete the owned Secret within 60s")


def test_service_account_kubeconfig_acts_as_that_account(
    stack: StackEnv, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    service_account(kube_api, namespace, "limited")
    path = kubeconfig_for_service_account(stack, namespace, "limited", tmp_path / "limited.kubeconfig")
    who = kubectl(stack, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=path)
    assert who == f"system:serviceaccount:{namespace}:limited"
    done = subprocess.run(
        ["kubectl", "get", "secrets", "-n", namespace],
        env={**stack.subprocess_env(), "KUBECONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "forbidden" in done.stderr.lower()


# --------------------------------------------------------------------------- OpenBao


@pytest.fixture
def bound_identity(stack: StackEnv, kube_api: Any, namespace: str, unique: str) -> SeededIdentity:
    """An identity whose Vault role admits ServiceAccount ``<namespace>/vault-sts-operator`` only."""
    service_account(kube_api, namespace, "vault-sts-operator")
    return seed_identity(
        stack,
        name=f"login-{unique}",
        roles=[RoleSpec(f"app-login-{unique}")],
        bound_namespaces=(namespace,),
        bound_service_accounts=("vault-sts-operator",),
    )


def test_service_account_logs_into_openbao_and_gets_only_its_policy(
    stack: StackEnv, kube_api: Any, namespace: str, bound_identity: SeededIdentity
) -> None:
    jwt = request_token(stack, namespace, "vault-sts-operator", expiration_seconds=600, audiences=[VAULT_AUDIENCE])
    client = stack.vault(token="")
    login = client.auth.kubernetes.login(role=bound_identity.auth_role, jwt=jwt)
    assert bound_identity.policy in login["auth"]["policies"]

    # OpenBao serves a TOTP code for the seeded key, and the KV key, to that token
    vault_code(client, bound_identity)
    kv = client.secrets.kv.v2.read_secret_version(
        path=bound_identity.kv_path, mount_point=bound_identity.kv_mount, raise_on_deleted_version=True
    )
    assert kv["data"]["data"]["access_key_id"] == bound_identity.access_key_id

    # ... but neither the TOTP key itself nor anyone else's paths
    with pytest.raises(hvac.exceptions.Forbidden):
        client.read(f"{bound_identity.totp_mount}/keys/{bound_identity.totp_key}")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.read(f"{bound_identity.totp_mount}/code/someone-else")
    client.adapter.close()


def test_unbound_service_account_is_refused(
    stack: StackEnv, kube_api: Any, namespace: str, bound_identity: SeededIdentity
) -> None:
    service_account(kube_api, namespace, "intruder")
    jwt = request_token(stack, namespace, "intruder", expiration_seconds=600, audiences=[VAULT_AUDIENCE])
    client = stack.vault(token="")
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)) as refused:
        client.auth.kubernetes.login(role=bound_identity.auth_role, jwt=jwt)
    assert "not authorized" in str(refused.value)
    client.adapter.close()


def test_vault_role_audience_refuses_a_token_without_it(
    stack: StackEnv, kube_api: Any, namespace: str, bound_identity: SeededIdentity
) -> None:
    """The role sets `audience`: the operator's token (audience "vault", as the chart projects it) logs in;
    the same ServiceAccount's token with the apiserver's audience (what the automounted token carries) does
    not; and the apiserver refuses the Vault-audience token, so Vault cannot replay it there."""
    root = stack.vault()
    try:
        assert root.auth.kubernetes.read_role(bound_identity.auth_role)["audience"] == VAULT_AUDIENCE
    finally:
        root.adapter.close()
    good = request_token(stack, namespace, "vault-sts-operator", expiration_seconds=600, audiences=[VAULT_AUDIENCE])
    apiserver_audience = request_token(stack, namespace, "vault-sts-operator", expiration_seconds=600)
    client = stack.vault(token="")
    try:
        assert client.auth.kubernetes.login(role=bound_identity.auth_role, jwt=good)["auth"]["client_token"]
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            client.auth.kubernetes.login(role=bound_identity.auth_role, jwt=apiserver_audience)
    finally:
        client.adapter.close()
    config = k8s.Configuration()
    config.host = kube_api.configuration.host
    config.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {good}"}
    with k8s.ApiClient(config) as as_vault_token, pytest.raises(ApiException) as refused:
        k8s.CoreV1Api(as_vault_token).list_namespaced_secret(namespace)
    assert refused.value.status == 401


def test_totp_key_never_gives_back_its_seed(vault: Any, stack: StackEnv, unique: str) -> None:
    identity = seed_identity(stack, name=f"seedless-{unique}", roles=[])
    key = vault.read(f"{identity.totp_mount}/keys/{identity.totp_key}")["data"]
    assert set(key) & {"key", "url", "seed"} == set()
    assert key["period"] == identity.totp_period


# --------------------------------------------------------------------------- STS emulator with Vault's codes


def test_assume_role_with_vault_totp_code_once_only(stack: StackEnv, vault: Any, unique: str) -> None:
    identity = seed_identity(stack, name=f"direct-{unique}", roles=[RoleSpec(f"app-direct-{unique}")])
    client = sts(stack, identity.access_key_id, identity.read_secret_access_key(stack))
    role = identity.role_arns[0]
    code = vault_code(vault, identity)
    wrong = f"{(int(code) + 500_000) % 1_000_000:06d}"

    with pytest.raises(ClientError) as refused_wrong:
        client.assume_role(RoleArn=role, RoleSessionName="wrong", SerialNumber=identity.mfa_serial, TokenCode=wrong)
    assert error_of(refused_wrong) == ("AccessDenied", INVALID_CODE)

    creds = client.assume_role(RoleArn=role, RoleSessionName="first", SerialNumber=identity.mfa_serial, TokenCode=code)[
        "Credentials"
    ]
    assert creds["AccessKeyId"].startswith("ASIA")

    with pytest.raises(ClientError) as refused_again:
        client.assume_role(RoleArn=role, RoleSessionName="again", SerialNumber=identity.mfa_serial, TokenCode=code)
    assert error_of(refused_again) == ("AccessDenied", INVALID_CODE)

    who = sts(stack, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]).get_caller_identity()
    assert who["Arn"] == f"arn:aws:sts::{identity.account}:assumed-role/app-direct-{unique}/first"


def test_mfa_role_refuses_without_mfa_and_accepts_an_mfa_session(stack: StackEnv, vault: Any, unique: str) -> None:
    identity = seed_identity(stack, name=f"session-{unique}", roles=[RoleSpec(f"app-session-{unique}")])
    client = sts(stack, identity.access_key_id, identity.read_secret_access_key(stack))
    role = identity.role_arns[0]

    with pytest.raises(ClientError) as refused:
        client.assume_role(RoleArn=role, RoleSessionName="no-mfa")
    assert error_of(refused)[0] == "AccessDenied"

    session = client.get_session_token(
        DurationSeconds=3600, SerialNumber=identity.mfa_serial, TokenCode=vault_code(vault, identity)
    )["Credentials"]
    via_session = sts(stack, session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"])
    creds = via_session.assume_role(RoleArn=role, RoleSessionName="via-session", DurationSeconds=3600)["Credentials"]
    assert creds["AccessKeyId"] != session["AccessKeyId"]


def test_openbao_aws_engine_issues_emulator_credentials(stack: StackEnv, vault: Any, unique: str) -> None:
    assert stack.aws_mount, "the OpenBao AWS plugin is not mounted (make build runs devstack/build_vault_aws.sh)"
    identity = seed_identity(
        stack,
        name=f"vaultaws-{unique}",
        roles=[RoleSpec(f"app-vaultaws-{unique}", require_mfa=False)],
        configure_vault_aws=True,
    )
    issued = vault.write_data(
        f"{identity.aws_mount}/sts/{identity.aws_role}",
        data={"role_arn": identity.role_arns[0], "ttl": "15m"},
    )["data"]
    who = sts(stack, issued["access_key"], issued["secret_key"], issued["security_token"]).get_caller_identity()
    assert who["Arn"].startswith(f"arn:aws:sts::{identity.account}:assumed-role/app-vaultaws-{unique}/")


def test_env_file_names_everything(stack: StackEnv) -> None:
    env = stack.as_environ()
    for key in (
        "KUBECONFIG",
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "AWS_ENDPOINT_URL_STS",
        "STS_EMULATOR_ADMIN_URL",
        "VSO_STACK_LOGS",
    ):
        assert env[key], key
    assert Path(env["KUBECONFIG"]).is_file()
    assert Path(env["VSO_STACK_LOGS"]).is_dir()


def test_vault_aws_engine_session_token_carries_mfa(stack: StackEnv, vault: Any, unique: str) -> None:
    """Vault-mediated mode: Vault holds the key, calls GetSessionToken with our code; the session has MFA."""
    assert stack.aws_mount, "the OpenBao AWS plugin is not mounted (make build runs devstack/build_vault_aws.sh)"
    identity = seed_identity(
        stack, name=f"vaultmfa-{unique}", roles=[RoleSpec(f"app-vaultmfa-{unique}")], configure_vault_aws=True
    )
    session = vault.write_data(
        f"{identity.aws_mount}/creds/{identity.aws_session_role}",
        data={"mfa_code": vault_code(vault, identity), "ttl": "1h"},
    )["data"]
    via_session = sts(stack, session["access_key"], session["secret_key"], session["session_token"])
    creds = via_session.assume_role(RoleArn=identity.role_arns[0], RoleSessionName="vault-mfa")["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
