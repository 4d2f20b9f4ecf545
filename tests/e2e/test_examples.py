"""docs/examples/ applied as a user applies them, on the stack's node, with only addresses substituted (Vault's and
STS's, as pods reach them) and the consumers' image (below):

- AWS: the user, its key and MFA device and the role, from the JSON policies (on the STS emulator);
- Vault: ``token-reviewer.yaml``, then ``vault-setup.sh`` run against the stack's OpenBao with its inputs in the
  environment, as its header says;
- the operator: ``helm install`` of the chart with its defaults (2 replicas, leader election, the projected token of
  audience ``vault``) and only what an install must name: the image, ``vault.address``, and the STS emulator as the
  STS destination (plain HTTP: ``allowInsecureHttp``). Its pods log in to Vault with the role vault-setup.sh made;
- the MFAIdentity, the namespace, the AssumedRoleCredential and the three consuming Deployments. Each Deployment's
  pod calls GetCallerIdentity with the credentials it reads (environment, credentials file, credential_process) and
  prints the assumed-role ARN and the access key id it used: the test reads both from the pods' logs;
- a rotation (``vault-sts-operator rotate``) restarts the opted-in envFrom Deployment: a new pod of a new
  ReplicaSet prints the new access key id, the old pod is gone; the two file consumers are not restarted.

The consumers' image: the examples run ``amazon/aws-cli``, which the node cannot pull (no registry is reachable
from the stack). Their container runs the operator image instead (Python and boto3, whose botocore reads the same
AWS_* variables, credentials file and ``credential_process`` config as the CLI), with the CLI loop
(``aws sts get-caller-identity`` every 300 s) as a few lines of boto3 that also print the access key id.
Everything else (envFrom, volumes and items, env, the ConfigMap, the restart opt-in) is applied as written; the
STS endpoint reaches the pods as ``AWS_ENDPOINT_URL_STS``.

MFA enrolment itself (`vault-sts-operator mfa enroll`) is run in tests/e2e/test_ctl.py.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from devstack import operator_run
from devstack.manifests import GROUP, VAULT_CA_KEY, VAULT_CA_SECRET, VERSION
from devstack.seed import new_totp_seed
from devstack.sts_emulator.admin import EmulatorAdminError
from devstack.vault_config import reviewer_token
from devstack.workloads import CHART, RESTART_OPT_IN, Node, describe_pods, helm, pod_log, wait_release_ready
from tests.e2e.helpers import MFAID, kubectl, wait_for
from tests.node.helpers import RESTARTED_AT, issued_in_log

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
VAULT_EXAMPLE, STS_EXAMPLE = "https://vault.corp:8200", "https://sts.us-east-1.amazonaws.com"
AWS_CLI_IMAGE = "amazon/aws-cli:2.22.0"
RELEASE = NAMESPACE = "vault-sts-operator"  # install.md's release and namespace: vault-setup.sh's defaults
CONSUMERS = ("deployment-envfrom.yaml", "deployment-credentials-file.yaml", "deployment-credential-process.yaml")
CLI = str(Path(sys.executable).with_name("vault-sts-operator"))

# `aws sts get-caller-identity` every 300 s, in boto3: a new session per call, as each `aws` run is, printing the
# ARN and the access key id it used (the public half only). The region as the CLI finds it: AWS_REGION, else the
# config (botocore itself reads AWS_DEFAULT_REGION only). SIGTERM ends it at once (PID 1 ignores it otherwise).
CALLER_PY = """\
import json, os, signal, sys, time
import boto3
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    try:
        session = boto3.session.Session(region_name=os.environ.get("AWS_REGION"))  # as the CLI reads it
        arn = session.client("sts").get_caller_identity()["Arn"]
        key = session.get_credentials().get_frozen_credentials().access_key
        print(json.dumps({"t": round(time.time(), 3), "Arn": arn, "AccessKeyId": key}), flush=True)
    except Exception as exc:
        print(json.dumps({"t": round(time.time(), 3), "error": type(exc).__name__, "message": str(exc)}), flush=True)
    time.sleep(300)
