"""Convergence benchmark: N AssumedRoleCredentials on one identity, applied at once, until all are Ready.

Runs against the real local stack (kube-apiserver, OpenBao, STS emulator; started if it is not up),
with the operator as a local process using the Helm chart's ServiceAccount and RBAC (like the
end-to-end tests). Phases, each in its own namespace, deleted before the next one:

1. ``ours``: N CRs in session mode (one MFA session for the identity), applied concurrently;
   apply-to-Ready per CR, time until all are Ready, TOTP codes, STS / Vault / Kubernetes API calls,
   operator RSS and CPU.
2. ``idle``: with the N CRs in place and nothing due, the operator's CPU and RSS over a window.
3. ``warm``: one more batch of CRs once the MFA session exists; their apply-to-Ready.
4. ``baseline``: M CRs with ``mfa: direct`` (a fresh TOTP code per credential) on a second identity
   whose TOTP period is shortened on both the Vault key and the emulator device.

Human progress goes to stderr; with ``--json`` the last stdout line is one JSON object.

    python -m benchmarks.converge --crs 1000 --baseline-crs 20 --totp-period 2 --json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from devstack.env import StackEnv  # noqa: E402
from devstack.manifests import GROUP, VERSION, assumed_role_credential, mfa_identity  # noqa: E402
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA, OperatorProcess  # noqa: E402
from devstack.seed import RoleSpec, SeededIdentity, seed_identity  # noqa: E402

ARC = "assumedrolecredentials"
MFAID = "mfaidentities"
RELEASE = "vault-sts-operator"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[converge {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- stack and operator


def ensure_stack() -> tuple[StackEnv, bool]:
    """The running stack, or a freshly started one; True when this run started it."""
    from devstack import stack as devstack

    handle = devstack.Stack.default()
    if devstack.is_healthy(handle) and handle.layout.env_file.is_file():
        log("reusing the running stack")
        return StackEnv.load(handle.layout.env_file), False
    log("starting the local stack (python -m devstack up)")
    return devstack.up(handle), True


def run_tool(stack: StackEnv, *argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, env=stack.subprocess_env(), timeout=180,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()}")
    return done.stdout


def install_crds_and_chart(stack: StackEnv) -> None:
    run_tool(stack, "kubectl", "apply", "-f", str(ROOT / "crds"))
    run_tool(stack, "kubectl", "wait", "--for=condition=Established", "--timeout=60s",
             f"crd/{ARC}.{GROUP}", f"crd/{MFAID}.{GROUP}")
    helm = stack.extra.get("VSO_HELM")
    if not helm:
        raise RuntimeError("helm is not built (bash devstack/build.sh)")
    # Only its RBAC and ServiceAccount matter: there is no kubelet, its pods never run.
    run_tool(stack, helm, "upgrade", "--install", RELEASE, str(ROOT / "charts" / "vault-sts-operator"),
             "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--set", f"vault.address={stack.vault_addr}",
             "--set", "crds.enabled=false")


class ProcSampler:
    """Samples /proc/<pid> of the operator: peak RSS (VmHWM and sampled VmRSS) and CPU seconds."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def _status(self) -> dict[str, int]:
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
        return values

    def retarget(self, pid: int) -> None:
        """Follow a restarted operator (the peak so far is kept)."""
        self.peak_mb()
        self.pid = pid

    def rss_mb(self) -> float:
        return self._status().get("VmRSS", 0) / 1024

    def hwm_mb(self) -> float:
        return self._status().get("VmHWM", 0) / 1024

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)  # utime + stime (fields 14 and 15 of /proc/<pid>/stat)

    def peak_mb(self) -> float:
        with contextlib.suppress(OSError):
            status = self._status()
            self.peak_rss_kb = max(self.peak_rss_kb, status.get("VmRSS", 0), status.get("VmHWM", 0))
        return self.peak_rss_kb / 1024

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):  # between a stop and a start when the operator restarts
                self.peak_rss_kb = max(self.peak_rss_kb, self._status().get("VmRSS", 0))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(operator_pid: int) -> dict[str, float]:
    """CPU seconds of every stack process, the operator and this benchmark (where the cores went)."""
    from devstack import procs
    from devstack.layout import Layout

    out = {running.name: proc_cpu_s(running.pid) for running in procs.recorded(Layout.default())}
    out["operator"] = proc_cpu_s(operator_pid)
    out["benchmark"] = proc_cpu_s(os.getpid())
    return out


