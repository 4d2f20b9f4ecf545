"""Bring the stack up (idempotently), report on it, and take it down.

Processes: etcd, kube-apiserver, kube-controller-manager, a Vault (OpenBao, or HashiCorp Vault with
``VSO_VAULT_FLAVOR=hashicorp``: devstack/vault_server.py) and the STS emulator, all on loopback, all
state under ``.stack/``; and one node (``devstack/node.py``: kube-scheduler, a network namespace with
its forwarder, containerd, kubelet and kube-proxy) unless ``VSO_STACK_NODE=0``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devstack import health, image_cache, node, procs, vault_config, vault_server
from devstack.env import StackEnv
from devstack.handle import Stack, read_state, write_state
from devstack.kubeconfig import write_cert_kubeconfig
from devstack.layout import AWS_PLUGIN_NAME, REPO_ROOT, Ports
from devstack.pki import Pki, ensure_pki
from devstack.procs import StackError

# Start order; ``down`` stops in reverse.
SERVICES = ("etcd", "sts-emulator", vault_server.SERVICE, "netns-forward", "kube-apiserver", "kube-controller-manager",
            "kube-scheduler", "node")
NODE_SERVICES = ("netns-forward", "kube-scheduler", "node")
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
# Node,RBAC: the kubelet's certificate is system:node:<name> in system:nodes (devstack/pki.py), so the Node
# authorizer grants it what a kubelet needs, scoped to its own pods' objects.
AUTHORIZATION_MODE = "Node,RBAC"
# OwnerReferencesPermissionEnforcement is on in OpenShift: an ownerReference with blockOwnerDeletion needs
# `update` on the owner's finalizers subresource; on for every run, so every end-to-end test proves the chart
# grants it. NodeRestriction (kubeadm and managed clusters enable it): a kubelet may request ServiceAccount
# tokens only for pods bound to its node, which the Pod Identity node binding relies on
# (docs/design/pod-identity.md 4.1, 4.4).
ADMISSION_PLUGINS = ("OwnerReferencesPermissionEnforcement", "NodeRestriction")
# Enough for this operator: ServiceAccounts and their tokens, garbage collection of owned objects,
# namespace deletion, Deployments (rollout restarts) and the kube-root-ca.crt ConfigMap.
CONTROLLERS = (
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "root-ca-certificate-publisher-controller",
    # ClusterRoles with aggregationRule (view/edit/admin pick up the chart's aggregated roles).
    "clusterrole-aggregation-controller",
)


def _services() -> tuple[str, ...]:
    return SERVICES if node.enabled() else tuple(s for s in SERVICES if s not in NODE_SERVICES)


def log(message: str) -> None:
    print(f"[devstack {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- up


def up(stack: Stack | None = None) -> StackEnv:
    """Start the stack unless it already runs healthy; (re)write ``.stack/env``; return its values."""
    stack = stack or Stack.default()
    layout = stack.layout
    layout.ensure()
    missing = stack.binaries.missing() + stack.vault.missing()
    if missing:
        raise StackError(
            "missing binaries (run `make build`, or `make build-vault` for HashiCorp Vault): "
            + ", ".join(map(str, missing))
        )
    pki = ensure_pki(layout.pki)
    write_cert_kubeconfig(
        layout.admin_kubeconfig,
        stack.kube_api,
        pki.ca.cert,
        user_name="vso-admin",
        cert=pki.admin.cert,
        key=pki.admin.key,
    )
    write_cert_kubeconfig(
        layout.kcm_kubeconfig,
        stack.kube_api,
        pki.ca.cert,
        user_name="kube-controller-manager",
        cert=pki.controller_manager.cert,
        key=pki.controller_manager.key,
    )

    state = read_state(layout)
    reason = _unhealthy_reason(stack, pki, state)
    if reason is None:
        log(f"stack already up and healthy; re-applying {stack.vault.label} configuration and rewriting .stack/env")
        env = _configure(stack, pki, str(state["vault_token"]))
        log(f"ready: source {layout.env_file}")
        return env
    if procs.recorded(layout):
        log(f"stack not healthy ({reason}); restarting it")
        down(stack, quiet=True)
        layout.ensure()
    return _cold_start(stack, pki)


def _cold_start(stack: Stack, pki: Pki) -> StackEnv:
    layout, ports = stack.layout, stack.ports
    started = time.monotonic()
    _check_ports_free(ports)
    for stale in (layout.data, layout.logs):
        shutil.rmtree(stale, ignore_errors=True)
    layout.ensure()
    token = f"vso-root-{secrets.token_hex(12)}"
    try:
        _start_etcd(stack)
        _start_emulator(stack)
        plugin_sha = _start_vault(stack, pki)
        _wait(stack, "etcd", "healthy", lambda: health.etcd_healthy(ports.etcd_client), 30)
        if node.enabled():
            node.start_network(stack)
        _start_apiserver(stack, pki)
        _init_vault(stack, pki, token)
        _wait(stack, "sts-emulator", "healthy", lambda: health.emulator_healthy(stack.emulator_admin_url), 30)
        _wait(
            stack,
            "kube-apiserver",
            "ready (/readyz)",
            lambda: health.apiserver_ready(stack.kube_api, pki),
            120,
        )
        _start_controller_manager(stack, pki)
        _wait(
            stack,
            "kube-controller-manager",
            "healthy (/healthz)",
            lambda: health.controller_manager_healthy(ports.controller_manager),
            60,
        )
        _wait(
            stack,
            "kube-controller-manager",
            "done creating ServiceAccount default/default",
            lambda: health.default_service_account(stack.kube_api, pki),
            60,
        )
        if node.enabled():
            _start_node(stack, pki)
        state: dict[str, object] = {
            "config": config_fingerprint(stack),
            "vault_token": token,
            "aws_plugin": plugin_sha is not None,
            "vault_flavor": stack.vault_flavor,
            "ports": vars(ports),
        }
        write_state(layout, {**state, "configured": False})
        env = _configure(stack, pki, token)
        write_state(layout, {**state, "configured": True})
    except BaseException:
        log("start failed; stopping what was started (logs kept in .stack/logs)")
        down(stack, quiet=True, keep_logs=True)
        raise
    log(f"stack up in {time.monotonic() - started:.1f}s: source {layout.env_file}")
    return env


def _start_node(stack: Stack, pki: Pki) -> None:
    node.start_scheduler(stack, pki)
    node_started = time.monotonic()
    node.start_node(stack, pki)
    _wait(stack, "kube-scheduler", "healthy (/healthz)", lambda: node.scheduler_healthy(stack), 60)
    _wait(stack, "node", "Ready and untainted", lambda: node.node_ready(stack, pki), 120)
    log(f"node Ready {time.monotonic() - node_started:.1f}s after its start")
    _load_cached_image(stack)


def _load_cached_image(stack: Stack) -> None:
    """Import the operator image ``make image`` built for the current sources, if it is cached."""
    built = image_cache.cached()
    if built is None or node.loaded_image(stack.layout) == built.reference:
        return
    seconds = node.import_image(stack, built.archive, built.reference)
    log(f"imported {built.reference} into the node ({seconds:.1f}s)")


def _wait(stack: Stack, name: str, what: str, check: Callable[[], bool], timeout: float) -> None:
    waited = procs.wait_for(stack.layout, name, what, check, timeout=timeout)
    log(f"{name} {what} ({waited:.1f}s)")


def _start_etcd(stack: Stack) -> None:
    p, data = stack.ports, stack.layout.etcd_data
    client, peer = f"http://127.0.0.1:{p.etcd_client}", f"http://127.0.0.1:{p.etcd_peer}"
    procs.start(
        stack.layout,
        "etcd",
        [
            stack.binaries.etcd,
            "--name=vso",
            f"--data-dir={data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=vso={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )


def _start_emulator(stack: Stack) -> None:
    procs.start(
        stack.layout,
        "sts-emulator",
        [
            sys.executable,
            "-m",
            "devstack.sts_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.ports.emulator),
        ],
        cwd=REPO_ROOT,
    )


def _start_vault(stack: Stack, pki: Pki) -> str | None:
    """Start the Vault server (devstack/vault_server.py); for OpenBao with the AWS plugin built, put it in
    the plugin dir and return its sha256."""
    server = stack.vault
    sha = None
    if server.aws_plugin is not None:
        sha = vault_config.install_plugin(server.aws_plugin, stack.layout.bao_plugins)
    procs.start(stack.layout, vault_server.SERVICE, server.argv(pki), env=server.env())
    return sha


def _init_vault(stack: Stack, pki: Pki, token: str) -> None:
    server, ca = stack.vault, pki.ca.cert
    _wait(stack, vault_server.SERVICE, f"listening ({server.label}, TLS)", lambda: server.listening(ca), 30)
    server.initialise(ca, token)
    _wait(stack, vault_server.SERVICE, "unsealed and active", lambda: server.healthy(ca), 30)


def _start_apiserver(stack: Stack, pki: Pki) -> None:
    procs.start(
        stack.layout,
        "kube-apiserver",
        [
            stack.binaries.kube_apiserver,
            f"--etcd-servers=http://127.0.0.1:{stack.ports.etcd_client}",
            "--bind-address=127.0.0.1",
            f"--secure-port={stack.ports.apiserver}",
            *(
                node.apiserver_args(stack, pki)
                if node.enabled()
                # the default/kubernetes Endpoints cannot hold a loopback address
                else ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]
            ),
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--authorization-mode={AUTHORIZATION_MODE}",
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--api-audiences={SA_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={stack.layout.data / 'apiserver-certs'}",
            "--allow-privileged=false",
            "--profiling=false",
        ],
    )


def _start_controller_manager(stack: Stack, pki: Pki) -> None:
    kubeconfig = stack.layout.kcm_kubeconfig
    procs.start(
        stack.layout,
        "kube-controller-manager",
        [
            stack.binaries.kube_controller_manager,
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={stack.ports.controller_manager}",
            f"--cert-dir={stack.layout.kcm_certs}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--controllers={','.join(CONTROLLERS + (node.NODE_CONTROLLERS if node.enabled() else ()))}",
            "--profiling=false",
        ],
    )


def _configure(stack: Stack, pki: Pki, token: str) -> StackEnv:
    env = _env(stack, token, aws_mount="")
    api, vault = env.api_client(), env.vault()
    try:
        aws_mount = vault_config.configure(
            vault,
            kube_api=api,
            kube_host=stack.kube_api,
            ca_pem=pki.ca.cert.read_text(),
            sts_endpoint=stack.sts_endpoint,
            plugin_sha256=_plugin_sha(stack),
            builtin_aws=stack.vault_flavor == vault_server.HASHICORP,
            vault_ca_pem=pki.ca.cert.read_text(),
        )
    except StackError:
        raise
    except Exception as exc:
        log_file = procs.log_path(stack.layout, vault_server.SERVICE)
        raise StackError(
            f"configuring {stack.vault.label} failed: {type(exc).__name__}: {exc}\n"
            f"--- last 30 lines of {log_file} ---\n{procs.tail(log_file)}"
        ) from exc
    finally:
        api.close()
        vault.adapter.close()
    env = _env(stack, token, aws_mount)
    env.write(stack.layout.env_file)
    return env


def _plugin_sha(stack: Stack) -> str | None:
    target = stack.layout.bao_plugins / AWS_PLUGIN_NAME
    if stack.vault.aws_plugin is None or not target.is_file():  # OpenBao started with the plugin dir only
        return None
    return hashlib.sha256(target.read_bytes()).hexdigest()


def _env(stack: Stack, token: str, aws_mount: str) -> StackEnv:
    ca = str(stack.layout.pki / "ca.crt")
    extra = {
        "AWS_REGION": vault_config.AWS_REGION,
        vault_server.FLAVOR_ENV: stack.vault_flavor,
        "VAULT_CACERT": ca,
        "BAO_CACERT": ca,
    }
    if stack.binaries.helm is not None:
        extra["VSO_HELM"] = str(stack.binaries.helm)
    kubectl = shutil.which("kubectl")
    if kubectl:
        extra["VSO_KUBECTL"] = kubectl
    if node.enabled():
        extra.update(node.env(stack))
    return StackEnv(
        stack_dir=stack.layout.root,
        logs=stack.layout.logs,
        kubeconfig=stack.layout.admin_kubeconfig,
        kube_api=stack.kube_api,
        kube_ca=stack.layout.pki / "ca.crt",
        vault_addr=stack.vault_addr,
        vault_token=token,
        sts_endpoint=stack.sts_endpoint,
        emulator_admin_url=stack.emulator_admin_url,
        aws_mount=aws_mount,
        extra=extra,
    )


def _check_ports_free(ports: Ports) -> None:
    busy = []
    for name, port in vars(ports).items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{name}={port}")
    if busy:
        raise StackError(
            "ports already in use on 127.0.0.1: "
            + ", ".join(busy)
            + " (another stack from a different checkout? `ss -ltnp` shows who holds them)"
        )


# --------------------------------------------------------------------------- health / state


def config_fingerprint(stack: Stack) -> str:
    """What a running stack cannot take on without a restart: a stack started before a change to these is
    restarted by the next ``up`` (a test session's ``stack`` fixture included), never silently reused."""
    settings = {
        "authorization": AUTHORIZATION_MODE,
        "admission": ADMISSION_PLUGINS,
        "cni": node.cni_config(node.NodePaths.of(stack.layout)) if node.enabled() else None,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _unhealthy_reason(stack: Stack, pki: Pki, state: dict[str, object]) -> str | None:
    """None when every process runs and answers and OpenBao was configured; else why not."""
    if not state.get("configured"):
        return "not started or not configured"
    if state.get("config") != config_fingerprint(stack):
        return "it was started with another configuration (admission plugins, authorization, pod network)"
    if state.get("vault_flavor") != stack.vault_flavor:
        return f"{vault_server.FLAVOR_ENV}={stack.vault_flavor}, the stack runs {state.get('vault_flavor')}"
    if stack.vault.aws_plugin is not None and not state.get("aws_plugin"):
        return "the OpenBao AWS plugin was built after the stack started (restart to mount aws/)"
    for name in _services():
        running = procs.find(stack.layout, name)
        if running is None or not procs.alive(running):
            return f"{name} is not running"
    probes: dict[str, Callable[[], bool]] = {
        "etcd": lambda: health.etcd_healthy(stack.ports.etcd_client),
        "kube-apiserver": lambda: health.apiserver_ready(stack.kube_api, pki),
        "kube-controller-manager": lambda: health.controller_manager_healthy(stack.ports.controller_manager),
        vault_server.SERVICE: lambda: stack.vault.healthy(pki.ca.cert),
        "sts-emulator": lambda: health.emulator_healthy(stack.emulator_admin_url),
    }
    if node.enabled():
        probes["kube-scheduler"] = lambda: node.scheduler_healthy(stack)
        probes["node"] = lambda: node.node_ready(stack, pki)
    for name, probe in probes.items():
        try:
            if not probe():
                return f"{name} does not answer healthy"
        except OSError as exc:
            return f"{name} does not answer: {exc}"
    return None


def is_healthy(stack: Stack | None = None) -> bool:
    stack = stack or Stack.default()
    if not stack.layout.pki.is_dir() or stack.binaries.missing() or stack.vault.missing():
        return False
    return _unhealthy_reason(stack, ensure_pki(stack.layout.pki), read_state(stack.layout)) is None


# --------------------------------------------------------------------------- down / status


def down(stack: Stack | None = None, quiet: bool = False, keep_logs: bool = True) -> list[str]:
    """Stop every recorded process (reverse start order), delete data dirs; return the names stopped."""
    stack = stack or Stack.default()
    layout = stack.layout
    order = {name: i for i, name in enumerate(SERVICES)}
    stopped = []
    for running in sorted(procs.recorded(layout), key=lambda r: -order.get(r.name, len(SERVICES))):
        was_alive = procs.alive(running)
        procs.stop(layout, running)
        if was_alive:
            stopped.append(running.name)
            if not quiet:
                log(f"stopped {running.name} (pid {running.pid})")
    leftover_node = node.cleanup(layout, stack.ports)
    shutil.rmtree(layout.data, ignore_errors=True)
    for path in (layout.env_file, layout.state_file):
        path.unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(layout.logs, ignore_errors=True)
    if leftover_node:
        log("WARNING: could not remove: " + ", ".join(leftover_node))
    leftovers = processes_using(layout.root)
    if leftovers:
        log(
            "WARNING: processes still reference the stack dir (not started by this stack's pid files?): "
            + ", ".join(f"{pid} {cmd[:80]}" for pid, cmd in leftovers)
        )
    elif not quiet:
        log("stack down" if stopped else "nothing was running")
    return stopped


def processes_using(root: Path) -> list[tuple[int, str]]:
    """Live processes whose command line mentions ``root`` (a report only; nothing is killed by name)."""
    needle = str(root).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            found.append((int(proc.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def status(stack: Stack | None = None) -> str:
    stack = stack or Stack.default()
    lines = []
    for name in _services():
        running = procs.find(stack.layout, name)
        if running is None:
            lines.append(f"{name:<24} stopped")
        else:
            state = "running" if procs.alive(running) else "DEAD (stale pid file)"
            lines.append(f"{name:<24} pid {running.pid:<8} {state}   log {procs.log_path(stack.layout, name)}")
    healthy = is_healthy(stack)
    lines.append(
        f"healthy: {'yes' if healthy else 'no'}; env: {stack.layout.env_file}"
        f"{'' if stack.layout.env_file.is_file() else ' (absent)'}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- fault injection


RESTARTABLE = (vault_server.SERVICE, "kube-apiserver")
# Names callers used before the stack could run HashiCorp Vault.
_ALIASES = {"openbao": vault_server.SERVICE}


def stop_service(name: str, stack: Stack | None = None) -> None:
    """Stop one running process of the stack (fault tests); ``start_service`` brings it back."""
    stack = stack or Stack.default()
    name = _ALIASES.get(name, name)
    if name not in RESTARTABLE:
        raise StackError(f"{name}: only {', '.join(RESTARTABLE)} can be stopped and started alone")
    running = procs.find(stack.layout, name)
    if running is None:
        raise StackError(f"{name} is not running")
    procs.stop(stack.layout, running)
    log(f"stopped {name} (pid {running.pid})")


def start_service(name: str, stack: Stack | None = None) -> None:
    """Start a process ``stop_service`` stopped, with the argv ``up`` uses, and wait until it is healthy.

    The Vault keeps everything in memory: after a restart it is initialised again and its configuration
    (KV, TOTP, kubernetes auth, the AWS engine) applied again, but seeded identities' data is gone;
    callers re-seed what they need. The root token keeps its id (devstack/vault_server.py).
    """
    stack = stack or Stack.default()
    name = _ALIASES.get(name, name)
    running = procs.find(stack.layout, name)
    if running is not None and procs.alive(running):
        raise StackError(f"{name} is already running (pid {running.pid})")
    pki = ensure_pki(stack.layout.pki)
    state = read_state(stack.layout)
    if name == vault_server.SERVICE:
        token = str(state["vault_token"])
        _start_vault(stack, pki)
        _init_vault(stack, pki, token)
        _configure(stack, pki, token)
    elif name == "kube-apiserver":
        _start_apiserver(stack, pki)
        _wait(stack, "kube-apiserver", "ready (/readyz)", lambda: health.apiserver_ready(stack.kube_api, pki), 120)
    else:
        raise StackError(f"{name}: only {', '.join(RESTARTABLE)} can be stopped and started alone")
    started = procs.find(stack.layout, name)
    if started is not None:  # it belongs to the stack, not to this (test) process
        procs.detach(started)
