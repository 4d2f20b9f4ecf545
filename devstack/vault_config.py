"""Configure the stack's Vault (OpenBao or HashiCorp Vault): KV v2, TOTP, kubernetes auth against the local
apiserver, AppRole, and the AWS engine (OpenBao: Vault's engine as a plugin; HashiCorp Vault: built in).

Every step is idempotent, so ``up`` on a running stack can re-apply it.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

from devstack.layout import AWS_PLUGIN_NAME
from devstack.procs import StackError

REVIEWER_NAMESPACE = "kube-system"
REVIEWER_NAME = "vault-auth"
AWS_MOUNT = "aws"
AWS_REGION = "us-east-1"


def install_plugin(binary: Path, plugin_dir: Path) -> str:
    """Copy the plugin into the dev plugin dir (OpenBao refuses symlinks leaving it); return its sha256."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    target = plugin_dir / AWS_PLUGIN_NAME
    if (
        not target.is_file()
        or target.stat().st_size != binary.stat().st_size
        or (target.stat().st_mtime < binary.stat().st_mtime)
    ):
        shutil.copy2(binary, target)
        target.chmod(0o755)
    return hashlib.sha256(target.read_bytes()).hexdigest()


def _mounts(vault: Any) -> dict[str, Any]:
    return dict(vault.sys.list_mounted_secrets_engines()["data"])


def configure(
    vault: Any,
    *,
    kube_api: Any,
    kube_host: str,
    ca_pem: str,
    sts_endpoint: str,
    plugin_sha256: str | None,
    builtin_aws: bool = False,
    vault_ca_pem: str = "",
) -> str:
    """Apply the whole configuration; returns the AWS mount path ("" when OpenBao has no AWS plugin).

    ``builtin_aws``: HashiCorp Vault, whose ``aws`` engine is built in (no plugin, no catalog entry)."""
    mounts = _mounts(vault)
    if "secret/" not in mounts:
        vault.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    if "totp/" not in mounts:
        vault.sys.enable_secrets_engine("totp", path="totp")
    _configure_kubernetes_auth(vault, kube_api, kube_host, ca_pem)
    if vault_ca_pem:
        publish_vault_ca(kube_api, vault_ca_pem)
    if "approle/" not in vault.sys.list_auth_methods()["data"]:
        vault.sys.enable_auth_method("approle", path="approle")
    if builtin_aws:
        _configure_aws(vault, mounts, None, sts_endpoint)
        return AWS_MOUNT
    if plugin_sha256 is None:
        return ""
    _configure_aws(vault, mounts, plugin_sha256, sts_endpoint)
    return AWS_MOUNT


def _configure_kubernetes_auth(vault: Any, kube_api: Any, kube_host: str, ca_pem: str) -> None:
    if "kubernetes/" not in vault.sys.list_auth_methods()["data"]:
        vault.sys.enable_auth_method("kubernetes", path="kubernetes")
    jwt = reviewer_token(kube_api)
    vault.auth.kubernetes.configure(kubernetes_host=kube_host, kubernetes_ca_cert=ca_pem, token_reviewer_jwt=jwt)


def publish_vault_ca(api: Any, pem: str) -> None:
    """The CA of the Vault's TLS certificate as Secret vault-sts-operator/vault-ca (key ca.crt), for
    MFAIdentities that name it in ``spec.vault.caSecretRef`` (secret references resolve in the operator's
    namespace)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from devstack.manifests import VAULT_CA_KEY, VAULT_CA_SECRET
    from devstack.operator_run import OPERATOR_NAMESPACE

    core = client.CoreV1Api(api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE)))
    except ApiException as exc:
        if exc.status != 409:
            raise
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=VAULT_CA_SECRET), string_data={VAULT_CA_KEY: pem})
    try:
        core.create_namespaced_secret(OPERATOR_NAMESPACE, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(VAULT_CA_SECRET, OPERATOR_NAMESPACE, body)


def reviewer_token(api: Any, timeout: float = 60) -> str:
    """The token of ServiceAccount kube-system/vault-auth (bound to system:auth-delegator), from a
    long-lived token Secret."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)

    def create(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except ApiException as exc:
            if exc.status != 409:
                raise

    meta = client.V1ObjectMeta
    create(
        core.create_namespaced_service_account,
        REVIEWER_NAMESPACE,
        client.V1ServiceAccount(metadata=meta(name=REVIEWER_NAME)),
    )
    create(
        rbac.create_cluster_role_binding,
        client.V1ClusterRoleBinding(
            metadata=meta(name="vault-auth-tokenreview"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="system:auth-delegator"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=REVIEWER_NAME, namespace=REVIEWER_NAMESPACE)],
        ),
    )
    secret_name = f"{REVIEWER_NAME}-token"
    create(
        core.create_namespaced_secret,
        REVIEWER_NAMESPACE,
        client.V1Secret(
            metadata=meta(name=secret_name, annotations={"kubernetes.io/service-account.name": REVIEWER_NAME}),
            type="kubernetes.io/service-account-token",
        ),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        secret = core.read_namespaced_secret(secret_name, REVIEWER_NAMESPACE)
        if secret.data and secret.data.get("token"):
            import base64

            return base64.b64decode(secret.data["token"]).decode()
        time.sleep(0.2)
    raise StackError(
        f"kube-controller-manager: Secret {REVIEWER_NAMESPACE}/{secret_name} got no token after"
        f" {timeout:.0f}s (the serviceaccount-token controller is not running?)"
    )


def _configure_aws(vault: Any, mounts: dict[str, Any], sha256: str | None, sts_endpoint: str) -> None:
    """``sha256`` None: the builtin ``aws`` engine (HashiCorp Vault); else the plugin, registered first."""
    engine = "aws"
    if sha256 is not None:
        vault.write_data(
            f"sys/plugins/catalog/secret/{AWS_PLUGIN_NAME}", data={"sha256": sha256, "command": AWS_PLUGIN_NAME}
        )
        engine = AWS_PLUGIN_NAME
    if f"{AWS_MOUNT}/" not in mounts:
        vault.sys.enable_secrets_engine(engine, path=AWS_MOUNT)
    # The emulator serves IAM and STS on one endpoint. Keys are set per identity by devstack.seed.
    vault.write_data(
        f"{AWS_MOUNT}/config/root",
        data={"region": AWS_REGION, "sts_endpoint": sts_endpoint, "iam_endpoint": sts_endpoint},
    )