def prometheus_by_label(text: str, metric: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    pattern = re.compile(rf'^{re.escape(metric)}\{{(.*)\}} (\S+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            key = labels.get(label, "")
            out[key] = out.get(key, 0.0) + float(match.group(2))
    return out


# --------------------------------------------------------------------------- the cluster side


@dataclass
class Counts:
    """Counters read before and after a phase: the emulator's, the operator's and the apiserver's."""

    sts_calls: dict[str, int]
    codes_by_serial: dict[str, int]
    codes_refused: int
    vault_calls: dict[str, float]
    failures: dict[str, float]
    api_requests: dict[str, float]

    def minus(self, before: Counts) -> dict[str, Any]:
        def sub(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}

        return {
            "sts_calls": sub(self.sts_calls, before.sts_calls),
            "codes_by_serial": sub(self.codes_by_serial, before.codes_by_serial),
            "codes_refused": self.codes_refused - before.codes_refused,
            "vault_calls": sub(self.vault_calls, before.vault_calls),
            "failures": sub(self.failures, before.failures),
            "api_requests": sub(self.api_requests, before.api_requests),
        }


FLOW_SCHEMA = "vso-bench-operator"


def install_flow_schema(stack: StackEnv) -> None:
    """A FlowSchema that matches only the operator's ServiceAccount: the apiserver then counts the
    operator's own requests (apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}),
    apart from the benchmark's creates, lists and watches (apiserver_request_total has no user label)."""
    import yaml

    manifest = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA},
        "spec": {
            "matchingPrecedence": 500,
            "priorityLevelConfiguration": {"name": "workload-high"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "ServiceAccount",
                              "serviceAccount": {"name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True,
                                   "namespaces": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    }
    path = stack.stack_dir / "bench-flowschema.yaml"
    path.write_text(yaml.safe_dump(manifest))
    run_tool(stack, "kubectl", "apply", "-f", str(path))


def stack_cpu_s() -> dict[str, float]:
    from devstack import procs
    from devstack.layout import Layout

    out = {running.name: proc_cpu_s(running.pid) for running in procs.recorded(Layout.default())}
    out["benchmark"] = proc_cpu_s(os.getpid())
    return out


def create_only(stack: StackEnv, count: int, threads: int, run_id: str) -> tuple[float, dict[str, float]]:
    """Seconds to create `count` CRs with no operator running (what the apiserver alone takes), and the
    CPU seconds each stack process spent meanwhile."""
    from kubernetes import client

    namespace = f"bench-{run_id}-createonly"
    api = stack.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace, "labels": {"vaultsts.io/benchmark": "converge"}}})
    local = threading.local()

    def create(name: str) -> None:
        if not hasattr(local, "custom"):
            local.api = stack.api_client()
            local.custom = client.CustomObjectsApi(local.api)
        manifest = assumed_role_credential(namespace, name, "create-only", "arn:aws:iam::000000000000:role/none",
                                           target={"secretName": f"{name}-aws"})
        local.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, ARC, manifest,
                                                     _preload_content=False)

    cpu_before = stack_cpu_s()
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="create-only") as pool:
        list(pool.map(create, [f"cred-{i:05d}" for i in range(count)]))
    took = time.time() - started
    cpu_after = stack_cpu_s()
    log(f"create-only: {count} CRs in {took:.1f}s with no operator running")
    core.delete_namespace(namespace)
    deadline = time.monotonic() + 600
    from kubernetes.client.exceptions import ApiException

    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                break
            raise
        time.sleep(1.0)
    api.close()
    return took, {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in sorted(cpu_after)}


