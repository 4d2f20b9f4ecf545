"""The operator exactly as the container image installs it: locked runtime dependencies only.

Benchmarks measure memory with it: the development venv also holds what the tests and tools need
(the official kubernetes client among them), which the image does not have. Built with
scripts/image_install.sh (the Dockerfile's own steps);
the dependencies are cached per lock file, the operator's wheel is reinstalled each time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devstack.layout import REPO_ROOT

INSTALL = REPO_ROOT / "scripts" / "image_install.sh"


def _cache_root() -> Path:
    return Path(os.environ.get("VSO_CACHE", Path.home() / ".cache" / "vault-sts-operator"))


def ensure_runtime_venv() -> Path:
    """The runtime venv's python, with this checkout's operator installed."""
    locks = b"".join((REPO_ROOT / "requirements" / f).read_bytes() for f in ("operator.lock", "build.lock"))
    # One venv per checkout as well as per lock: engineers sharing a machine each reinstall their
    # own operator wheel, which must not replace another checkout's under a running benchmark.
    key = hashlib.sha256(locks + str(REPO_ROOT).encode()).hexdigest()[:12]
    root = _cache_root() / f"runtime-venv-{key}"
    venv, build_venv = root / "venv", root / "build"
    if not (venv / "bin" / "python").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run(["sh", str(INSTALL), "deps", str(venv), str(build_venv)], cwd=REPO_ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run(["sh", str(INSTALL), "app", str(venv), str(build_venv), str(REPO_ROOT), wheels],
                       cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return venv / "bin" / "python"
