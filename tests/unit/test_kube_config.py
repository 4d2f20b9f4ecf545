"""clients/kube_config.py: the kubeconfig merged as kubectl merges it, paths relative to their file, inline data,
the in-cluster ServiceAccount from a fake mount, tokens read again at each login, and what is refused (naming
it, never quoting a secret)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from vault_sts_operator.clients import kube_config
from vault_sts_operator.clients.kube_config import (
    ConnectionInfo,
    KubeConfigError,
    NoConfiguration,
    in_cluster_server,
    kubeconfig_paths,
    load_in_cluster,
    load_kubeconfig,
)
from vault_sts_operator.clients.kube_rest import KubeRest, ssl_context

SECRET = "s3cr3t-t0ken-value"  # must never show in a message or a repr


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def config(*, current: str | None = None, clusters: dict[str, Any] | None = None,
           users: dict[str, Any] | None = None, contexts: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    if current:
        out["current-context"] = current
    out["clusters"] = [{"name": n, "cluster": c} for n, c in (clusters or {}).items()]
    out["users"] = [{"name": n, "user": u} for n, u in (users or {}).items()]
    out["contexts"] = [{"name": n, "context": c} for n, c in (contexts or {}).items()]
    return out


def single(tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    return write(tmp_path / "config", config(
        current="ctx", clusters={"c": cluster or {"server": "https://api.example:6443"}}, users={"u": user},
        contexts={"ctx": {"cluster": "c", "user": "u", "namespace": "team"}}))


# --- merging ----------------------------------------------------------------------------------------------------

def test_two_files_merge_as_kubectl_does_first_value_wins(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "config", config(
        current="one",
        clusters={"shared": {"server": "https://first:6443"}},
        users={"shared-user": {"token": "first-token"}},
        contexts={"one": {"cluster": "shared", "user": "only-in-second", "namespace": "ns-a"}}))
    second = write(tmp_path / "b" / "config", config(
        current="two",  # ignored: the first file set current-context
        clusters={"shared": {"server": "https://second:6443"}},  # ignored: the first file named it
        users={"only-in-second": {"token": "second-token"}, "shared-user": {"token": "ignored"}},
        contexts={"one": {"cluster": "shared", "user": "shared-user"},  # ignored, whole entry (never field-wise)
                  "two": {"cluster": "shared", "user": "shared-user"}}))
    info = load_kubeconfig([first, second])
    assert info.server == "https://first:6443"
    assert info.current_token() == "second-token"  # a user only the second file defines
    assert info.default_namespace == "ns-a"
    # Reversed order: the second file's values win now.
    other = load_kubeconfig([second, first])
    assert (other.server, other.current_token(), other.default_namespace) == ("https://second:6443", "ignored", None)


def test_current_context_from_a_later_file_when_the_first_sets_none(tmp_path: Path) -> None:
    first = write(tmp_path / "a", config(clusters={"c": {"server": "https://first:6443"}}))
    second = write(tmp_path / "b", config(current="ctx", users={"u": {"token": "t"}},
                                          contexts={"ctx": {"cluster": "c", "user": "u"}}))
    assert load_kubeconfig([first, second]).server == "https://first:6443"


def test_kubeconfig_env_joined_by_pathsep_missing_files_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    real = single(tmp_path, {"token": "t"})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{real}:")
    assert kubeconfig_paths() == [tmp_path / "absent", real]
    assert load_kubeconfig().server == "https://api.example:6443"


def test_without_kubeconfig_env_the_home_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig_paths() == [tmp_path / ".kube" / "config"]
    with pytest.raises(NoConfiguration, match="no kubeconfig found"):
        load_kubeconfig()
    single(tmp_path / ".kube", {"token": "t"})
    assert load_kubeconfig().server == "https://api.example:6443"


# --- fields -----------------------------------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_file_that_names_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    clusters = write(tmp_path / "clusters" / "config", config(
        current="ctx", clusters={"c": {"server": "https://api:6443", "certificate-authority": "pki/ca.crt"}},
        contexts={"ctx": {"cluster": "c", "user": "u"}}))
    users = write(tmp_path / "users" / "config", config(
        users={"u": {"client-certificate": "certs/u.crt", "client-key": "certs/u.key"}}))
    monkeypatch.chdir(tmp_path)  # not the working directory
    info = load_kubeconfig([clusters, users])
    assert info.ca_path == str(tmp_path / "clusters" / "pki" / "ca.crt")
    assert info.certificate_path == str(tmp_path / "users" / "certs" / "u.crt")
    assert info.private_key_path == str(tmp_path / "users" / "certs" / "u.key")
    absolute = single(tmp_path / "abs", {"tokenFile": "/run/token"}, {"server": "https://x", "certificate-authority":
                                                                      "/etc/ca.crt"})
    info = load_kubeconfig([absolute])
    assert (info.token_path, info.ca_path) == ("/run/token", "/etc/ca.crt")


def test_data_fields_are_decoded_and_kept_out_of_repr(tmp_path: Path) -> None:
    ca, cert, key = b"-----BEGIN CERTIFICATE-----\nca\n", b"-----BEGIN CERTIFICATE-----\nme\n", SECRET.encode()
    path = single(tmp_path, {"client-certificate-data": b64(cert), "client-key-data": b64(key), "token": SECRET},
                  {"server": "https://api:6443", "certificate-authority-data": b64(ca), "tls-server-name": "kube.int"})
    info = load_kubeconfig([path])
    assert (info.ca_data, info.certificate_data, info.private_key_data) == (ca, cert, key)
    assert info.tls_server_name == "kube.int" and info.insecure is False and info.token == SECRET
    assert SECRET not in repr(info) and b64(key) not in repr(info)


def test_invalid_base64_is_named_not_quoted(tmp_path: Path) -> None:
    path = single(tmp_path, {"client-certificate-data": b64(b"c"), "client-key-data": SECRET + "!"})
    with pytest.raises(KubeConfigError, match="client-key-data of user 'u' is not valid base64") as caught:
        load_kubeconfig([path])
    assert SECRET not in str(caught.value)


def test_insecure_skip_tls_verify(tmp_path: Path) -> None:
    cluster = {"server": "https://x", "insecure-skip-tls-verify": True}
    info = load_kubeconfig([single(tmp_path, {"token": "t"}, cluster)])
    assert info.insecure is True
    assert ssl_context(info) is False
    secure = load_kubeconfig([single(tmp_path / "s", {"token": "t"}, {"server": "https://x"})])
    assert secure.insecure is False and ssl_context(secure) is not False


def test_token_file_is_read_again_at_each_login_and_wins_over_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    (tmp_path / "token").write_text("first\n")
    monkeypatch.setenv("KUBECONFIG", str(single(tmp_path, {"tokenFile": "token", "token": "static"})))
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", tmp_path / "no-pod")
    relogin = kube_config.default_login()
    info = relogin()
    assert info.current_token() == "first"
    (tmp_path / "token").write_text("second\n")
    assert info.current_token() == "second"
    assert relogin().current_token() == "second"
    (tmp_path / "token").unlink()
    with pytest.raises(KubeConfigError, match="cannot read the token file") as caught:
        info.current_token()
    assert "second" not in str(caught.value)


def test_kube_rest_reads_a_rotated_token_file_on_401(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer rotated":
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        return web.json_response({"kind": "Namespace"})

    async def main() -> dict[str, Any]:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/default", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        (tmp_path / "token").write_text("old")
        monkeypatch.setenv("KUBECONFIG", str(single(tmp_path, {"tokenFile": "token"},
                                                    {"server": f"http://127.0.0.1:{port}"})))
        monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", tmp_path / "no-pod")
        rest = KubeRest(kube_config.default_login())
        try:
            await rest._session_now()  # logged in with the old token
            (tmp_path / "token").write_text("rotated")  # the kubelet rotates the projected token
            return await rest.request("GET", "/api/v1/namespaces/default")
        finally:
            await rest.close()
            await runner.cleanup()

    assert asyncio.run(main()) == {"kind": "Namespace"}
    assert seen == ["Bearer old", "Bearer rotated"]


# --- refusals ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("user", "named"), [
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}, "an exec credential plugin"),
    ({"auth-provider": {"name": "oidc", "config": {"id-token": SECRET}}}, "an auth-provider"),
    ({"username": "admin", "password": SECRET}, "username/password"),
    ({"token": SECRET, "as": "system:admin"}, "impersonation"),
])
def test_unsupported_users_are_refused_naming_what(tmp_path: Path, user: dict[str, Any], named: str) -> None:
    path = single(tmp_path, {**user, "token": SECRET})
    with pytest.raises(KubeConfigError) as caught:
        load_kubeconfig([path])
    message = str(caught.value)
    assert named in message and "'u'" in message and str(path) in message
    assert SECRET not in message


def test_yaml_errors_give_a_position_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(f"users:\n- name: u\n  user:\n    token: {SECRET}: [\n")
    with pytest.raises(KubeConfigError, match=r"not valid YAML at line 4") as caught:
        load_kubeconfig([path])
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("cluster", "user", "match"), [
    ({"server": "https://x", "proxy-url": "http://proxy:3128"}, {"token": "t"}, "proxy-url"),
    ({"certificate-authority": "/ca"}, {"token": "t"}, "has no server"),
    ({"server": "https://x", "certificate-authority": "/ca", "certificate-authority-data": b64(b"ca")},
     {"token": "t"}, "certificate authority; set only one"),
    ({"server": "https://x"}, {"client-certificate": "/c.crt"}, "needs its key"),
])
def test_inconsistent_configs_are_refused(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any],
                                          match: str) -> None:
    with pytest.raises(KubeConfigError, match=match):
        load_kubeconfig([single(tmp_path, user, cluster)])


def test_missing_context_and_user_are_named(tmp_path: Path) -> None:
    path = write(tmp_path / "config", config(current="nope", clusters={"c": {"server": "https://x"}},
                                             contexts={"ctx": {"cluster": "c", "user": "ghost"}}))
    with pytest.raises(KubeConfigError, match="no context 'nope'"):
        load_kubeconfig([path])
    with pytest.raises(KubeConfigError, match="names user 'ghost'"):
        load_kubeconfig([path], context="ctx")


# --- in-cluster -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("environ", "expected"), [
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
    ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00::1]:6443"),
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),
    ({}, None),
])
def test_in_cluster_server_from_the_service_environment(environ: dict[str, str], expected: str | None) -> None:
    assert in_cluster_server(environ) == expected


SERVICE_ENV = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}


def mount(root: Path, token: str = "pod-token") -> Path:
    sa = root / "var/run/secrets/kubernetes.io/serviceaccount"
    sa.mkdir(parents=True)
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (sa / "namespace").write_text("operators\n")
    return sa


def test_in_cluster_from_a_fake_mount(tmp_path: Path) -> None:
    sa = mount(tmp_path)
    info = load_in_cluster(SERVICE_ENV, sa)
    assert info == ConnectionInfo(server="https://[fd00::1]:443", token_path=str(sa / "token"),
                                  ca_path=str(sa / "ca.crt"), default_namespace="operators")
    assert info.current_token() == "pod-token"
    (sa / "token").write_text("rotated-by-kubelet")
    assert info.current_token() == "rotated-by-kubelet"


def test_not_in_cluster_without_the_environment_or_the_token(tmp_path: Path) -> None:
    sa = mount(tmp_path)
    assert load_in_cluster({}, sa) is None
    (sa / "token").unlink()
    assert load_in_cluster(SERVICE_ENV, sa) is None


def test_login_prefers_in_cluster_then_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = mount(tmp_path / "root")
    monkeypatch.setenv("KUBECONFIG", str(single(tmp_path, {"token": "t"})))
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", sa)
    for key, value in SERVICE_ENV.items():
        monkeypatch.setenv(key, value)
    assert kube_config.login().server == "https://[fd00::1]:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert kube_config.login().server == "https://api.example:6443"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(NoConfiguration):
        kube_config.login()


def test_the_cli_reports_an_unusable_kubeconfig_without_its_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    from vault_sts_operator.ctl.errors import Unreachable
    from vault_sts_operator.ctl.kube import Kube

    monkeypatch.setenv("KUBECONFIG", str(single(tmp_path, {"exec": {"command": "aws"}, "token": SECRET})))
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", tmp_path / "no-pod")
    kube = Kube()
    try:
        with pytest.raises(Unreachable, match=r"no usable Kubernetes credentials: .*exec credential plugin") as caught:
            kube.identity("any")
    finally:
        kube.close()
    assert SECRET not in str(caught.value)


def test_the_verbs_work_in_the_kubeconfig_contexts_namespace(tmp_path, monkeypatch):
    """`status`/`rotate` without -n use the context's namespace, as kubectl does (issue 19)."""
    from vault_sts_operator.ctl.kube import current_namespace

    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: team-a}}]\n")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert current_namespace() == "team-a"
    config.write_text(config.read_text().replace(", namespace: team-a", ""))
    assert current_namespace() == "default"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert current_namespace() == "default"