class Cluster:
    def __init__(self, stack: StackEnv, operator: OperatorProcess) -> None:
        from kubernetes import client

        self.stack = stack
        self.operator = operator
        self.api = stack.api_client()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.emulator = stack.emulator()

    def close(self) -> None:
        self.api.close()

    def apiserver_requests(self) -> dict[str, float]:
        """apiserver_request_total by "verb resource[/subresource]" for the operator's resources;
        "operator" (the FlowSchema's count) holds every request made by the operator's ServiceAccount."""
        response = self.api.rest_client.request("GET", f"{self.api.configuration.host}/metrics")
        text = response.read().decode()
        out: dict[str, float] = {}
        flow = re.compile(r'^apiserver_flowcontrol_dispatched_requests_total\{(.*)\} (\S+)$')
        for line in text.splitlines():
            match = flow.match(line)
            if match and f'flow_schema="{FLOW_SCHEMA}"' in match.group(1):
                out["operator"] = out.get("operator", 0.0) + float(match.group(2))
        pattern = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")
        for line in text.splitlines():
            match = pattern.match(line)
            if not match:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            resource = labels.get("resource", "")
            if resource not in (ARC, MFAID, "secrets", "events", "leases"):
                continue
            sub = labels.get("subresource", "")
            key = f"{labels.get('verb', '')} {resource}{'/' + sub if sub else ''}"
            out[key] = out.get(key, 0.0) + float(match.group(2))
        return out

    def counts(self) -> Counts:
        emu = self.emulator.counters()
        metrics = self.operator.metrics_text()
        return Counts(
            sts_calls=dict(emu["calls"]),
            codes_by_serial=dict(emu["codes_accepted_by_serial"]),
            codes_refused=int(emu["codes_refused"]),
            vault_calls=prometheus_by_label(metrics, "vault_sts_operator_vault_requests_total", "operation"),
            failures=prometheus_by_label(metrics, "vault_sts_operator_failures_total", "reason"),
            api_requests=self.apiserver_requests(),
        )

    def scheduled(self) -> float | None:
        """The operator's count of credentials on its scheduler (None: an operator without the gauge)."""
        try:
            text = self.operator.metrics_text()
        except Exception:
            return None
        for line in text.splitlines():
            if line.startswith("vault_sts_operator_credentials_scheduled "):
                return float(line.split()[1])
        return None

    def namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name, "labels": {"vaultsts.io/benchmark": "converge"}}})

    def delete_namespace(self, name: str, timeout: float = 600.0) -> float:
        from kubernetes.client.exceptions import ApiException

        started = time.monotonic()
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(name)
        while time.monotonic() - started < timeout:
            try:
                self.core.read_namespace(name)
            except ApiException as exc:
                if exc.status == 404:
                    return time.monotonic() - started
                raise
            time.sleep(1.0)
        raise RuntimeError(f"namespace {name} still exists after {timeout:.0f}s")

    def apply_identity(self, seeded: SeededIdentity, namespaces: list[str], mfa_modes: list[str] | None = None) -> None:
        self.custom.create_cluster_custom_object(GROUP, VERSION, MFAID, mfa_identity(
            self.stack, seeded, allowed_namespaces=namespaces, mfa_modes=mfa_modes))

    def wait_identity_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.custom.get_cluster_custom_object(GROUP, VERSION, MFAID, name)
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (body.get("status") or {}).get("conditions") or ()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"MFAIdentity {name} not Ready after {timeout:.0f}s")

    def delete_identity(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        with contextlib.suppress(ApiException):
            self.custom.delete_cluster_custom_object(GROUP, VERSION, MFAID, name)

    def server_version(self) -> str:
        from kubernetes import client

        return str(client.VersionApi(self.api).get_code().git_version)


def is_ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or ())


def ready_transition(obj: dict[str, Any]) -> float | None:
    from datetime import datetime

    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready" and cond.get("status") == "True" and cond.get("lastTransitionTime"):
            return datetime.fromisoformat(str(cond["lastTransitionTime"]).replace("Z", "+00:00")).timestamp()
    return None


class ReadyWatcher:
    """Watches the CRs of one namespace and records when each first shows Ready=True (receipt time)."""

    def __init__(self, stack: StackEnv, namespace: str) -> None:
        self.stack = stack
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}
        self.events = 0
        self.errors = 0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace}", daemon=True)

    def _run(self) -> None:
        from kubernetes import client, watch

        api = self.stack.api_client()
        custom = client.CustomObjectsApi(api)
        resource_version = ""
        try:
            while not self._stop.is_set():
                stream = watch.Watch()
                try:
                    kwargs: dict[str, Any] = {"timeout_seconds": 3, "allow_watch_bookmarks": True}
                    if resource_version:
                        kwargs["resource_version"] = resource_version
                    self._started.set()
                    for event in stream.stream(custom.list_namespaced_custom_object, GROUP, VERSION,
                                               self.namespace, ARC, **kwargs):
                        now = time.time()
                        obj = event["object"]
                        resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                        if event["type"] == "BOOKMARK":
                            continue
                        self.events += 1
                        name = (obj.get("metadata") or {}).get("name")
                        if name and name not in self.ready_at and is_ready(obj):
                            self.ready_at[name] = now
                        if self._stop.is_set():
                            break
                except Exception:  # a watch that ends badly (410 Gone...) restarts from a fresh list
                    self.errors += 1
                    resource_version = ""
                    time.sleep(0.2)
                finally:
                    stream.stop()
        finally:
            api.close()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Batch:
    namespace: str
    names: list[str]
    applied_at: dict[str, float] = field(default_factory=dict)
    apply_started: float = 0.0
    apply_finished: float = 0.0
    ready_at: dict[str, float] = field(default_factory=dict)
    all_ready_at: float | None = None
    timed_out: bool = False

    def latencies(self) -> list[float]:
        return sorted(self.ready_at[n] - self.applied_at[n] for n in self.names
                      if n in self.ready_at and n in self.applied_at)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        return {
            "crs": len(self.names),
            "ready": len(self.ready_at),
            "apply_s": round(self.apply_finished - self.apply_started, 3),
            "all_ready_s": round(self.all_ready_at - self.apply_started, 3) if self.all_ready_at else None,
            "apply_to_ready_p50_s": round(percentile(lat, 50), 3) if lat else None,
            "apply_to_ready_p95_s": round(percentile(lat, 95), 3) if lat else None,
            "apply_to_ready_max_s": round(lat[-1], 3) if lat else None,
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(pct) - 1]


