"""Run the operator as a local process against the stack (tests, demo, benchmarks).

The operator runs exactly as its console command would in a pod, with a kubeconfig
(admin, or a ServiceAccount's from TokenRequest) and a ServiceAccount JWT for
Vault's kubernetes auth in a file, as the kubelet would project it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devstack.env import StackEnv
from devstack.kubeconfig import VAULT_AUDIENCE, request_token
from devstack.metrics_scraper import scrape, scraper_token

OPERATOR_NAMESPACE = "vault-sts-operator"
OPERATOR_SA = "vault-sts-operator"
# What the test suites add to the operator's command line: the rotate annotation's minimum interval
# (60 s by default) shortened so tests that rotate right after an issue stay quick; the rate-limit test
# reads the value from here.
TEST_ROTATE_MIN_INTERVAL = 10
TEST_OPERATOR_ARGS = ("--rotate-min-interval", str(TEST_ROTATE_MIN_INTERVAL))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_operator_service_account(stack: StackEnv, namespace: str = OPERATOR_NAMESPACE,
                                    name: str = OPERATOR_SA) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = stack.api_client()
    try:
        core = client.CoreV1Api(api)
        for create in (
            lambda: core.create_namespace({"metadata": {"name": namespace}}),
            lambda: core.create_namespaced_service_account(namespace, {"metadata": {"name": name}}),
        ):
            try:
                create()
            except ApiException as exc:
                if exc.status != 409:
                    raise
    finally:
        api.close()


_LIVE: list[OperatorProcess] = []  # started by this interpreter and not stopped


@dataclass
class OperatorProcess:
    stack: StackEnv
    name: str = "operator"
    kubeconfig: Path | None = None  # default: the admin kubeconfig
    extra_args: list[str] = field(default_factory=list)
    namespace: str = OPERATOR_NAMESPACE
    service_account: str = OPERATOR_SA
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    # As the chart's default: /metrics over HTTPS to a bearer token allowed `get /metrics` (metrics_text() sends
    # the stack's metrics scraper's); False: --metrics-secure=false, plain HTTP without authentication.
    metrics_secure: bool = True
    python: str = sys.executable  # e.g. devstack.runtime_venv.ensure_runtime_venv() for image-like runs
    # As the chart's default: the operator watches its own Secrets (label-selected), so a Secret deleted by hand
    # is written again at once; False mirrors secretRecovery.clusterMode=check (a by-name read every 45 s).
    watch_secrets: bool = True
    # Vault addresses MFAIdentities may name besides the stack's Vault (the default address); the stack's STS
    # emulator is the STS endpoint allowed (as a platform lists its own in allowedDestinations).
    allowed_vault_addresses: list[str] = field(default_factory=list)
    # Mode PodIdentity's endpoint for node agents (--pod-identity), self-signed, on this port; 0: not enabled.
    pod_identity_port: int = 0
    pod_identity_agent_account: str = "pod-identity-agent"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_file(self) -> Path:
        return self.stack.logs / f"{self.name}.log"

    @property
    def token_file(self) -> Path:
        return self.stack.stack_dir / f"{self.name}-sa.token"

    def _write_sa_token(self) -> None:
        # As the chart's projected token: its own audience, which Vault's roles require.
        token = request_token(self.stack, self.namespace, self.service_account, expiration_seconds=24 * 3600,
                              audiences=[VAULT_AUDIENCE])
        self.token_file.touch(mode=0o600, exist_ok=True)
        self.token_file.write_text(token)

    def start(self, wait: bool = True) -> None:
        ensure_operator_service_account(self.stack, self.namespace, self.service_account)
        self._write_sa_token()
        env = {**os.environ, **self.stack.as_environ(), "KUBECONFIG": str(self.kubeconfig or self.stack.kubeconfig),
               "PYTHONUNBUFFERED": "1",
               # The stack's OpenBao and STS emulator speak plain HTTP on loopback: the development setting.
               "VSO_ALLOW_INSECURE_HTTP": "1"}
        env.pop("VAULT_TOKEN", None)  # the operator must log in to Vault itself
        env.pop("BAO_TOKEN", None)
        for name in ("VAULT_CACERT", "BAO_CACERT", "REQUESTS_CA_BUNDLE"):  # trust only what the CRs name
            env.pop(name, None)
        scope = [] if {"-n", "--namespace"} & set(self.extra_args) else ["--all-namespaces"]
        argv = [self.python, "-m", "vault_sts_operator", "run", *scope,
                "--metrics-port", str(self.metrics_port),
                *([] if self.metrics_secure else ["--metrics-secure=false"]),
                "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
                "--lease-namespace", self.namespace,
                "--vault-sa-token-file", str(self.token_file),
                "--service-account", self.service_account,
                "--allowed-sts-endpoint", self.stack.sts_endpoint,
                *[arg for address in self.allowed_vault_addresses for arg in ("--allowed-vault-address", address)],
                *([] if self.watch_secrets else ["--no-watch-secrets", "--secret-check-interval", "45"]),
                *(["--pod-identity", "--pod-identity-port", str(self.pod_identity_port),
                   "--pod-identity-agent-service-account", self.pod_identity_agent_account]
                  if self.pod_identity_port else []),
                *self.extra_args]
        self.starts += 1
        with self.log_file.open("ab") as out:
            out.write(f"\n==== start #{self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        _LIVE.append(self)
        if wait:
            self.wait_healthy()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}; log:\n{self.tail()}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise RuntimeError(f"operator not healthy after {timeout}s; log:\n{self.tail()}")

    def stop_others(self) -> None:
        """Stop every other operator this interpreter runs (a test suite that needs to be the only one)."""
        for other in [p for p in _LIVE if p is not self]:
            other.stop()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    @property
    def metrics_url(self) -> str:
        return f"{'https' if self.metrics_secure else 'http'}://127.0.0.1:{self.metrics_port}/metrics"

    def metrics_text(self) -> str:
        """A scrape as Prometheus does it: with metrics_secure, over HTTPS with the bearer token of a ServiceAccount
        allowed `get /metrics` (devstack/metrics_scraper.py)."""
        return scrape(self.metrics_url, scraper_token(self.stack) if self.metrics_secure else "")

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
