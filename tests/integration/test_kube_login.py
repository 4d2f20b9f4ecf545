"""The operator's own login (clients/kube_config.py) and client (clients/kube_rest.py) on the stack's real API
server: the admin kubeconfig (client certificate, inline and as files relative to a second kubeconfig), a
ServiceAccount kubeconfig (token), and a tokenFile whose token is revoked and replaced (read again on 401).
Who the API server says we are comes from a SelfSubjectReview."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.env import StackEnv
from devstack.kubeconfig import kubeconfig_for_service_account, request_token
from vault_sts_operator.clients import kube_config
from vault_sts_operator.clients.kube_config import ConnectionInfo, Login, load_kubeconfig
from vault_sts_operator.clients.kube_rest import ApiError, KubeRest

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW_BODY = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


def whoami(login: Login) -> dict[str, Any]:
    """The user the API server authenticates, through one KubeRest (closed afterwards)."""

    async def main() -> dict[str, Any]:
        rest = KubeRest(login, pool_size=1)
        try:
            review = await rest.request("POST", REVIEW, REVIEW_BODY)
        finally:
            await rest.close()
        return dict(review["status"]["userInfo"])

    return asyncio.run(main())


@pytest.fixture
def namespace(kube_api: Any, unique: str) -> Iterator[str]:
    from kubernetes import client

    name = f"login-{unique}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def service_account(kube_api: Any, namespace: str, name: str) -> None:
    from kubernetes import client

    client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))


def test_admin_kubeconfig_client_certificate_inline(stack: StackEnv) -> None:
    info = load_kubeconfig([stack.kubeconfig])
    assert info.certificate_data and info.private_key_data and not info.token  # the stack's admin: a certificate
    user = whoami(lambda: info)
    assert "system:masters" in user.get("groups", []), user
    assert not user["username"].startswith("system:serviceaccount:")


def test_admin_certificate_as_files_relative_to_a_second_kubeconfig(stack: StackEnv, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    admin = yaml.safe_load(stack.kubeconfig.read_text())
    user = admin["users"][0]["user"]
    certs = tmp_path / "users" / "certs"
    certs.mkdir(parents=True)
    (certs / "admin.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (certs / "admin.key").write_bytes(base64.b64decode(user["client-key-data"]))
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "ca.crt").write_bytes(stack.kube_ca.read_bytes())
    clusters = tmp_path / "clusters" / "config"
    clusters.write_text(yaml.safe_dump({
        "current-context": "admin",
        "clusters": [{"name": "dev", "cluster": {"server": stack.kube_api, "certificate-authority": "ca.crt"}}],
        "contexts": [{"name": "admin", "context": {"cluster": "dev", "user": "admin"}}]}))
    users = tmp_path / "users" / "config"
    users.write_text(yaml.safe_dump({
        "users": [{"name": "admin", "user": {"client-certificate": "certs/admin.crt",
                                             "client-key": "certs/admin.key"}}]}))
    monkeypatch.setenv("KUBECONFIG", f"{clusters}:{users}")
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", tmp_path / "not-a-pod")
    monkeypatch.chdir("/")
    info = kube_config.login()
    assert info.certificate_path == str(certs / "admin.crt") and info.certificate_data is None
    assert "system:masters" in whoami(kube_config.default_login()).get("groups", [])


def test_service_account_kubeconfig_token(stack: StackEnv, kube_api: Any, namespace: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    service_account(kube_api, namespace, "reader")
    path = kubeconfig_for_service_account(stack, namespace, "reader", tmp_path / "sa.kubeconfig",
                                          expiration_seconds=600)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", tmp_path / "not-a-pod")
    info = kube_config.login()
    assert info.token and not info.certificate_data
    assert whoami(kube_config.default_login())["username"] == f"system:serviceaccount:{namespace}:reader"


def test_token_file_revoked_and_replaced_is_read_again_on_401(stack: StackEnv, kube_api: Any, namespace: str,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    service_account(kube_api, namespace, "first")
    service_account(kube_api, namespace, "second")
    token_file = tmp_path / "token"
    token_file.write_text(request_token(stack, namespace, "first", 600))
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "current-context": "sa",
        "clusters": [{"name": "dev", "cluster": {"server": stack.kube_api,
                                                 "certificate-authority": str(stack.kube_ca)}}],
        "users": [{"name": "sa", "user": {"tokenFile": "token"}}],
        "contexts": [{"name": "sa", "context": {"cluster": "dev", "user": "sa"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", tmp_path / "not-a-pod")
    logins: list[ConnectionInfo] = []

    def counting_login() -> ConnectionInfo:
        logins.append(kube_config.login())
        return logins[-1]

    async def main() -> list[str]:
        rest = KubeRest(counting_login, pool_size=1)
        names = []
        try:
            names.append((await rest.request("POST", REVIEW, REVIEW_BODY))["status"]["userInfo"]["username"])
            # Revoke the first token (its ServiceAccount is gone), as an expired projected token would be.
            client.CoreV1Api(kube_api).delete_namespaced_service_account("first", namespace)
            revoked = load_kubeconfig([kubeconfig])
            deadline = time.monotonic() + 30
            while True:  # the API server's ServiceAccount cache catches up
                try:
                    await asyncio.sleep(0.2)
                    await probe(revoked)
                except ApiError as exc:
                    assert exc.status == 401
                    break
                assert time.monotonic() < deadline, "the revoked token is still accepted"
            token_file.write_text(request_token(stack, namespace, "second", 600))  # the kubelet's rotation
            names.append((await rest.request("POST", REVIEW, REVIEW_BODY))["status"]["userInfo"]["username"])
        finally:
            await rest.close()
        return names

    async def probe(info: ConnectionInfo) -> None:
        frozen = ConnectionInfo(server=info.server, ca_path=info.ca_path, token=info.current_token())
        rest = KubeRest(lambda: frozen, pool_size=1)
        try:
            await rest.request("POST", REVIEW, REVIEW_BODY)
        finally:
            await rest.close()

    first_token = token_file.read_text()
    names = asyncio.run(main())
    assert names == [f"system:serviceaccount:{namespace}:first", f"system:serviceaccount:{namespace}:second"]
    assert len(logins) == 2  # the first login, and one more after the 401
    assert first_token != token_file.read_text()


def test_tls_server_name_is_the_name_checked(stack: StackEnv) -> None:
    """The server certificate names 127.0.0.1 and kubernetes.default.svc, not wrong.example."""
    info = load_kubeconfig([stack.kubeconfig])
    named = dataclasses.replace(info, tls_server_name="kubernetes.default.svc")
    assert "system:masters" in whoami(lambda: named).get("groups", [])
    wrong = dataclasses.replace(info, tls_server_name="wrong.example")
    with pytest.raises(ApiError) as caught:
        whoami(lambda: wrong)
    assert caught.value.status == 0  # the TLS handshake fails: the name is checked