def credential_spec(name: str, mfa: str) -> dict[str, Any]:
    """A benchmark credential: its Secret, or with --delivery PodIdentity none (held in the operator's memory)."""
    spec: dict[str, Any] = {"target": {"secretName": f"{name}-aws"}}
    if RUN["delivery"] == "PodIdentity" and mfa == "session":
        spec = {"delivery": {"mode": "PodIdentity", "serviceAccounts": [name]}}
    if mfa != "session":
        spec["mfa"] = mfa
    return spec


def apply_and_wait(cluster: Cluster, namespace: str, identity: SeededIdentity, count: int, *, prefix: str,
                   mfa: str = "session", threads: int = 16, timeout: float = 600.0) -> Batch:
    """Create `count` CRs at once (a pool of `threads`), then wait until every one is Ready."""
    from kubernetes import client

    names = [f"{prefix}-{i:05d}" for i in range(count)]
    batch = Batch(namespace, names)
    watcher = ReadyWatcher(cluster.stack, namespace)
    watcher.start()
    role = identity.role_arns[0]
    local = threading.local()

    def create(name: str) -> None:
        if not hasattr(local, "custom"):
            local.api = cluster.stack.api_client()
            local.custom = client.CustomObjectsApi(local.api)
        spec = credential_spec(name, mfa)
        manifest = assumed_role_credential(namespace, name, identity.name, role, **spec)
        local.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, ARC, manifest,
                                                     _preload_content=False)
        batch.applied_at[name] = time.time()

    batch.apply_started = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="apply") as pool:
        list(pool.map(create, names))
    batch.apply_finished = time.time()
    log(f"{namespace}: applied {count} CRs in {batch.apply_finished - batch.apply_started:.1f}s")

    deadline = time.monotonic() + timeout
    last_report = 0.0
    ready_listed: dict[str, float] = {}
    while True:
        listing = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, ARC)
        for item in listing.get("items") or ():
            name = item["metadata"]["name"]
            if name not in ready_listed and is_ready(item):
                ready_listed[name] = ready_transition(item) or time.time()
        done = len(ready_listed)
        if done >= count:
            break
        if time.monotonic() > deadline:
            batch.timed_out = True
            log(f"{namespace}: timed out with {done}/{count} Ready")
            break
        if time.monotonic() - last_report > 5:
            log(f"{namespace}: {done}/{count} Ready ({time.time() - batch.apply_started:.0f}s since apply)")
            last_report = time.monotonic()
        time.sleep(0.5)
    time.sleep(0.3)  # let the watch deliver the last events
    watcher.stop()
    # Watch receipt times; lastTransitionTime (second precision) where the watch missed one.
    batch.ready_at = {n: watcher.ready_at.get(n, ready_listed[n]) for n in ready_listed}
    if not batch.timed_out:
        batch.all_ready_at = max(batch.ready_at.values())
    missed = len(set(ready_listed) - set(watcher.ready_at))
    if missed:
        log(f"{namespace}: the watch missed {missed} Ready transitions; used lastTransitionTime for them")
    return batch


@contextlib.contextmanager
def profiling(pid: int, path: Path | None) -> Iterator[None]:
    """py-spy record of the operator while the block runs (.svg: flame graph; else collapsed stacks)."""
    if path is None:
        yield
        return
    fmt = "flamegraph" if path.suffix == ".svg" else "raw"
    spy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "50", "--nonblocking", "--gil",
                             "--format", fmt, "--output", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log(f"py-spy profile written to {path}" if path.exists() else
            f"py-spy wrote nothing: {(proc.stderr.read() if proc.stderr else b'').decode()[-300:]}")


# --------------------------------------------------------------------------- phases


