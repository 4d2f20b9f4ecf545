"""Helpers for the fault suite: a Secret guard, emulator call sampling, metrics, Vault re-seeding, the report."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.env import StackEnv
from devstack.kubeconfig import VAULT_AUDIENCE
from devstack.manifests import GROUP, VERSION
from devstack.seed import SeededIdentity, policy_hcl

SECRET_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CREDENTIAL_EXPIRATION",
               "credentials", "credential_process.json"}
MANAGED = "app.kubernetes.io/managed-by=vault-sts-operator"
CREDENTIAL_LABEL = f"{GROUP}/credential"
REPORT_NAME = "fault-report.json"
REPORTS_WRITTEN: list[Path] = []  # filled by the last test, printed by pytest_terminal_summary


# --------------------------------------------------------------------------- metrics and logs


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total


def retry_delays(log: str, namespace: str, name: str) -> list[tuple[str, float]]:
    """(reason, delay) of each "not issued" line the operator logged for one credential."""
    pattern = re.compile(rf"{re.escape(namespace)}/{re.escape(name)} not issued \((\w+)\):.*next attempt in (\d+)s")
    return [(m.group(1), float(m.group(2))) for m in pattern.finditer(log)]


def issued_lines(log: str, namespace: str, secret: str) -> int:
    return len(re.findall(rf"{re.escape(namespace)}/\S+: issued \S+ for \S+ into Secret {re.escape(secret)} ", log))


# --------------------------------------------------------------------------- the Secret guard


@dataclass
class SecretGuard:
    """Polls every operator-managed Secret twice a second, across every fault: a Secret is never blanked,
    never half-written, never deleted while its credential exists, and always holds a credential the STS
    emulator issued and that has not expired."""

    stack: StackEnv
    interval: float = 0.5
    observations: int = 0
    blanked: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    poll_errors: int = 0
    key_ids: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _seen: dict[tuple[str, str], str] = field(default_factory=dict)
    _checked: dict[str, bool] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="secret-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        api = self.stack.api_client()
        api.configuration.retries = 0
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        admin = self.stack.emulator()
        try:
            while not self._stop.wait(self.interval):
                try:
                    self._poll(core, custom, admin)
                except Exception:  # the apiserver is down in some tests: that is not the Secrets' fault
                    self.poll_errors += 1
        finally:
            api.close()

    def _poll(self, core: Any, custom: Any, admin: Any) -> None:
        items = core.list_secret_for_all_namespaces(label_selector=MANAGED, _request_timeout=5).items
        now = {(s.metadata.namespace, s.metadata.name): s for s in items}
        self.observations += 1
        for key, secret in now.items():
            where = f"{key[0]}/{key[1]}"
            data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
            missing = SECRET_KEYS - {k for k, v in data.items() if v}
            if missing:
                self.blanked.append(f"{where}: missing or empty {sorted(missing)}")
                continue
            akid = data["AWS_ACCESS_KEY_ID"]
            process = json.loads(data["credential_process.json"])
            if process.get("AccessKeyId") != akid or akid not in data["credentials"] \
                    or process.get("SessionToken") != data["AWS_SESSION_TOKEN"]:
                self.blanked.append(f"{where}: half-written (formats disagree)")
            self._seen[key] = str((secret.metadata.owner_references or [None])[0].name
                                  if secret.metadata.owner_references else "")
            self.key_ids.setdefault(key, set()).add(akid)
            if akid not in self._checked:
                facts = admin.credential(akid)
                self._checked[akid] = not facts["expired"]
                if facts["expired"]:
                    self.invalid.append(f"{where}: {akid[:8]}... already expired when first seen")
        for key in [k for k in self._seen if k not in now]:
            owner = self._seen.pop(key)
            try:
                cr = custom.get_namespaced_custom_object(GROUP, VERSION, key[0], "assumedrolecredentials", owner,
                                                         _request_timeout=5)
            except ApiException as exc:
                if exc.status == 404:
                    continue  # its credential is gone: garbage collection, not a blanked Secret
                raise
            if not cr["metadata"].get("deletionTimestamp"):
                self.blanked.append(f"{key[0]}/{key[1]}: deleted while AssumedRoleCredential {owner} exists")


# --------------------------------------------------------------------------- emulator call sampling


class CallSampler:
    """Samples the emulator's call counters four times a second while a fault holds.

    With ``targets`` (role ARNs, MFA serials) only the calls naming one of them count: the fault suite shares
    the emulator with other identities' background passes, whose calls must not land in a test's figures.
    """

    def __init__(self, stack: StackEnv, interval: float = 0.25, *, targets: Iterable[str] = ()) -> None:
        self.admin = stack.emulator()
        self.interval = interval
        self.targets = tuple(targets)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="call-sampler", daemon=True)

    def _sample(self) -> None:
        counters = self.admin.counters()
        if not self.targets:
            calls = dict(counters["calls"])
        else:
            calls = {}
            for key, n in counters["calls_by_target"].items():
                action, _, target = key.partition(" ")
                if target in self.targets:
                    calls[action] = calls.get(action, 0) + n
        self.samples.append((time.monotonic(), calls))

    def __enter__(self) -> CallSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def total(self, action: str) -> int:
        return self.samples[-1][1].get(action, 0) - self.samples[0][1].get(action, 0)

    def max_in_window(self, action: str, seconds: float) -> int:
        """The most calls of ``action`` seen within any ``seconds``-long window (a burst detector)."""
        best = 0
        for i, (t0, c0) in enumerate(self.samples):
            for t1, c1 in self.samples[i + 1:]:
                if t1 - t0 > seconds:
                    break
                best = max(best, c1.get(action, 0) - c0.get(action, 0))
        return best

    @property
    def seconds(self) -> float:
        return self.samples[-1][0] - self.samples[0][0]


# --------------------------------------------------------------------------- Vault


def restore_vault_side(stack: StackEnv, seeded: SeededIdentity, seed: str, secret_access_key: str) -> None:
    """What ``seed_identity`` wrote into Vault, written again (OpenBao dev keeps state in memory only)."""
    vault = stack.vault()
    try:
        vault.secrets.kv.v2.create_or_update_secret(
            path=seeded.kv_path, mount_point=seeded.kv_mount,
            secret={"access_key_id": seeded.access_key_id, "secret_access_key": secret_access_key})
        label = quote(f"AWS:{seeded.name}", safe=":")
        vault.write_data(f"{seeded.totp_mount}/keys/{seeded.totp_key}", data={
            "url": f"otpauth://totp/{label}?secret={seed}&issuer=AWS&period={seeded.totp_period}"})
        vault.sys.create_or_update_policy(name=seeded.policy, policy=policy_hcl(
            seeded.name, kv_mount=seeded.kv_mount, kv_path=seeded.kv_path, totp_mount=seeded.totp_mount,
            aws_mount=seeded.aws_mount))
        vault.auth.kubernetes.create_role(
            name=seeded.auth_role, bound_service_account_names=list(seeded.bound_service_accounts),
            bound_service_account_namespaces=list(seeded.bound_namespaces), policies=[seeded.policy], ttl="1h",
            audience=VAULT_AUDIENCE, mount_point=seeded.auth_mount)
    finally:
        vault.adapter.close()


def operator_token_accessors(stack: StackEnv, policy: str) -> list[str]:
    """Accessors of the live Vault tokens carrying ``policy`` (the operator's logins), seen with the root token."""
    vault = stack.vault()
    try:
        found = []
        for accessor in vault.list("auth/token/accessors")["data"]["keys"]:
            info = vault.write_data("auth/token/lookup-accessor", data={"accessor": accessor})["data"]
            if policy in (info.get("policies") or []):
                found.append(accessor)
        return found
    finally:
        vault.adapter.close()


# --------------------------------------------------------------------------- the report


@dataclass
class FaultReport:
    faults: list[dict[str, Any]] = field(default_factory=list)
    serials: set[str] = field(default_factory=set)
    findings: list[str] = field(default_factory=list)

    def fault(self, test: str, kind: str, seconds: float, **figures: Any) -> None:
        self.faults.append({"test": test, "kind": kind, "seconds": round(seconds, 1), **figures})

    def summary(self, guard: SecretGuard, counters: dict[str, Any]) -> dict[str, Any]:
        reused = {s: n for s, n in counters.get("codes_reused_by_serial", {}).items() if s in self.serials}
        refused = {s: n for s, n in counters.get("codes_refused_by_serial", {}).items() if s in self.serials}
        accepted = {s: n for s, n in counters.get("codes_accepted_by_serial", {}).items() if s in self.serials}
        return {
            "faults_injected": len(self.faults),
            "secrets_blanked": len(guard.blanked),
            "secrets_blanked_detail": guard.blanked,
            "secrets_with_invalid_credentials": guard.invalid,
            "secret_observations": guard.observations,
            "totp_codes_reused": sum(reused.values()),
            "totp_codes_refused": sum(refused.values()),
            "totp_codes_accepted": sum(accepted.values()),
            "faults": self.faults,
            "findings": self.findings,
        }
