"""``stack down`` leaves nothing of the node behind, and may run twice (issue 9).

A second, throwaway stack (its own directory, the first free port offset from +50) starts with a pod running, then goes
down twice. Checked after: no process of it, no mount, no network namespace, no host network
interface or nftables/iptables rule it added, no cgroup, no containerd state.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.env import parse_env_file
from devstack.layout import REPO_ROOT, Ports
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.stack


MARKERS = ("vso", "kube", "10.244.", "10.96.")


def _host_state(netns: str) -> dict[str, list[str]]:
    """What of the host's network could be the node's: interfaces, nftables/iptables lines and
    namespaces naming its bridge, its ranges or kube-proxy (other engineers' work on this machine,
    e.g. a podman network, is not ours to judge)."""

    def run(*argv: str) -> list[str]:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return [line for line in out.splitlines() if any(m in line for m in MARKERS) and not line.startswith("#")]

    return {
        "links": run("ip", "-o", "link", "show"),
        "addresses": run("ip", "-o", "addr", "show"),
        "routes": run("ip", "route", "show", "table", "all"),
        "nft": run("nft", "list", "ruleset"),
        "iptables": run("iptables-save") if Path("/usr/sbin/iptables-save").exists() else [],
        "netns": [line for line in run("ip", "netns", "list") if line.split()[0] == netns],
    }


def _pids_in(cgroup_dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs:
        for procs in top.rglob("cgroup.procs") if top.is_dir() else []:
            pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo += children.get(current, [])
    return found


def _mentions(root: Path) -> list[str]:
    """Live processes and mounts (in any mount namespace) naming the stack's directory."""
    needle = str(root)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle.encode() in (proc / "cmdline").read_bytes():
                found.append(f"process {proc.name}")
            found += [f"mount in {proc.name}: {line}" for line in (proc / "mountinfo").read_text().splitlines()
                      if needle in line]
        except OSError:
            continue
    return found


def _free_offset(first: int) -> int:
    """The first port offset from ``first`` whose ports and namespace no other stack here holds."""
    for offset in range(first, first + 40):
        ports = [port + offset for port in vars(Ports()).values()]
        if all(_port_free(p) for p in ports) and not Path(f"/run/netns/vso-node-{offset}").exists():
            return offset
    raise AssertionError(f"no free port offset in {first}..{first + 39}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_stack_down_leaves_nothing_and_runs_twice(tmp_path: Path) -> None:
    offset = _free_offset(int(os.environ.get("VSO_STACK_PORT_OFFSET", "0")) + 50)
    root = tmp_path / "stack"
    env = {**os.environ, "VSO_STACK_DIR": str(root), "VSO_STACK_PORT_OFFSET": str(offset)}
    for key in ("KUBECONFIG", "VSO_STACK_NODE"):
        env.pop(key, None)
    netns = f"vso-node-{offset}"
    before = _host_state(netns)

    def devstack(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devstack", *args], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300, check=False)

    up = devstack("up")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        values = parse_env_file(root / "env")
        assert values["VSO_NODE_NETNS"] == netns
        kenv = {**env, "KUBECONFIG": values["KUBECONFIG"]}

        def kubectl(*args: str, stdin: str | None = None) -> str:
            done = subprocess.run(["kubectl", *args], env=kenv, input=stdin, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            return done.stdout

        kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
            "spec": {"containers": [{"name": "pause", "image": "vso.local/pause:3.10", "imagePullPolicy": "Never"}]},
        }))
        wait_for("the pod to run", lambda: kubectl("get", "pod", "sleeper", "-o",
                                                   "jsonpath={.status.phase}") == "Running", timeout=90)
        cgroups = [Path(p) for p in json.loads((root / "node-cgroups.json").read_text())]
        node_pid = json.loads((root / "pids" / "node.pid").read_text())["pid"]
        node_pids = _descendants(node_pid) | _pids_in(cgroups)
        # unshare, node_init, containerd, kubelet, kube-proxy, a shim, the pod's pause processes
        assert len(node_pids) >= 7, node_pids
        assert _pids_in(cgroups), "the pod's processes are in the node's cgroups"
        assert Path(f"/run/netns/{netns}").exists()
        during = _host_state(netns)
        assert during.pop("netns"), "the node's namespace exists while it runs"
    finally:
        first = devstack("down")
    second = devstack("down")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "WARNING" not in first.stderr + second.stderr, first.stderr + second.stderr

    assert not [pid for pid in node_pids if Path(f"/proc/{pid}").exists()]
    assert _mentions(root) == []
    assert not Path(f"/run/netns/{netns}").exists()
    assert not [c for c in cgroups if c.exists()]
    assert not (root / "data").exists()
    after = _host_state(netns)
    # the node never touches the host's network: no interface, address, route, rule or namespace
    assert after == before, (before, after)
    assert after["netns"] == []
    before.pop("netns")
    assert during == before, (before, during)
