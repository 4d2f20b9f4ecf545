"""Checking tools built by devstack/build.sh that the stack itself does not run (promtool)."""

from __future__ import annotations

import os
from pathlib import Path

from devstack.layout import read_versions


def cache_bin() -> Path:
    return Path(os.environ.get("VSO_CACHE", Path.home() / ".cache" / "vault-sts-operator")) / "bin"


def promtool() -> Path | None:
    """Prometheus's promtool (`bash devstack/build.sh promtool`), or None when not built."""
    path = cache_bin() / f"promtool-{read_versions()['PROMETHEUS_VERSION']}" / "promtool"
    return path if os.access(path, os.X_OK) else None
