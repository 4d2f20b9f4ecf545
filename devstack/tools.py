"""Checking tools built by devstack/build.sh that the stack itself does not run (promtool, kstatus-check)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from devstack.layout import read_versions


def cache_bin() -> Path:
    return Path(os.environ.get("VSO_CACHE", Path.home() / ".cache" / "vault-sts-operator")) / "bin"


def promtool() -> Path | None:
    """Prometheus's promtool (`bash devstack/build.sh promtool`), or None when not built."""
    path = cache_bin() / f"promtool-{read_versions()['PROMETHEUS_VERSION']}" / "promtool"
    return path if os.access(path, os.X_OK) else None


def kstatus_check() -> Path | None:
    """kstatus-check (`bash devstack/build.sh kstatus`, from devstack/kstatus/main.go), or None when not built
    for the current source and versions."""
    versions = read_versions()
    digest = hashlib.sha256((Path(__file__).parent / "kstatus" / "main.go").read_bytes()).hexdigest()[:12]
    name = f"kstatus-check-{versions['CLI_UTILS_VERSION']}-lua{versions['GOPHER_LUA_VERSION']}-{digest}"
    path = cache_bin() / name / "kstatus-check"
    return path if os.access(path, os.X_OK) else None
