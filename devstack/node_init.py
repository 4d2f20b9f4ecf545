"""Process 1 of the node: ``python -m devstack.node_init SPEC.json``.

``devstack.node`` starts it as ``unshare --mount --propagation private --pid --fork --kill-child
--mount-proc python -m devstack.node_init spec.json``: in a private mount namespace and as pid 1 of a
new pid namespace. It

0. enters the node's network namespace (``setns``; not ``ip netns exec``, which remounts ``/sys``
   and would hide the cgroup mounts the kubelet needs);

1. mounts, in its private mount namespace only: a tmpfs for containerd's root (images and container
   filesystems: fast to import into, gone with the namespace), the stack's directories over ``/run``
   and ``/var/log``, and an overlay over ``/var/lib`` whose upper layer is in the stack's directory,
   so nothing containerd, the CNI plugins or the kubelet write lands on the host;
2. starts containerd, imports the pause image, starts the kubelet and kube-proxy;
3. waits. When it exits (SIGTERM from ``stack down``, or any of its children dying), the kernel kills
   every process left in its pid namespace: shims and containers included, and their mounts vanish
   with the mount namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devstack import netns


def _log(message: str) -> None:
    print(f"[node-init {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _drop_namespace_mounts() -> None:
    """Unmount (here only) the copies of other namespaces' nsfs mounts this mount namespace inherited:
    they would keep another stack's network namespace alive after its ``ip netns del``."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] == "nsfs":
            target = fields[0].split()[4].replace("\\040", " ")
            subprocess.run(["umount", "--lazy", target], check=False, capture_output=True)


def _mounts(spec: dict[str, Any]) -> None:
    _drop_namespace_mounts()
    for target, options in spec.get("tmpfs", {}).items():
        Path(target).mkdir(parents=True, exist_ok=True)
        _mount("-t", "tmpfs", "-o", options, "tmpfs", target)
    for target, source in spec["binds"].items():
        if not Path(source).exists():
            Path(source).mkdir(parents=True)
        _mount("--bind", source, target)
    for target, layer in spec["overlays"].items():
        upper, work = Path(layer) / "upper", Path(layer) / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        _mount("-t", "overlay", "overlay", "-o", f"lowerdir={target},upperdir={upper},workdir={work}", target)


def _start(spec: dict[str, Any], name: str) -> subprocess.Popen[bytes]:
    entry = spec["processes"][name]
    log = Path(spec["logs"]) / f"{name}.log"
    with log.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(entry['argv'])}\n".encode())
        out.flush()
        return subprocess.Popen(entry["argv"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **entry.get("env", {})})


def _wait_socket(path: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if proc.poll() is not None:
            raise SystemExit(f"containerd exited ({proc.returncode}) before creating {path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"containerd did not create {path} in {timeout:.0f}s")
        time.sleep(0.05)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with open(f"/run/netns/{spec['netns']}", "rb") as target:  # before /run is covered by the bind
        netns.setns(target.fileno())
    _mounts(spec)
    children: dict[str, subprocess.Popen[bytes]] = {}
    children["containerd"] = _start(spec, "containerd")
    _wait_socket(spec["containerd_socket"], children["containerd"])
    _log("containerd up; importing the pause image")
    subprocess.run(["ctr", "--address", spec["containerd_socket_inside"], "--namespace", "k8s.io", "images", "import",
                    spec["pause_archive"]], check=True, stdout=subprocess.DEVNULL)
    for name in ("kubelet", "kube-proxy"):
        children[name] = _start(spec, name)
    _log(f"started {', '.join(f'{n}={p.pid}' for n, p in children.items())}")
    while not stopping:
        for name, proc in children.items():
            if proc.poll() is not None:
                _log(f"{name} exited with {proc.returncode}; the node stops")
                stopping = True
        try:  # pid 1 reaps every orphan (containerd shims re-parent here)
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.5)
    for proc in reversed(list(children.values())):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.poll() is None for p in children.values()):
        time.sleep(0.1)
    _log("stopping; the kernel kills what is left in this pid namespace")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
