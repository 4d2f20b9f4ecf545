"""`make demo`: the operator as its users run it, on the local stack, narrated.

Brings up the stack (with its node), builds the operator image from the Dockerfile and loads it into the
node, installs the chart with ``helm``, sets up Vault's kubernetes auth for the operator's ServiceAccount,
applies a sample MFAIdentity and AssumedRoleCredential and a pod that uses the credential through
``credential_process``: the pod prints its assumed-role ARN, the Secret rotates, and the pod picks up the
new credentials without a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RELEASE = NAMESPACE = "vault-sts-operator"
ARC = "assumedrolecredentials"


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def main() -> int:
    from kubernetes import client

    from devstack import stack as devstack
    from devstack.env import StackEnv
    from devstack.manifests import GROUP, VERSION, assumed_role_credential, mfa_identity
    from devstack.seed import RoleSpec, seed_identity
    from devstack.workloads import (
        CHART,
        Node,
        consumer_config_map,
        consumer_lines,
        consumer_pod,
        helm,
        operator_pods,
        release_values,
        wait_release_ready,
    )

    say("bringing up the local stack (etcd, kube-apiserver, controller-manager, a node, OpenBao, STS emulator)")
    handle = devstack.Stack.default()
    devstack.up(handle)
    say("building the operator image from the Dockerfile (podman, no Docker daemon) and loading it into the node")
    subprocess.run([sys.executable, "-m", "devstack.image"], check=True, stdout=subprocess.DEVNULL)
    env = StackEnv.load(handle.layout.env_file)
    node = Node.from_stack(env)
    say(f"stack up: KUBECONFIG={env.kubeconfig}; pods reach Vault at {node.vault_addr}, STS at {node.sts_endpoint}")
    say(f"image: {node.image}")
    subprocess.run(["kubectl", "apply", "-f", str(ROOT / "crds")], check=True, env=env.subprocess_env(),
                   stdout=subprocess.DEVNULL)

    suffix = time.strftime("%H%M%S")
    name = f"demo-{suffix}"
    seeded = seed_identity(env, name, roles=[RoleSpec(f"app-billing-{suffix}")],
                           bound_namespaces=(NAMESPACE,), bound_service_accounts=(RELEASE,))
    say(f"seeded IAM user {seeded.user_arn} with MFA device {seeded.mfa_serial}:")
    say(f"  long-term key in Vault KV {seeded.kv_mount}/{seeded.kv_path}; TOTP seed in Vault's totp/keys/{name} "
        "(Vault hands out codes, never the seed)")
    say(f"  Vault role {seeded.auth_role}: kubernetes auth for ServiceAccount {NAMESPACE}/{RELEASE}, policy "
        f"{seeded.policy} (reads the code and the key, nothing else)")

    api = env.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    started = time.monotonic()
    helm(env, "upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
         *release_values(node, lease=RELEASE))
    pods = wait_release_ready(core, NAMESPACE, RELEASE)
    say(f"helm install: {len(pods)} operator pods Ready in {time.monotonic() - started:.1f}s "
        f"({', '.join(p.metadata.name for p in pods)}; Lease {NAMESPACE}/{RELEASE} elects the one that acts)")

    ns = "team-a"
    try:
        core.create_namespace({"metadata": {"name": ns}})
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    identity = mfa_identity(env, seeded, allowed_namespaces=[ns])
    identity["spec"]["vault"]["address"] = node.vault_addr
    identity["spec"]["sts"]["endpoint"] = node.sts_endpoint
    custom.create_cluster_custom_object(GROUP, VERSION, "mfaidentities", identity)
    secret = f"billing-aws-{suffix}"
    try:
        core.create_namespaced_config_map(ns, consumer_config_map(ns))
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    applied = time.time()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, ARC, assumed_role_credential(
        ns, f"billing-{suffix}", name, seeded.role_arns[0], durationSeconds=900, target={"secretName": secret}))
    pod = f"billing-app-{suffix}"
    core.create_namespaced_pod(ns, consumer_pod(node, ns, pod, secret, "process", interval=5))
    say(f"applied MFAIdentity/{name}, AssumedRoleCredential {ns}/billing-{suffix} (900 s) and pod {ns}/{pod}, "
        f"which mounts Secret {secret} and runs boto3 with AWS_CONFIG_FILE: "
        "credential_process = cat /aws/credential_process.json")

    def wait(what: str, check: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.5)
        say(f"FAILED waiting for {what}")
        for p in operator_pods(core, NAMESPACE, RELEASE):
            say(f"log of {p.metadata.name}:\n{core.read_namespaced_pod_log(p.metadata.name, NAMESPACE)[-3000:]}")
        raise SystemExit(1)

    def keyed(key: str | None = None) -> dict[str, Any] | None:
        lines = [x for x in consumer_lines(core, ns, pod) if "arn" in x and (key is None or x["key"] == key)]
        return lines[0] if lines else None

    first = wait("the pod's first GetCallerIdentity", keyed, 180)
    say(f"pod {pod} (kubectl logs): {json.dumps(first)}  [{first['t'] - applied:.1f}s after apply]")
    def status() -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, ns, ARC, f"billing-{suffix}")
        return dict(body.get("status") or {})

    current = status()
    say(f"status: Ready, accessKeyId={current['accessKeyId']}, expiration={current['expiration']}, "
        f"renewalTime={current['renewalTime']} (secret half and session token never shown)")
    old_key = current["accessKeyId"]
    say(f"rotating now, as `kubectl annotate arc -n {ns} billing-{suffix} vaultsts.io/rotate=demo` does "
        "(it would rotate by itself 5 minutes before expiry) ...")
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, ARC, f"billing-{suffix}",
                                          {"metadata": {"annotations": {"vaultsts.io/rotate": "demo"}}})
    rotated = wait("the rotation", lambda: (k := status().get("accessKeyId")) != old_key and k, 60)
    rotated_at = time.time()
    say(f"rotated: the Secret now holds {rotated}; the kubelet rewrites the mounted Secret on its next sync "
        "of the pod (about a minute with its defaults), and the SDK re-runs credential_process ...")
    line = wait("the pod using the rotated key", lambda: keyed(rotated), 180)
    restarts = core.read_namespaced_pod(pod, ns).status.container_statuses[0].restart_count
    say(f"pod {pod}: {json.dumps(line)}  [{line['t'] - rotated_at:.1f}s after the rotation, {restarts} restarts]")
    subprocess.run(["kubectl", "get", "arc", "-n", ns], check=False, env=env.subprocess_env())
    api.close()
    say("demo done. Everything keeps running: `source .stack/env`, then `kubectl logs -n team-a "
        f"{pod}` or `kubectl get pods -A`; `make stack-down` stops it all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