@dataclass
class Bench:
    args: argparse.Namespace
    stack: StackEnv
    cluster: Cluster
    operator: OperatorProcess
    sampler: ProcSampler
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def ns(self, phase: str) -> str:
        return f"bench-{self.run_id}-{phase}"

    def seed(self, suffix: str, totp_period: int = 30, mfa_modes: list[str] | None = None) -> SeededIdentity:
        name = f"bench-{self.run_id}-{suffix}"
        seeded = seed_identity(self.stack, name, totp_period=totp_period, roles=[RoleSpec(f"app-{name}")],
                               bound_namespaces=(OPERATOR_NAMESPACE,), bound_service_accounts=(OPERATOR_SA,))
        self.cluster.apply_identity(seeded, [f"bench-{self.run_id}-*"], mfa_modes)
        self.cluster.wait_identity_ready(name)
        return seeded

    def session_run(self, suffix: str, count: int, *, idle: bool, warm: int) -> dict[str, Any]:
        """N CRs on a fresh identity (cold: no MFA session yet), then optionally idle and warm phases."""
        identity = self.seed(suffix)
        namespace = self.ns(suffix)
        self.cluster.namespace(namespace)
        before = self.cluster.counts()
        cpu0 = self.sampler.cpu_s()
        log(f"phase {suffix}: {count} CRs (mfa: session) on identity {identity.name}")
        profile = self.args.profile if suffix == "main" else None
        cpu_before = cpu_snapshot(self.sampler.pid)
        with profiling(self.sampler.pid, profile):
            batch = apply_and_wait(self.cluster, namespace, identity, count, prefix="cred",
                                   threads=self.args.apply_threads, timeout=self.args.timeout)
        cpu1 = self.sampler.cpu_s()
        cpu_after = cpu_snapshot(self.sampler.pid)
        delta = self.cluster.counts().minus(before)
        result: dict[str, Any] = {
            **batch.summary(),
            "totp_codes_used": delta["codes_by_serial"].get(identity.mfa_serial, 0),
            "sts_calls": sum(delta["sts_calls"].values()),
            "sts_calls_by_action": delta["sts_calls"],
            "vault_calls": round(sum(delta["vault_calls"].values())),
            "vault_calls_by_operation": {k: round(v) for k, v in delta["vault_calls"].items()},
            "api_requests": {k: round(v) for k, v in sorted(delta["api_requests"].items())},
            "failures": delta["failures"],
            "operator_cpu_s": round(cpu1 - cpu0, 2),
            "operator_cpu_ms_per_cr": round(1000 * (cpu1 - cpu0) / count, 2),
            "operator_api_requests_per_cr": (round(delta["api_requests"]["operator"] / count, 2)
                                             if "operator" in delta["api_requests"] else None),
            "operator_rss_mb_after": round(self.sampler.rss_mb(), 1),
            # CPU seconds per process from the first apply until all were Ready (2 cores: 2 s per second).
            "cpu_s_by_process": {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in sorted(cpu_after)},
        }
        log(f"phase {suffix}: {json.dumps(batch.summary())}")
        if idle:
            result.update(self.idle_phase())
        if warm:
            result["warm"] = self.warm_phase(identity, warm)
        if self.args.restart and suffix == "main":
            result.update(self.restart_phase(identity, count))
        log(f"phase {suffix}: deleting namespace {namespace}")
        result["cleanup_s"] = round(self.cluster.delete_namespace(namespace), 1)
        self.cluster.delete_identity(identity.name)
        return result

    def idle_phase(self) -> dict[str, Any]:
        time.sleep(self.args.idle_settle)
        log(f"idle: measuring the operator's CPU over {self.args.idle_seconds:.0f}s with nothing due")
        before = self.cluster.counts()
        cpu0, t0 = self.sampler.cpu_s(), time.monotonic()
        time.sleep(self.args.idle_seconds)
        cpu1, t1 = self.sampler.cpu_s(), time.monotonic()
        delta = self.cluster.counts().minus(before)
        return {
            "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
            "idle_rss_mb": round(self.sampler.rss_mb(), 1),
            "idle_window_s": round(t1 - t0, 1),
            "idle_api_requests": {k: round(v) for k, v in sorted(delta["api_requests"].items())},
        }

    def restart_phase(self, identity: SeededIdentity, count: int) -> dict[str, Any]:
        """Restart the operator with every Secret valid: how long until each CR is back on schedule,
        and what it costs (STS calls, TOTP codes, API requests)."""
        before = self.cluster.counts()
        log("restart: stopping the operator")
        self.sampler.peak_mb()  # its VmHWM, while it still runs (retarget below reads the new process only)
        self.operator.stop()
        started = time.monotonic()
        self.operator.start(wait=False)
        assert self.operator.proc is not None
        self.sampler.retarget(self.operator.proc.pid)
        resync = None
        deadline = started + 300
        while time.monotonic() < deadline:
            scheduled = self.cluster.scheduled()
            if scheduled is not None and scheduled >= count:
                resync = time.monotonic() - started
                break
            if scheduled is None and time.monotonic() - started > 30:
                break  # an operator version without the gauge: no resync figure
            time.sleep(0.25)
        log(f"restart: back on schedule after {resync}s; watching {self.args.restart_settle:.0f}s more")
        time.sleep(self.args.restart_settle)
        delta = self.cluster.counts().minus(before)
        result = {
            "restart_resync_s": round(resync, 2) if resync is not None else None,
            "restart_sts_calls": sum(delta["sts_calls"].values()),
            "restart_totp_codes_used": delta["codes_by_serial"].get(identity.mfa_serial, 0),
            "restart_api_requests": {k: round(v) for k, v in sorted(delta["api_requests"].items())},
            "restart_rss_mb": round(self.sampler.rss_mb(), 1),
        }
        log(f"restart: {json.dumps(result)}")
        return result

    def soak(self, count: int, minutes: float) -> dict[str, Any]:
        """`count` CRs that rotate about once a minute for `minutes`: does the operator's memory grow?"""
        identity = self.seed("soak")
        namespace = self.ns("soak")
        self.cluster.namespace(namespace)
        before = self.cluster.counts()
        log(f"soak: {count} CRs rotating every ~1 min for {minutes:.0f} min")
        spec = {"durationSeconds": 900, "renewBefore": "14m"}
        for i in range(count):
            name = f"soak-{i:04d}"
            self.cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, ARC,
                assumed_role_credential(namespace, name, identity.name, identity.role_arns[0],
                                        target={"secretName": f"{name}-aws"}, **spec))
        warmup = min(5.0, minutes / 3) * 60
        time.sleep(warmup)
        rss_start = self.sampler.rss_mb()
        samples = [rss_start]
        end = time.monotonic() + minutes * 60 - warmup
        while time.monotonic() < end:
            time.sleep(30)
            samples.append(self.sampler.rss_mb())
        delta = self.cluster.counts().minus(before)
        result = {
            "soak_minutes": minutes,
            "soak_crs": count,
            "soak_rss_start_mb": round(rss_start, 1),
            "soak_rss_end_mb": round(samples[-1], 1),
            "soak_rss_growth_mb": round(samples[-1] - rss_start, 1),
            "soak_rss_max_mb": round(max(samples), 1),
            "soak_rotations": delta["sts_calls"].get("AssumeRole", 0),
            "soak_totp_codes_used": delta["codes_by_serial"].get(identity.mfa_serial, 0),
            "soak_failures": delta["failures"],
        }
        log(f"soak: {json.dumps(result)}")
        self.cluster.delete_namespace(namespace)
        self.cluster.delete_identity(identity.name)
        return result

    def warm_phase(self, identity: SeededIdentity, count: int) -> dict[str, Any]:
        namespace = self.ns("warm")
        self.cluster.namespace(namespace)
        before = self.cluster.counts()
        log(f"warm: {count} more CRs with the MFA session in place")
        batch = apply_and_wait(self.cluster, namespace, identity, count, prefix="warm",
                               threads=self.args.apply_threads, timeout=120)
        delta = self.cluster.counts().minus(before)
        result = {**batch.summary(), "totp_codes_used": delta["codes_by_serial"].get(identity.mfa_serial, 0)}
        log(f"warm: {json.dumps(result)}")
        self.cluster.delete_namespace(namespace)
        return result

    def baseline(self, count: int, period: int) -> dict[str, Any]:
        # mfa: direct is the identity's explicit choice (limits.mfaModes; the default allows session only)
        identity = self.seed("direct", totp_period=period, mfa_modes=["session", "direct"])
        namespace = self.ns("direct")
        self.cluster.namespace(namespace)
        before = self.cluster.counts()
        log(f"baseline: {count} CRs with mfa: direct, TOTP period {period}s")
        batch = apply_and_wait(self.cluster, namespace, identity, count, prefix="direct", mfa="direct",
                               threads=self.args.apply_threads, timeout=max(300.0, count * period * 4 + 60))
        delta = self.cluster.counts().minus(before)
        summary = batch.summary()
        result = {
            "crs": count,
            "totp_period_s": period,
            "all_ready_s": summary["all_ready_s"],
            "totp_codes_used": delta["codes_by_serial"].get(identity.mfa_serial, 0),
            "codes_refused": delta["codes_refused"],
            "apply_to_ready_p50_s": summary["apply_to_ready_p50_s"],
            "apply_to_ready_p95_s": summary["apply_to_ready_p95_s"],
            "ready": summary["ready"],
            "sts_calls": sum(delta["sts_calls"].values()),
            "failures": delta["failures"],
            "s_per_credential": round(summary["all_ready_s"] / count, 3) if summary["all_ready_s"] else None,
        }
        log(f"baseline: {json.dumps(result)}")
        self.cluster.delete_namespace(namespace)
        self.cluster.delete_identity(identity.name)
        return result


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release()}