"""


def example(name: str, node: Node) -> str:
    """The file as written, with the example addresses replaced by the stack's, as pods reach them."""
    text = (EXAMPLES / name).read_text()
    return text.replace(VAULT_EXAMPLE, node.vault_addr).replace(STS_EXAMPLE, node.sts_endpoint)


def runnable(doc: dict[str, Any], node: Node) -> dict[str, Any]:
    """An example consumer Deployment with the node's image in place of the AWS CLI's (module docstring)."""
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == AWS_CLI_IMAGE, container["image"]
    assert container["command"][-1] == "while true; do aws sts get-caller-identity; sleep 300; done"
    container.update(image=node.image, imagePullPolicy="Never", command=["python", "-c", CALLER_PY])
    container.setdefault("env", []).append({"name": "AWS_ENDPOINT_URL_STS", "value": node.sts_endpoint})
    return doc


def live_pods(kube: Any, namespace: str, app: str) -> list[Any]:
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def printed(kube: Any, namespace: str, pod: str) -> list[dict[str, Any]]:
    """What a consumer pod printed (``kubectl logs``): its JSON lines."""
    lines = []
    for raw in pod_log(kube.core, namespace, pod).splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(raw))
    return lines


def first_call(kube: Any, namespace: str, pod: str) -> dict[str, Any]:
    try:
        return dict(wait_for(f"pod {pod} printing GetCallerIdentity's answer",
                             lambda: next((x for x in printed(kube, namespace, pod) if "Arn" in x or "error" in x),
                                          None), timeout=120, interval=0.5))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_pods(kube.core, namespace)}") from None


@pytest.fixture
def node(stack) -> Node:
    return Node.from_stack(stack)


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    """Undo steps registered as they are done, last first, whatever failed in between."""
    with contextlib.ExitStack() as steps:
        yield steps


@pytest.fixture
def no_host_operators(cleanup: contextlib.ExitStack) -> None:
    """The host-process operators of this session share the chart's Lease (vault-sts-operator/vault-sts-operator)
    and watch every namespace: stopped while the chart's pods run, started again afterwards."""
    stopped = list(operator_run._LIVE)
    for proc in stopped:
        proc.stop()
    for proc in stopped:
        cleanup.callback(proc.start)


def install_chart(stack, kube, node: Node, cleanup: contextlib.ExitStack) -> list[Any]:
    """``helm install`` as docs/install.md, with the chart's defaults but what an install names. A release the
    end-to-end suites installed (no pods, for the host operator's ServiceAccount) is rolled back to afterwards."""
    listed = json.loads(helm(stack, "list", "-n", NAMESPACE, "-o", "json", "--filter", f"^{RELEASE}$").stdout)
    before = int(listed[0]["revision"]) if listed else 0
    if before:
        cleanup.callback(helm, stack, "rollback", RELEASE, str(before), "-n", NAMESPACE, "--wait", timeout=240)
    else:
        cleanup.callback(helm, stack, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False, timeout=240)
    values = [f"image.repository={node.repository}", f"image.tag={node.tag}",
              f"vault.address={node.vault_addr}",
              # the STS emulator stands for AWS: the one STS endpoint allowed, over plain HTTP
              f"allowedDestinations.stsEndpoints[0]={node.sts_endpoint}", "allowInsecureHttp=true",
              # the suites share the CRDs applied with kubectl (tests/chart covers the chart's own)
              "crds.enabled=false"]
    helm(stack, "upgrade", "--install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
         "--reset-values", *[arg for value in values for arg in ("--set", value)])
    return wait_release_ready(kube.core, NAMESPACE, RELEASE, replicas=2)


