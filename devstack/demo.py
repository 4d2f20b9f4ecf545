"""`make demo`: the operator's main job on the local stack, narrated.

Brings up the stack, installs the CRDs, runs the operator, applies a sample
MFAIdentity and AssumedRoleCredential, and shows the Secret appear and rotate once.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def main() -> int:
    import boto3
    from kubernetes import client

    from devstack import stack as devstack
    from devstack.manifests import GROUP, VERSION, assumed_role_credential, mfa_identity
    from devstack.operator_run import OperatorProcess
    from devstack.seed import RoleSpec, seed_identity

    say("bringing up the local stack (etcd, kube-apiserver, kube-controller-manager, OpenBao, STS emulator)")
    env = devstack.up(devstack.Stack.default())
    say(f"stack up: KUBECONFIG={env.kubeconfig}  VAULT_ADDR={env.vault_addr}  STS={env.sts_endpoint}")
    subprocess.run(["kubectl", "apply", "-f", str(ROOT / "crds")], check=True, env=env.subprocess_env())
    subprocess.run(["kubectl", "wait", "--for=condition=Established", "--timeout=60s",
                    "crd/assumedrolecredentials.vaultsts.io", "crd/mfaidentities.vaultsts.io"],
                   check=True, env=env.subprocess_env(), stdout=subprocess.DEVNULL)
    say("CRDs installed")

    suffix = time.strftime("%H%M%S")
    name = f"demo-{suffix}"
    seeded = seed_identity(env, name, roles=[RoleSpec(f"app-billing-{suffix}")])
    say(f"seeded IAM user {seeded.user_arn} with MFA device {seeded.mfa_serial}:")
    say(f"  long-term key in Vault KV {seeded.kv_mount}/{seeded.kv_path}; TOTP seed in Vault's totp/keys/{name} "
        "(Vault hands out codes, never the seed)")
    say(f"  role {seeded.role_arns[0]} trusts the user only with MFA")

    operator = OperatorProcess(env, name="operator-demo")
    operator.start()
    say(f"operator running (log: {operator.log_file}, metrics :{operator.metrics_port})")

    api = env.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = "team-a"
    try:
        core.create_namespace({"metadata": {"name": ns}})
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    identity = mfa_identity(env, seeded, allowed_namespaces=[ns])
    custom.create_cluster_custom_object(GROUP, VERSION, "mfaidentities", identity)
    arc = assumed_role_credential(ns, f"billing-{suffix}", name, seeded.role_arns[0], durationSeconds=900,
                                  renewBefore="14m35s", target={"secretName": f"billing-aws-{suffix}"})
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "assumedrolecredentials", arc)
    say(f"applied MFAIdentity/{name} and AssumedRoleCredential {ns}/billing-{suffix} "
        "(durationSeconds 900, renewBefore 14m35s: rotates about 25 s after issue)")

    def secret() -> dict[str, str] | None:
        try:
            raw = core.read_namespaced_secret(f"billing-aws-{suffix}", ns)
        except client.exceptions.ApiException:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (raw.data or {}).items()}

    def wait(what: str, check: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.5)
        say(f"FAILED waiting for {what}; operator log tail:\n{operator.tail()}")
        raise SystemExit(1)

    try:
        first = wait("the Secret", secret, 60)
        say(f"Secret {ns}/billing-aws-{suffix} appeared: AWS_ACCESS_KEY_ID={first['AWS_ACCESS_KEY_ID']}, "
            f"expires {first['AWS_CREDENTIAL_EXPIRATION']} (secret half and session token not shown)")
        sts = boto3.client("sts", endpoint_url=env.sts_endpoint, region_name="us-east-1",
                           aws_access_key_id=first["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=first["AWS_SECRET_ACCESS_KEY"],
                           aws_session_token=first["AWS_SESSION_TOKEN"])
        say(f"GetCallerIdentity with the Secret's credentials: {sts.get_caller_identity()['Arn']}")
        status = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "assumedrolecredentials", f"billing-{suffix}")
        st = status["status"]
        say(f"status: Ready={st['conditions'][0]['status']} renewalTime={st['renewalTime']}")
        say("waiting for the rotation ...")
        first_key = first["AWS_ACCESS_KEY_ID"]
        rotated = wait("the rotation", lambda: (s := secret()) and s["AWS_ACCESS_KEY_ID"] != first_key and s, 90)
        say(f"rotated: AWS_ACCESS_KEY_ID={rotated['AWS_ACCESS_KEY_ID']}, expires "
            f"{rotated['AWS_CREDENTIAL_EXPIRATION']}")
        say("`kubectl get arc -A` now shows:")
        subprocess.run(["kubectl", "get", "arc", "-n", ns], check=False, env=env.subprocess_env())
    finally:
        operator.stop()
        api.close()
    say("demo done. The stack keeps running: `source .stack/env` to explore, `make stack-down` to stop it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
