"""scripts/system-deps.sh, the one list of system packages `make demo` and `make test` need: with everything
present it passes silently; with a tool missing it stops before any build and prints the exact apt-get
command (VSO_DEPS_NO_INSTALL=1 stands for a non-root user, so the test never installs anything)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "system-deps.sh"
COMMANDS = ("make", "python3", "gcc", "git", "openssl", "containerd", "runc", "ip", "nft", "conntrack", "unshare",
            "mmdebstrap", "podman", "go", "kubectl", "npm", "mvn", "javac")


def _path_without(tmp_path: Path, *dropped: str) -> str:
    """A PATH of symlinks to this machine's tools, less `dropped` (bash, sed and the like stay reachable)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in (*COMMANDS, "bash", "sed", "sort", "id", "date", "printf", "mapfile", "env"):
        if name in dropped:
            continue
        if name == "python3":  # the interpreter itself (a pyenv shim needs its own environment)
            (bin_dir / name).symlink_to(os.path.realpath(sys.executable))
            continue
        found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                           None)
        if found:
            (bin_dir / name).symlink_to(found)
    return str(bin_dir)


def _run(path: str, purpose: str = "demo") -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "VSO_DEPS_NO_INSTALL": "1"}
    return subprocess.run(["bash", str(SCRIPT), purpose], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_everything_present_passes_silently(tmp_path: Path) -> None:
    result = _run(_path_without(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_a_missing_package_stops_with_the_exact_command(tmp_path: Path) -> None:
    if os.access("/usr/sbin/conntrack", os.X_OK) or os.access("/sbin/conntrack", os.X_OK):
        dropped = "podman"  # root's sbin tools are found without PATH; podman lives in /usr/bin
        package = "podman"
    else:
        dropped, package = "conntrack", "conntrack"
    result = _run(_path_without(tmp_path, dropped), "test")
    assert result.returncode == 1
    assert f"make test needs system packages that are missing: {package}" in result.stderr
    assert f"apt-get update && apt-get install -y {package}" in result.stderr


def test_only_the_test_suite_needs_the_consumer_images_toolchains(tmp_path: Path) -> None:
    path = _path_without(tmp_path, "npm", "mvn", "javac")
    assert _run(path, "demo").returncode == 0
    result = _run(path, "test")
    assert result.returncode == 1
    assert "apt-get update && apt-get install -y maven npm openjdk-17-jdk-headless" in result.stderr


def test_go_and_kubectl_are_named_with_where_to_get_them(tmp_path: Path) -> None:
    result = _run(_path_without(tmp_path, "go", "kubectl"))
    assert result.returncode == 1
    assert "Go >= 1.24 on PATH" in result.stderr and "kubectl >= 1.33 on PATH" in result.stderr
