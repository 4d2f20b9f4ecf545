"""The `vault-sts-operator` verbs for people, run as a user would (the console script, an admin
kubeconfig) against the operator on the real stack: status, rotate, check-identity, mfa enroll."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA
from devstack.seed import RoleSpec, seed_identity

pytestmark = pytest.mark.usefixtures("operator")
CLI = str(Path(sys.executable).with_name("vault-sts-operator"))


def ctl(stack, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    # The local stack's STS emulator speaks http: the verbs need the same development setting as the operator.
    full = {**os.environ, **stack.subprocess_env(), "VSO_ALLOW_INSECURE_HTTP": "1", **(env or {})}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full, timeout=timeout, check=False)


@pytest.fixture
def team(stack, kube, unique, issued):
    namespace = kube.namespace(f"ctl-{unique}")
    seeded = seed_identity(stack, f"ctl-{unique}", roles=[RoleSpec(f"app-ctl-{unique}")])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[namespace]))
    kube.create_credential(assumed_role_credential(namespace, "app", seeded.name, seeded.role_arns[0]))
    kube.wait_ready(namespace, "app")
    issued.add_secret(kube.secret(namespace, "app"))
    return namespace, seeded


def secret_values(kube, namespace: str, name: str) -> list[str]:
    data = kube.secret(namespace, name)["data"]  # decoded by the helper
    return [v for k, v in data.items() if k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]


def test_status_shows_conditions_expiry_secret_and_events_without_secrets(stack, kube, team):
    namespace, seeded = team
    kube.wait_event(namespace, "app", "Issued", lambda e: e.reason == "Issued")  # posted after the status
    result = ctl(stack, "status", "app", "-n", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"AssumedRoleCredential {namespace}/app" in out
    assert "Ready:        True (Issued)" in out and seeded.role_arns[0] in out
    assert re.search(r"Expiration: +\S+ \(in \d+m\d\ds\)", out), out
    assert re.search(r"Renewal: +\S+ \(in \d+m\d\ds\)", out), out
    assert "AWS_ACCESS_KEY_ID, AWS_CREDENTIAL_EXPIRATION, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN" in out
    assert "Normal  Issued" in out
    for value in secret_values(kube, namespace, "app"):
        assert value not in out
    as_json = ctl(stack, "status", "app", "-n", namespace, "-o", "json")
    assert as_json.returncode == 0 and '"accessKeyId"' in as_json.stdout


def test_status_exit_codes(stack, kube, team, unique):
    namespace, seeded = team
    missing = ctl(stack, "status", "nope", "-n", namespace)
    assert missing.returncode == 3 and "AssumedRoleCredential" in missing.stderr and "not found" in missing.stderr
    kube.create_credential(assumed_role_credential(namespace, "refused", seeded.name,
                                                   "arn:aws:iam::123456789012:role/elsewhere"))
    kube.wait_reason(namespace, "refused", "NotAllowed")
    refused = ctl(stack, "status", "refused", "-n", namespace)
    assert refused.returncode == 1 and "Ready:        False (NotAllowed)" in refused.stdout
    unreachable = ctl(stack, "status", "app", "-n", namespace, env={"KUBECONFIG": "/nonexistent"})
    assert unreachable.returncode == 4, unreachable.stderr
    usage = ctl(stack, "status", "-o", "yaml")
    assert usage.returncode == 2


@pytest.fixture(scope="module")
def pipx_bin(tmp_path_factory) -> Path:
    """The CLI as users install it (docs/install.md): a wheel built from this checkout, installed with pipx
    (itself from PyPI, in a venv of its own) into a PIPX_HOME and PIPX_BIN_DIR of the test's."""
    root = Path(__file__).resolve().parents[2]
    tmp = tmp_path_factory.mktemp("pipx")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(root), "-w", str(tmp / "wheel")],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "wheel").glob("vault_sts_operator-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "pipx-venv")], check=True, timeout=120)
    subprocess.run([str(tmp / "pipx-venv" / "bin" / "pip"), "install", "--quiet", "pipx"], check=True,
                   capture_output=True, timeout=300)
    env = {**os.environ, "PIPX_HOME": str(tmp / "home"), "PIPX_BIN_DIR": str(tmp / "bin")}
    installed = subprocess.run([str(tmp / "pipx-venv" / "bin" / "pipx"), "install", str(wheel)], env=env,
                               capture_output=True, text=True, timeout=600, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "kubectl-vaultsts" in installed.stdout
    return tmp / "bin"


def test_kubectl_plugin_from_a_pipx_install_lists_credentials(stack, kube, team, pipx_bin, tmp_path):
    namespace, seeded = team
    kubectl = stack.subprocess_env().get("VSO_KUBECTL") or "kubectl"
    path = os.pathsep.join([str(pipx_bin), str(Path(kubectl).parent), "/usr/bin", "/bin"])
    env = {**stack.subprocess_env(), "VSO_ALLOW_INSECURE_HTTP": "1", "PATH": path}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([kubectl, *args], capture_output=True, text=True, env={**env, **extra}, timeout=120,
                              check=False)

    plugins = run("plugin", "list")
    assert f"{pipx_bin}/kubectl-vaultsts" in plugins.stdout, plugins.stdout + plugins.stderr
    listed = run("vaultsts", "status", "-n", namespace)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "IDENTITY", "READY", "REASON"]
    assert [row.split()[:4] for row in rows] == [["app", seeded.name, "True", "Issued"]]
    for value in secret_values(kube, namespace, "app"):
        assert value not in listed.stdout
    one = run("vaultsts", "status", "app", "-n", namespace)
    assert one.returncode == 0 and f"AssumedRoleCredential {namespace}/app" in one.stdout, one.stdout + one.stderr
    # Without -n: the kubeconfig context's namespace, as kubectl.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(Path(env["KUBECONFIG"]).read_text())
    assert run("config", "set-context", "--current", f"--namespace={namespace}",
               KUBECONFIG=str(kubeconfig)).returncode == 0
    defaulted = run("vaultsts", "status", KUBECONFIG=str(kubeconfig))
    assert defaulted.returncode == 0, defaulted.stdout + defaulted.stderr
    assert [row.split()[:4] for row in defaulted.stdout.splitlines()[1:]] == [["app", seeded.name, "True", "Issued"]]
    # The existing command names still work, from the same install; `run` is not a plugin verb.
    old = subprocess.run([str(pipx_bin / "vault-sts-operator"), "status", "-n", namespace], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert [row.split()[:4] for row in old.stdout.splitlines()[1:]] == [["app", seeded.name, "True", "Issued"]]
    assert run("vaultsts", "run").returncode == 2
    assert run("vaultsts", "status", "nope", "-n", namespace).returncode == 3


def test_rotate_waits_for_new_credentials(stack, kube, team, issued):
    namespace, _ = team
    before = kube.credential(namespace, "app")["status"]["accessKeyId"]
    result = ctl(stack, "rotate", "app", "-n", namespace, "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    after = kube.credential(namespace, "app")["status"]["accessKeyId"]
    assert after != before and f"{before} -> {after}" in result.stdout
    issued.add_secret(kube.secret(namespace, "app"))


def test_rotate_of_a_refused_credential_fails_within_the_timeout(stack, kube, team):
    namespace, seeded = team
    kube.create_credential(assumed_role_credential(namespace, "stuck", seeded.name,
                                                   "arn:aws:iam::123456789012:role/elsewhere"))
    kube.wait_reason(namespace, "stuck", "NotAllowed")
    started = time.monotonic()
    result = ctl(stack, "rotate", "stuck", "-n", namespace, "--timeout", "4")
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    assert ctl(stack, "rotate", "ghost", "-n", namespace).returncode == 3


def test_check_identity_spends_nothing(stack, kube, team, emulator_admin):
    _, seeded = team
    before = emulator_admin.counters()
    result = ctl(stack, "check-identity", seeded.name, "--service-account", f"{OPERATOR_NAMESPACE}/{OPERATOR_SA}",
                 "--allowed-sts-endpoint", stack.sts_endpoint)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("Vault login", "long-term key readable", "AWS knows the key", "TOTP code readable",
                 "MFA serial in the key's account"):
        assert f"ok    {step}" in out, (step, out)
    assert seeded.user_arn in out and "nothing was spent" in out
    after = emulator_admin.counters()
    assert after["codes_accepted"] == before["codes_accepted"]
    assert after["codes_refused"] == before["codes_refused"]
    assert after["calls"].get("GetSessionToken", 0) == before["calls"].get("GetSessionToken", 0)
    assert after["calls"].get("AssumeRole", 0) == before["calls"].get("AssumeRole", 0)
    assert seeded.read_secret_access_key(stack) not in out + result.stderr


def test_check_identity_reports_what_is_wrong(stack, kube, team, unique):
    _, seeded = team
    broken = mfa_identity(stack, seeded, name=f"broken-{unique}", allowed_namespaces=[])
    broken["spec"]["mfa"]["totp"]["key"] = "no-such-key"
    kube.apply_identity(broken)
    result = ctl(stack, "check-identity", f"broken-{unique}", "--service-account",
                 f"{OPERATOR_NAMESPACE}/{OPERATOR_SA}", "--allowed-sts-endpoint", stack.sts_endpoint)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ok    Vault login" in result.stdout and "FAIL  TOTP code readable" in result.stdout
    assert ctl(stack, "check-identity", f"ghost-{unique}").returncode == 3


def test_check_identity_sends_nothing_to_an_unlisted_destination(stack, kube, team, unique):
    """check-identity applies the operator's allow-list: an identity naming another Vault is refused before the
    operator's ServiceAccount token is requested or sent anywhere."""
    _, seeded = team
    elsewhere = mfa_identity(stack, seeded, name=f"elsewhere-{unique}", allowed_namespaces=[])
    elsewhere["spec"]["vault"] = {"address": "https://vault.evil.example:8200",
                                  "auth": {"kubernetes": {"role": "vault-sts-operator"}}}
    kube.apply_identity(elsewhere)
    result = ctl(stack, "check-identity", f"elsewhere-{unique}", "--service-account",
                 f"{OPERATOR_NAMESPACE}/{OPERATOR_SA}", "--allowed-sts-endpoint", stack.sts_endpoint)
    assert result.returncode != 0, result.stdout
    assert "spec.vault.address is not a destination the platform allows" in result.stdout + result.stderr
    assert "Vault login" not in result.stdout


def test_mfa_enroll_on_the_emulator_keeps_the_seed_in_vault(stack, emulator_admin, unique, vault):
    user = f"enrol-{unique}"
    account = emulator_admin.create_user(user)["account"]
    emulator_admin.create_user(f"admin-{unique}")
    admin_key = emulator_admin.create_access_key(f"admin-{unique}")
    env = {"AWS_ACCESS_KEY_ID": admin_key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": admin_key["SecretAccessKey"],
           "AWS_ENDPOINT_URL_IAM": stack.sts_endpoint, "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    result = ctl(stack, "mfa", "enroll", "--user", user, env=env, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    serial = f"arn:aws:iam::{account}:mfa/{user}"
    assert f"enabled {serial} for user {user}" in result.stdout
    assert not re.search(r"[A-Z2-7]{16,}", result.stdout + result.stderr)  # no seed shown
    # The seed is in Vault's TOTP engine (which never returns it): a code read from Vault for the next
    # period is accepted by STS for the enrolled device.
    user_key = emulator_admin.create_access_key(user)
    import boto3

    sts = boto3.client("sts", endpoint_url=stack.sts_endpoint, region_name="us-east-1",
                       aws_access_key_id=user_key["AccessKeyId"], aws_secret_access_key=user_key["SecretAccessKey"])
    key = vault.read(f"totp/keys/{user}")["data"]
    assert "key" not in key and "url" not in key
    spent = int(time.time() // 30)  # the enrolment's second code was of this step at the latest
    while int(time.time() // 30) <= spent:
        time.sleep(0.5)
    code = vault.read(f"totp/code/{user}")["data"]["code"]
    assert sts.get_session_token(SerialNumber=serial, TokenCode=code)["Credentials"]["AccessKeyId"]
    sts.close()
    # A second enrolment of the same key is refused before anything is created in AWS.
    again = ctl(stack, "mfa", "enroll", "--user", user, env=env)
    assert again.returncode == 1 and "already has totp/keys" in again.stderr
