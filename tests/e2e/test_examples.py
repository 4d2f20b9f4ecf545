"""docs/examples/ applied as written on the local stack, with only addresses substituted (Vault's and
STS's): the AWS side from the JSON policies (on the STS emulator), Vault from vault-setup.sh (run
with OpenBao's CLI), the MFAIdentity and AssumedRoleCredential, and the three consuming Deployments.

The Deployments are created on the real API server; their pods run only once the stack has a node
(issue 9): here the test checks what the pods would mount and read is there.
MFA enrolment itself (`vault-sts-operator mfa enroll`) is run in tests/e2e/test_ctl.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from devstack.seed import new_totp_seed
from devstack.sts_emulator.admin import EmulatorAdminError
from tests.e2e.helpers import kubectl, wait_for

pytestmark = pytest.mark.usefixtures("operator")
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
VAULT_EXAMPLE, STS_EXAMPLE = "https://vault.corp:8200", "https://sts.us-east-1.amazonaws.com"


def example(name: str, stack) -> str:
    """The file as written, with the example addresses replaced by the stack's."""
    text = (EXAMPLES / name).read_text()
    return text.replace(VAULT_EXAMPLE, stack.vault_addr).replace(STS_EXAMPLE, stack.sts_endpoint)


def test_examples_run_as_written(stack, kube, emulator_admin, vault, issued):
    identity = yaml.safe_load(example("mfaidentity.yaml", stack))
    credential = yaml.safe_load(example("assumedrolecredential.yaml", stack))
    trust = json.loads((EXAMPLES / "role-trust-policy.json").read_text())["Statement"][0]
    user_policy = json.loads((EXAMPLES / "iam-user-policy.json").read_text())["Statement"][0]

    # AWS: the user, its key and MFA device, and the role as the trust policy says.
    user_arn = trust["Principal"]["AWS"]
    account, user = user_arn.split(":")[4], user_arn.rsplit("/", 1)[1]
    try:
        emulator_admin.create_user(user, account=account)
    except EmulatorAdminError as exc:  # a stack reused from an earlier run already has the user
        assert exc.status == 409, exc
    key = emulator_admin.create_access_key(user)
    seed = new_totp_seed()
    serial = identity["spec"]["mfa"]["serialNumber"]
    emulator_admin.create_mfa_device(user, serial=serial, seed=seed)
    role_arn = credential["spec"]["roleArn"]
    assert user_policy["Action"] == "sts:AssumeRole" and fnmatch.fnmatch(role_arn, user_policy["Resource"])
    assert fnmatch.fnmatch(role_arn, identity["spec"]["allowedRoleArns"][0])
    emulator_admin.create_role(role_arn, [user_arn], require_mfa=trust["Condition"]["Bool"][
        "aws:MultiFactorAuthPresent"] == "true")

    # Vault, as a Vault outside the cluster is set up (token reviewer, CA, host).
    kubectl(stack, "apply", "-f", str(EXAMPLES / "token-reviewer.yaml"))
    wait_for("the reviewer token", lambda: kubectl(stack, "get", "secret", "vault-token-reviewer", "-n",
                                                     "vault-sts-operator", "-o", "jsonpath={.data.token}").stdout)
    vault.delete(f"totp/keys/{identity['spec']['mfa']['totp']['key']}")  # a rerun imports a new seed
    label = quote(f"AWS:{user}", safe=":")
    env = {**os.environ, **stack.subprocess_env(),
           "VAULT_BIN": str(Path(sys.executable).with_name("bao")), "KUBE_HOST": stack.kube_api,
           "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
           "TOTP_OTPAUTH_URL": f"otpauth://totp/{label}?secret={seed}&issuer=AWS"}
    setup = subprocess.run(["bash", str(EXAMPLES / "vault-setup.sh")], capture_output=True, text=True, env=env,
                           timeout=120, check=False)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert key["SecretAccessKey"] not in setup.stdout + setup.stderr and seed not in setup.stdout + setup.stderr

    # The platform admin's and the app team's resources, then the consumers.
    kubectl(stack, "apply", "-f", str(EXAMPLES / "namespace.yaml"))
    kubectl(stack, "apply", "-f", "-", stdin=example("mfaidentity.yaml", stack))
    kubectl(stack, "apply", "-f", "-", stdin=example("assumedrolecredential.yaml", stack))
    namespace, name = credential["metadata"]["namespace"], credential["metadata"]["name"]
    kube.wait_ready(namespace, name, timeout=90)
    secret_name = credential["spec"]["target"]["secretName"]
    secret = kube.secret(namespace, secret_name)
    issued.add_secret(secret)
    for deployment in ("deployment-envfrom.yaml", "deployment-credentials-file.yaml",
                       "deployment-credential-process.yaml"):
        kubectl(stack, "apply", "-f", str(EXAMPLES / deployment))
        for doc in yaml.safe_load_all((EXAMPLES / deployment).read_text()):
            if doc["kind"] != "Deployment":
                continue
            live = json.loads(kubectl(stack, "get", "deployment", doc["metadata"]["name"], "-n", namespace,
                                      "-o", "json").stdout)
            pod = live["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            if "aws" in volumes:  # the mounted Secret keys exist
                source = volumes["aws"]["secret"]
                assert source["secretName"] == secret_name
                assert {item["key"] for item in source["items"]} <= set(secret["data"])
            else:
                assert pod["containers"][0]["envFrom"][0]["secretRef"]["name"] == secret_name
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "credentials",
            "credential_process.json"} <= set(secret["data"])
    # The rollout restart target of the example exists now: a rotation restarts it.
    kubectl(stack, "get", "deployment", credential["spec"]["rolloutRestartTargets"][0]["name"], "-n", namespace)