def versions(cluster: Cluster) -> dict[str, str]:
    out = {"python": platform.python_version(), "kubernetes_client": importlib.metadata.version("kubernetes")}
    with contextlib.suppress(Exception):
        out["kubernetes_apiserver"] = cluster.server_version()
    with contextlib.suppress(Exception):
        out["openbao"] = str(cluster.stack.vault().sys.read_health_status(method="GET").get("version", ""))
    with contextlib.suppress(Exception):
        out["vault_sts_operator"] = importlib.metadata.version("vault-sts-operator")
    return out


def plot(path: Path, points: dict[int, float], baseline: dict[str, Any], info: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(points)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(sizes, [points[n] for n in sizes], "o-", color="tab:blue", label="session mode (one TOTP code)")
    per = baseline.get("s_per_credential")
    if per:
        period = baseline["totp_period_s"]
        ax.plot([baseline["crs"]], [baseline["all_ready_s"]], "s", color="tab:red",
                label=f"mfa: direct, measured (TOTP period {period} s)")
        span = [min([*sizes, baseline["crs"]]), max(sizes)]
        ax.plot(span, [per * n for n in span], "--", color="tab:red",
                label=f"mfa: direct, period {period} s (extrapolated)")
        ax.plot(span, [per * 30 / period * n for n in span], ":", color="tab:red",
                label="mfa: direct, period 30 s (AWS default; extrapolated)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("AssumedRoleCredentials applied at once (one identity)")
    ax.set_ylabel("seconds until all Ready")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    machine, ver = info["machine"], info["versions"]
    ax.set_title(f"{machine['nproc']} CPU {machine['cpu_model'][:40]}, Python {ver['python']}, "
                 f"k8s {ver.get('kubernetes_apiserver', '?')}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    log(f"plot written to {path}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.converge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crs", type=int, default=1000, help="CRs applied at once in session mode")
    parser.add_argument("--baseline-crs", type=int, default=20, help="CRs in the mfa: direct baseline (0: skip)")
    parser.add_argument("--totp-period", type=int, default=2, help="TOTP period of the baseline identity (s)")
    parser.add_argument("--warm-crs", type=int, default=20, help="CRs applied once the MFA session exists")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU measurement window")
    parser.add_argument("--idle-settle", type=float, default=10.0, help="pause before the idle window")
    parser.add_argument("--sts-concurrency", type=int, default=16, help="the operator's --sts-concurrency")
    parser.add_argument("--apply-threads", type=int, default=16, help="threads creating the CRs")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting for Ready after this")
    parser.add_argument("--admin", action="store_true",
                        help="run the operator with the admin kubeconfig instead of the chart's ServiceAccount")
    parser.add_argument("--operator-arg", action="append", default=[], help="extra operator argument")
    parser.add_argument("--operator-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the operator (e.g. MALLOC_ARENA_MAX=2)")
    parser.add_argument("--delivery", choices=("Secret", "PodIdentity"), default="Secret",
                        help="the credentials' spec.delivery.mode (PodIdentity: the operator runs with --pod-identity "
                             "and holds every credential in memory; the mfa: direct baseline stays in mode Secret)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line (last line)")
    parser.add_argument("--plot", type=Path, help="write a PNG of time-to-all-Ready against N")
    parser.add_argument("--sizes", default="10,100,1000", help="N values for --plot (comma-separated)")
    parser.add_argument("--profile", type=Path,
                        help="py-spy record (GIL holder: CPU) of the operator, main phase (.svg: flame graph)")
    parser.add_argument("--dev-venv", action="store_true",
                        help="run the operator from the development venv (which also holds what the tests need) "
                             "instead of an image-like runtime venv")
    parser.add_argument("--keep-stack", action="store_true", help="leave a stack this run started running")
    parser.add_argument("--no-create-only", dest="create_only", action="store_false",
                        help="skip creating the N CRs with no operator running (create_only_s)")
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="skip restarting the operator with every Secret valid (restart_resync_s)")
    parser.add_argument("--restart-settle", type=float, default=20.0,
                        help="seconds to keep counting STS calls after the restarted operator is back on schedule")
    parser.add_argument("--soak", type=float, default=0.0, metavar="MINUTES",
                        help="soak mode: CRs rotating every ~1 min for MINUTES (soak_rss_growth_mb); 30 for the target")
    parser.add_argument("--soak-crs", type=int, default=50, help="CRs in the soak")
    return parser.parse_args(argv)


RUN = {"delivery": "Secret"}  # --delivery, for credential_spec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RUN["delivery"] = args.delivery
    stack, started_stack = ensure_stack()
    try:
        return run(args, stack)
    finally:
        if started_stack and not args.keep_stack:
            from devstack import stack as devstack

            log("stopping the stack this run started")
            devstack.down(devstack.Stack.default())


@contextlib.contextmanager
def operator_running(args: argparse.Namespace, stack: StackEnv) -> Iterator[OperatorProcess]:
    from devstack.kubeconfig import kubeconfig_for_service_account

    kubeconfig = None
    extra = ["--sts-concurrency", str(args.sts_concurrency), *args.operator_arg]
    if args.delivery == "PodIdentity":
        from devstack.operator_run import free_port

        extra += ["--pod-identity", "--pod-identity-port", str(free_port()),
                  "--pod-identity-agent-service-account", "pod-identity-agent"]
    if not args.admin:
        kubeconfig = kubeconfig_for_service_account(stack, OPERATOR_NAMESPACE, OPERATOR_SA,
                                                    stack.stack_dir / "bench-operator-sa.kubeconfig")
        extra += ["--leader-election-lease", "vault-sts-operator"]
    python = sys.executable
    if not args.dev_venv:
        from devstack.runtime_venv import ensure_runtime_venv

        log("installing the operator as the image does (locked runtime dependencies only)")
        python = str(ensure_runtime_venv())
    operator = OperatorProcess(stack, name="bench-operator", kubeconfig=kubeconfig, extra_args=extra,
                               python=python)
    saved = dict(os.environ)
    os.environ.update(item.split("=", 1) for item in args.operator_env)  # OperatorProcess passes os.environ on
    try:
        operator.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield operator
    finally:
        operator.stop()


def run(args: argparse.Namespace, stack: StackEnv) -> int:
    install_crds_and_chart(stack)
    install_flow_schema(stack)
    create_only_s, create_only_cpu = None, {}
    if args.create_only and not args.soak:
        took, create_only_cpu = create_only(stack, args.crs, args.apply_threads, uuid.uuid4().hex[:6])
        create_only_s = round(took, 3)
    with operator_running(args, stack) as operator:
        assert operator.proc is not None
        pid = operator.proc.pid
        sampler = ProcSampler(pid)
        sampler.start()
        cluster = Cluster(stack, operator)
        bench = Bench(args, stack, cluster, operator, sampler)
        info = {"machine": machine_info(), "versions": versions(cluster)}
        log(f"operator pid {pid} (log {operator.log_file}); run id {bench.run_id}; "
            f"startup RSS {sampler.rss_mb():.1f} MB")
        if args.soak:
            try:
                soaked = bench.soak(args.soak_crs, args.soak)
            finally:
                sampler.stop()
                cluster.close()
            print(json.dumps({**soaked, "operator_peak_rss_mb": round(sampler.peak_mb(), 1), **info}))
            return 0
        try:
            ours = bench.session_run("main", args.crs, idle=True, warm=args.warm_crs)
            sizes_done = {args.crs: ours["all_ready_s"]}
            if args.plot:
                for size in sorted({int(s) for s in args.sizes.split(",") if s.strip()} - {args.crs}):
                    sizes_done[size] = bench.session_run(f"n{size}", size, idle=False, warm=0)["all_ready_s"]
            base = bench.baseline(args.baseline_crs, args.totp_period) if args.baseline_crs else {}
        finally:
            peak = sampler.peak_mb()
            sampler.stop()
            total_cpu = sampler.cpu_s()
            cluster.close()
        warm = ours.pop("warm", {})
        ratio = None
        if base.get("all_ready_s") and ours.get("all_ready_s"):
            ratio = round((base["all_ready_s"] / base["crs"]) / (ours["all_ready_s"] / ours["crs"]), 1)
        result: dict[str, Any] = {
            "crs": args.crs,
            "all_ready_s": ours["all_ready_s"],
            "apply_to_ready_p50_s": ours["apply_to_ready_p50_s"],
            "apply_to_ready_p95_s": ours["apply_to_ready_p95_s"],
            "totp_codes_used": ours["totp_codes_used"],
            "sts_calls": ours["sts_calls"],
            "vault_calls": ours["vault_calls"],
            "operator_peak_rss_mb": round(peak, 1),
            "operator_cpu_s": ours["operator_cpu_s"],
            "operator_cpu_s_total": round(total_cpu, 2),
            "idle_cpu_percent": ours.get("idle_cpu_percent"),
            "idle_rss_mb": ours.get("idle_rss_mb"),
            "warm_crs": warm.get("crs"),
            "warm_apply_to_ready_p50_s": warm.get("apply_to_ready_p50_s"),
            "warm_apply_to_ready_p95_s": warm.get("apply_to_ready_p95_s"),
            "warm_totp_codes_used": warm.get("totp_codes_used"),
            "baseline": base,
            "ratio": ratio,
            "sizes": {str(k): v for k, v in sorted(sizes_done.items())},
            "details": ours,
            "sts_concurrency": args.sts_concurrency,
            "operator_args": args.operator_arg,
            "operator_env": args.operator_env,
            **info,
            "create_only_s": create_only_s,
            "create_only_cpu_s_by_process": create_only_cpu,
            "all_ready_over_create_only": (round(ours["all_ready_s"] / create_only_s, 2)
                                           if create_only_s and ours.get("all_ready_s") else None),
            "operator_cpu_ms_per_cr": ours.get("operator_cpu_ms_per_cr"),
            "operator_api_requests_per_cr": ours.get("operator_api_requests_per_cr"),
            "restart_resync_s": ours.get("restart_resync_s"),
            "restart_sts_calls": ours.get("restart_sts_calls"),
        }
        if args.plot:
            plot(args.plot, {k: v for k, v in sizes_done.items() if v}, base, info)
    if args.json:
        print(json.dumps(result, sort_keys=False))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