def setup_aws(emulator_admin, identity: dict[str, Any], credential: dict[str, Any]) -> tuple[dict[str, str], str]:
    """The IAM user, its key and MFA device, and the role as the JSON policies say; returns the key and seed."""
    trust = json.loads((EXAMPLES / "role-trust-policy.json").read_text())["Statement"][0]
    user_policy = json.loads((EXAMPLES / "iam-user-policy.json").read_text())["Statement"][0]
    user_arn = trust["Principal"]["AWS"]
    account, user = user_arn.split(":")[4], user_arn.rsplit("/", 1)[1]
    try:
        emulator_admin.create_user(user, account=account)
    except EmulatorAdminError as exc:  # a stack reused from an earlier run already has the user
        assert exc.status == 409, exc
    key = emulator_admin.create_access_key(user)
    seed = new_totp_seed()
    emulator_admin.create_mfa_device(user, serial=identity["spec"]["mfa"]["serialNumber"], seed=seed)
    role_arn = credential["spec"]["roleArn"]
    assert user_policy["Action"] == "sts:AssumeRole" and fnmatch.fnmatch(role_arn, user_policy["Resource"])
    assert fnmatch.fnmatch(role_arn, identity["spec"]["allowedRoleArns"][0])
    emulator_admin.create_role(role_arn, [user_arn], require_mfa=trust["Condition"]["Bool"][
        "aws:MultiFactorAuthPresent"] == "true")
    return key, seed


def setup_vault(stack, vault, identity: dict[str, Any], key: dict[str, str], seed: str,
                cleanup: contextlib.ExitStack) -> None:
    """token-reviewer.yaml and vault-setup.sh, as a Vault outside the cluster is set up. Afterwards the stack's own
    kubernetes auth configuration (its reviewer) comes back and the identity's Vault objects go."""
    name = identity["metadata"]["name"]
    kubectl(stack, "apply", "-f", str(EXAMPLES / "token-reviewer.yaml"))
    cleanup.callback(kubectl, stack, "delete", "-f", str(EXAMPLES / "token-reviewer.yaml"), "--ignore-not-found")
    wait_for("the reviewer token", lambda: kubectl(stack, "get", "secret", "vault-token-reviewer", "-n", NAMESPACE,
                                                     "-o", "jsonpath={.data.token}").stdout)

    def restore() -> None:
        admin, api = stack.vault(), stack.api_client()
        try:
            admin.auth.kubernetes.configure(kubernetes_host=stack.kube_api,
                                            kubernetes_ca_cert=stack.kube_ca.read_text(),
                                            token_reviewer_jwt=reviewer_token(api))
            admin.delete(f"auth/kubernetes/role/vault-sts-operator-{name}")
            admin.sys.delete_policy(f"vault-sts-operator-{name}")
            admin.secrets.kv.v2.delete_metadata_and_all_versions(path=f"aws/{name}", mount_point="secret")
            admin.delete(f"totp/keys/{identity['spec']['mfa']['totp']['key']}")
        finally:
            api.close()
            admin.adapter.close()

    cleanup.callback(restore)
    vault.delete(f"totp/keys/{identity['spec']['mfa']['totp']['key']}")  # a rerun imports a new seed
    user = identity["spec"]["mfa"]["serialNumber"].rsplit("/", 1)[1]
    label = quote(f"AWS:{user}", safe=":")
    env = {**os.environ, **stack.subprocess_env(),
           "VAULT_BIN": str(Path(sys.executable).with_name("bao")), "KUBE_HOST": stack.kube_api,
           "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
           "TOTP_OTPAUTH_URL": f"otpauth://totp/{label}?secret={seed}&issuer=AWS"}
    setup = subprocess.run(["bash", str(EXAMPLES / "vault-setup.sh")], capture_output=True, text=True, env=env,
                           timeout=120, check=False)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert key["SecretAccessKey"] not in setup.stdout + setup.stderr and seed not in setup.stdout + setup.stderr


