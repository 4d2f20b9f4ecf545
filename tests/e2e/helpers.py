"""Helpers for tests on the real stack: kubectl, waiting, and a thin admin client."""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.env import StackEnv
from devstack.manifests import GROUP, VERSION


# A second Vault address the e2e operator is told it may use (--allowed-vault-address), as a platform with two
# Vaults lists both: tests/e2e/test_operator_privilege.py puts a trap there, to show what an identity naming an
# allowed address can and cannot make the operator send. Picked once per session; the trap binds it.
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TRAP_VAULT_PORT = _free_port()
TRAP_VAULT_ADDRESS = f"http://127.0.0.1:{TRAP_VAULT_PORT}"

ARC = "assumedrolecredentials"
MFAID = "mfaidentities"


def kubectl(stack: StackEnv, *args: str, stdin: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=check,
                          env=stack.subprocess_env(), timeout=60)


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Kube:
    """Thin helpers over the admin client, for readable tests."""

    def __init__(self, stack: StackEnv) -> None:
        self.stack = stack
        self.api = stack.api_client()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.apps = client.AppsV1Api(self.api)

    def namespace(self, name: str) -> str:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        return name

    def apply_identity(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        try:
            self.custom.create_cluster_custom_object(GROUP, VERSION, MFAID, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = self.custom.get_cluster_custom_object(GROUP, VERSION, MFAID, name)
            manifest = {**manifest, "metadata": {**manifest["metadata"],
                                                 "resourceVersion": current["metadata"]["resourceVersion"]}}
            self.custom.replace_cluster_custom_object(GROUP, VERSION, MFAID, name, manifest)

    def create_credential(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ns = manifest["metadata"]["namespace"]
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, ARC, manifest))

    def credential(self, ns: str, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, ARC, name))

    def patch_credential(self, ns: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, ARC, name, patch)

    def delete_credential(self, ns: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, ARC, name)

    def ready(self, ns: str, name: str) -> dict[str, str] | None:
        status = self.credential(ns, name).get("status") or {}
        for cond in status.get("conditions") or ():
            if cond.get("type") == "Ready":
                return dict(cond)
        return None

    def wait_ready(self, ns: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
        wait_for(f"{ns}/{name} Ready=True", lambda: (self.ready(ns, name) or {}).get("status") == "True", timeout)
        return self.credential(ns, name)

    def condition(self, ns: str, name: str, type_: str) -> dict[str, str] | None:
        status = self.credential(ns, name).get("status") or {}
        return next((dict(c) for c in status.get("conditions") or () if c.get("type") == type_), None)

    def wait_reason(self, ns: str, name: str, reason: str, timeout: float = 60.0,
                    ready: bool | None = None) -> dict[str, str]:
        """The failure reported: RotationFailing=True with `reason` (its message is the error's, with the attempt
        count and the next attempt). `ready`: also wait for Ready to say so (False: no valid Secret is left,
        True: the Secret still holds valid credentials for the spec)."""
        def reported() -> dict[str, str] | None:
            failing = self.condition(ns, name, "RotationFailing")
            if not failing or failing.get("status") != "True" or failing.get("reason") != reason:
                return None
            if ready is not None and (self.ready(ns, name) or {}).get("status") != str(ready):
                return None
            return failing
        return dict(wait_for(f"{ns}/{name} RotationFailing=True reason {reason}"
                             + (f" and Ready={ready}" if ready is not None else ""), reported, timeout))

    def secret(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            raw = self.core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {"metadata": raw.metadata,
                "data": {k: base64.b64decode(v).decode() for k, v in (raw.data or {}).items()}}

    def events(self, ns: str, name: str) -> list[Any]:
        return list(self.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items)

    def wait_event(self, ns: str, name: str, what: str, match: Callable[[Any], bool], timeout: float = 15.0) -> Any:
        """The first Event about `name` that `match`es. The operator posts an Event after the status write it
        reports (services/reconciler.py), so a test that has just seen the status must wait for the Event."""
        return wait_for(f"an Event on {ns}/{name}: {what}",
                        lambda: next((e for e in self.events(ns, name) if match(e)), None), timeout)


def vault_layout_in_tenant_view(kube: Kube) -> list[str]:
    """Vault addresses, paths and keys (from every MFAIdentity) found in AssumedRoleCredential statuses or the
    Events about them: what the operator tells a tenant must name none of them (the admin's MFAIdentity status and
    Events may)."""
    import json
    from urllib.parse import urlsplit

    needles = {"/data/", "totp/code", "/creds/", "/sts/"}
    for identity in kube.custom.list_cluster_custom_object(GROUP, VERSION, MFAID)["items"]:
        spec = identity.get("spec") or {}
        address = str((spec.get("vault") or {}).get("address") or "")
        if address:
            needles |= {address.rstrip("/"), urlsplit(address).netloc}
        kv = (spec.get("accessKey") or {}).get("kv") or {}
        if kv.get("path"):
            needles |= {f"{kv.get('mount') or 'secret'}/data/{kv['path']}", str(kv["path"])}
        totp = (spec.get("mfa") or {}).get("totp") or {}
        if totp.get("key"):
            needles.add(f"{totp.get('mount') or 'totp'}/code/{totp['key']}")
    statuses = json.dumps([c.get("status") for c in kube.custom.list_cluster_custom_object(
        GROUP, VERSION, ARC)["items"]])
    # The operator's Events about credentials (what it tells tenants). Others in a tenant's namespace are not the
    # operator's words: a kubelet's "read udp 127.0.0.1:42173->127.0.0.1:53" once matched a trap Vault's port.
    events = "\n".join(f"{e.reason} {e.message}" for e in kube.core.list_event_for_all_namespaces().items
                       if e.involved_object is not None and e.involved_object.kind == "AssumedRoleCredential")
    return [f"{needle!r} in {where}" for where, text in (("statuses", statuses), ("events", events))
            for needle in sorted(needles) if needle and needle in text]