def remove_team(kube, namespace: str, credential: str, identity: str) -> None:
    """The credential first (the running operator removes its finalizer), then the namespace and the identity."""
    with contextlib.suppress(ApiException):
        kube.delete_credential(namespace, credential)
    try:
        wait_for(f"{namespace}/{credential} deleted", lambda: not any(
            a["metadata"]["name"] == credential for a in kube.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "assumedrolecredentials")["items"]), timeout=30)
    except AssertionError:  # the operator failed: nothing else would remove the finalizer
        with contextlib.suppress(ApiException):
            kube.patch_credential(namespace, credential, {"metadata": {"finalizers": None}})
    with contextlib.suppress(ApiException):
        kube.core.delete_namespace(namespace)
    with contextlib.suppress(ApiException):
        kube.custom.delete_cluster_custom_object(GROUP, VERSION, MFAID, identity)

    def gone() -> bool:
        try:
            kube.core.read_namespace(namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(f"namespace {namespace} gone", gone, timeout=90, interval=1)


def test_examples_run_as_written(stack, kube, crds, node, emulator_admin, vault, issued, cleanup, no_host_operators):
    started = time.monotonic()
    figures: dict[str, Any] = {}
    identity = yaml.safe_load(example("mfaidentity.yaml", node))
    credential = yaml.safe_load(example("assumedrolecredential.yaml", node))
    namespace, name = credential["metadata"]["namespace"], credential["metadata"]["name"]
    secret_name = credential["spec"]["target"]["secretName"]

    # 1-3. AWS, then Vault as a Vault outside the cluster is set up (token reviewer, CA, host).
    kube.namespace(NAMESPACE)
    key, seed = setup_aws(emulator_admin, identity, credential)
    setup_vault(stack, vault, identity, key, seed, cleanup)

    # 4. The operator, with the chart's defaults.
    t0 = time.monotonic()
    operators = install_chart(stack, kube, node, cleanup)
    figures["helm_install_to_2_ready_pods_s"] = round(time.monotonic() - t0, 1)
    role = vault.read(f"auth/kubernetes/role/{identity['spec']['vault']['auth']['kubernetes']['role']}")["data"]
    for pod in operators:  # the pods present the projected token of audience `vault`, the audience the role requires
        spec = pod.spec
        token = next(v for v in spec.volumes if v.name == "vault-token").projected.sources[0].service_account_token
        assert token.audience == "vault" == role["audience"], (token.audience, role["audience"])
        assert "--vault-sa-token-file=/var/run/secrets/vault-sts-operator/vault-token" in spec.containers[0].args
        assert spec.service_account_name in role["bound_service_account_names"]
        assert pod.metadata.namespace in role["bound_service_account_namespaces"]
    # The MFAIdentity names the Vault CA Secret in the operator's namespace (mfaidentity.yaml's comment).
    ca_ref = identity["spec"]["vault"]["caSecretRef"]
    assert (ca_ref["name"], ca_ref["key"]) == (VAULT_CA_SECRET, VAULT_CA_KEY) and stack.vault_ca is not None
    kubectl(stack, "apply", "-f", "-", stdin=kubectl(
        stack, "create", "secret", "generic", VAULT_CA_SECRET, "-n", NAMESPACE,
        f"--from-file={VAULT_CA_KEY}={stack.vault_ca}", "--dry-run=client", "-o", "yaml").stdout)

    # 5-6. The platform admin's and the app team's resources.
    cleanup.callback(remove_team, kube, namespace, name, identity["metadata"]["name"])
    t0 = time.monotonic()
    kubectl(stack, "apply", "-f", "-", stdin=example("mfaidentity.yaml", node))
    kubectl(stack, "apply", "-f", str(EXAMPLES / "namespace.yaml"))
    kubectl(stack, "apply", "-f", "-", stdin=example("assumedrolecredential.yaml", node))
    try:
        status = kube.wait_ready(namespace, name, timeout=120)["status"]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kube.credential(namespace, name).get('status')}\n"
                             f"{describe_pods(kube.core, NAMESPACE)}") from None
    figures["apply_to_credential_ready_s"] = round(time.monotonic() - t0, 1)
    issued.add_secret(kube.secret(namespace, secret_name))
    logs = {p.metadata.name: pod_log(kube.core, NAMESPACE, p.metadata.name) for p in operators}
    assert sum(issued_in_log(text, namespace, name) for text in logs.values()) == 1, logs  # a pod issued it
    role_name = credential["spec"]["roleArn"].rpartition("/")[2]
    assert status["assumedRoleArn"].startswith(f"arn:aws:sts::123456789012:assumed-role/{role_name}/")

    # 7. The consumers: each pod's own GetCallerIdentity answer, with the credentials it read.
    t0 = time.monotonic()
    apps = []
    for file in CONSUMERS:
        docs = [d for d in yaml.safe_load_all((EXAMPLES / file).read_text()) if d]
        docs = [runnable(d, node) if d["kind"] == "Deployment" else d for d in docs]
        kubectl(stack, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
        apps += [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"]
    first: dict[str, tuple[Any, dict[str, Any]]] = {}
    for app in apps:
        pod = wait_for(f"a pod of {app}", lambda a=app: (p := live_pods(kube, namespace, a)) and p[0], timeout=60)
        first[app] = (pod, first_call(kube, namespace, pod.metadata.name))
        assert first[app][1].get("Arn") == status["assumedRoleArn"], (app, first[app][1])
        assert first[app][1]["AccessKeyId"] == status["accessKeyId"], app
    figures["apply_to_all_consumers_printing_arn_s"] = round(time.monotonic() - t0, 1)

    # A rotation: the opted-in envFrom Deployment gets a new pod with the new key; the file consumers keep theirs.
    envfrom = "billing-envfrom"
    assert {"kind": "Deployment", "name": envfrom} in credential["spec"]["rolloutRestartTargets"]
    deployment = kube.apps.read_namespaced_deployment(envfrom, namespace)
    assert deployment.metadata.annotations[RESTART_OPT_IN] == name
    old_pod = first[envfrom][0]
    t0 = time.monotonic()
    rotated = subprocess.run([CLI, "rotate", name, "-n", namespace, "--timeout", "150"], capture_output=True,
                             text=True, env={**os.environ, **stack.subprocess_env()}, timeout=180, check=False)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    figures["rotate_request_to_new_key_s"] = round(time.monotonic() - t0, 1)  # the chart's 60 s min interval
    new_key = kube.credential(namespace, name)["status"]["accessKeyId"]
    assert new_key != status["accessKeyId"]
    issued.add_secret(kube.secret(namespace, secret_name))

    def restarted() -> Any:
        pods = live_pods(kube, namespace, envfrom)
        return len(pods) == 1 and pods[0].metadata.uid != old_pod.metadata.uid and pods[0]

    new_pod = wait_for(f"a new pod of {envfrom}", restarted, timeout=90, interval=0.5)
    line = first_call(kube, namespace, new_pod.metadata.name)
    figures["rotated_to_new_envfrom_pod_printing_new_key_s"] = round(time.monotonic() - t0, 1)
    assert line.get("AccessKeyId") == new_key and line["Arn"].startswith(
        f"arn:aws:sts::123456789012:assumed-role/{role_name}/"), line
    assert new_pod.metadata.labels["pod-template-hash"] != old_pod.metadata.labels["pod-template-hash"]
    template = kube.apps.read_namespaced_deployment(envfrom, namespace).spec.template.metadata.annotations or {}
    assert RESTARTED_AT in template, template
    wait_for(f"the old pod {old_pod.metadata.name} gone", lambda: not any(
        p.metadata.uid == old_pod.metadata.uid for p in kube.core.list_namespaced_pod(namespace).items), timeout=60)
    for app in apps:
        if app == envfrom:
            continue
        pods = live_pods(kube, namespace, app)
        assert [p.metadata.uid for p in pods] == [first[app][0].metadata.uid], app  # not restarted
        assert not [x for x in printed(kube, namespace, pods[0].metadata.name) if "error" in x], app

    # No secret value in the operator's or the consumers' logs.
    data = kube.secret(namespace, secret_name)["data"]
    values = {data["AWS_SECRET_ACCESS_KEY"], data["AWS_SESSION_TOKEN"], key["SecretAccessKey"]}
    texts = {p.metadata.name: pod_log(kube.core, NAMESPACE, p.metadata.name) for p in operators}
    texts.update({p.metadata.name: pod_log(kube.core, namespace, p.metadata.name)
                  for p in kube.core.list_namespaced_pod(namespace).items})
    assert not [pod for pod, text in texts.items() for value in values if value in text]
    figures["test_body_s"] = round(time.monotonic() - started, 1)
    print(f"\nexamples figures: {json.dumps(figures)}")
