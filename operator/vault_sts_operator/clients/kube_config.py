"""Where the operator's Kubernetes client finds its API server and credentials: in a pod, the
ServiceAccount; elsewhere, the kubeconfig, merged as kubectl merges it.

Written here on pyyaml rather than taken from a library. kubernetes_asyncio's loader
(``kubernetes_asyncio.config``) imports its generated client package (every model) and brings a
second way of making requests; the official client's loader is synchronous, on urllib3, with the
same models; lightkube's and kr8s' loaders import their httpx clients. The operator needs only the
fields below, which client-go documents as stable (``clientcmd/api/v1/types.go``), and keeps aiohttp
as its one HTTP stack (clients/kube_rest.py).

What client-go does and this module does too: several KUBECONFIG files joined by ``os.pathsep``,
missing ones skipped, the first file to set ``current-context`` or to name a cluster, user or context
winning (entries are never merged field by field); paths resolved against the directory of the file
that holds them; a ``tokenFile`` (and the in-cluster token) read again at every login, so a rotated
token is picked up when the API server answers 401; the in-cluster address taken from
KUBERNETES_SERVICE_HOST/PORT, not from cluster DNS. What it refuses, naming it, rather than ignoring
it: ``exec`` and ``auth-provider`` users, username/password (basic auth, removed from Kubernetes in
1.19), impersonation and ``proxy-url``.

No token or key appears in an error message or a ConnectionInfo's repr.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")


class KubeConfigError(Exception):
    """No usable Kubernetes configuration. The message names files and fields, never their secret values."""


class NoConfiguration(KubeConfigError):
    """Neither an in-cluster ServiceAccount nor any kubeconfig file."""


@dataclasses.dataclass(frozen=True)
class ConnectionInfo:
    """One API server and how to authenticate to it. ``*_data`` fields hold PEM bytes (already decoded
    from the kubeconfig's base64); ``*_path`` fields are absolute paths."""

    server: str
    ca_path: str | None = None
    ca_data: bytes | None = dataclasses.field(default=None, repr=False)
    insecure: bool = False
    tls_server_name: str | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = dataclasses.field(default=None, repr=False)
    private_key_path: str | None = None
    private_key_data: bytes | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    token_path: str | None = None  # read again at each login; wins over `token`, as client-go's BearerTokenFile
    scheme: str = "Bearer"
    default_namespace: str | None = None
    trust_env: bool = False  # environment proxies and CA bundles are not used for the API server

    def __post_init__(self) -> None:
        for path, data, what in ((self.ca_path, self.ca_data, "certificate authority"),
                                 (self.certificate_path, self.certificate_data, "client certificate"),
                                 (self.private_key_path, self.private_key_data, "client key")):
            if path and data:
                raise KubeConfigError(f"both a file and inline data are set for the {what}; set only one")
        if bool(self.certificate_path or self.certificate_data) != bool(self.private_key_path or self.private_key_data):
            raise KubeConfigError("a client certificate needs its key, and a client key its certificate")

    def current_token(self) -> str | None:
        """The bearer token now: ``token_path``'s content if set (read at each call), else ``token``."""
        if self.token_path:
            try:
                return Path(self.token_path).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise KubeConfigError(f"cannot read the token file {self.token_path}: {exc.strerror}") from None
        return self.token


Login = Callable[[], ConnectionInfo]


# --- in-cluster ---------------------------------------------------------------------------------------------------

def in_cluster_server(environ: Mapping[str, str] | None = None) -> str | None:
    """The API server as client-go's InClusterConfig finds it: KUBERNETES_SERVICE_HOST and _PORT, which the
    kubelet sets in every container (not ``kubernetes.default.svc``, which needs cluster DNS)."""
    environ = os.environ if environ is None else environ
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def load_in_cluster(environ: Mapping[str, str] | None = None,
                    service_account_dir: Path | None = None) -> ConnectionInfo | None:
    """The pod's ServiceAccount, or None outside a pod (no service environment or no mounted token).
    Defaults: ``os.environ`` and ``SERVICE_ACCOUNT_DIR``, read at each call."""
    server = in_cluster_server(os.environ if environ is None else environ)
    service_account_dir = SERVICE_ACCOUNT_DIR if service_account_dir is None else service_account_dir
    token_path = service_account_dir / "token"
    if server is None or not token_path.is_file():
        return None
    ca_path = service_account_dir / "ca.crt"
    try:
        namespace = (service_account_dir / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        namespace = None
    return ConnectionInfo(server=server, token_path=str(token_path),
                          ca_path=str(ca_path) if ca_path.is_file() else None, default_namespace=namespace)


# --- kubeconfig ---------------------------------------------------------------------------------------------------

def kubeconfig_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    """KUBECONFIG's files in order, or ~/.kube/config when KUBECONFIG is unset or empty."""
    value = (os.environ if environ is None else environ).get("KUBECONFIG", "")
    paths = [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]
    return paths or [DEFAULT_KUBECONFIG.expanduser()]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending line, which may hold a token: give only the position.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML{where}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise KubeConfigError(f"kubeconfig {path} is not a mapping")
    return config


@dataclasses.dataclass
class _Merged:
    current_context: str | None = None
    # name -> (the entry's fields, the directory its relative paths resolve against, the file it came from)
    clusters: dict[str, tuple[dict[str, Any], Path, Path]] = dataclasses.field(default_factory=dict)
    users: dict[str, tuple[dict[str, Any], Path, Path]] = dataclasses.field(default_factory=dict)
    contexts: dict[str, tuple[dict[str, Any], Path, Path]] = dataclasses.field(default_factory=dict)


_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


def _merge(paths: list[Path]) -> _Merged:
    merged = _Merged()
    found = False
    for path in paths:
        config = _read(path)
        if config is None:
            continue  # as kubectl: a missing file in KUBECONFIG is skipped
        found = True
        base = path.resolve().parent
        if merged.current_context is None and config.get("current-context"):
            merged.current_context = str(config["current-context"])
        for section, field in _SECTIONS:
            entries = getattr(merged, section)
            for item in config.get(section) or []:
                if not isinstance(item, dict) or not item.get("name"):
                    raise KubeConfigError(f"kubeconfig {path}: an entry of {section} has no name")
                body = item.get(field) or {}
                if not isinstance(body, dict):
                    raise KubeConfigError(f"kubeconfig {path}: {field} {item['name']!r} is not a mapping")
                entries.setdefault(str(item["name"]), (body, base, path))
    if not found:
        looked = os.pathsep.join(map(str, paths))
        raise NoConfiguration(f"no in-cluster ServiceAccount and no kubeconfig found (looked for {looked})")
    return merged


def _path(value: Any, base: Path) -> str | None:
    if not value:
        return None
    path = Path(str(value))
    return str(path if path.is_absolute() else base / path)


def _data(value: Any, what: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KubeConfigError(f"{what} is not valid base64") from None


_UNSUPPORTED_USER = {
    "exec": "an exec credential plugin",
    "auth-provider": "an auth-provider",
    "username": "username/password (basic auth, removed from Kubernetes in 1.19)",
    "password": "username/password (basic auth, removed from Kubernetes in 1.19)",
    "as": "impersonation",
    "as-uid": "impersonation",
    "as-groups": "impersonation",
    "as-user-extra": "impersonation",
}


def load_kubeconfig(paths: list[Path] | None = None, *, context: str | None = None) -> ConnectionInfo:
    """The current (or the named) context of the merged kubeconfig files (default: ``kubeconfig_paths()``)."""
    merged = _merge(kubeconfig_paths() if paths is None else paths)
    name = context or merged.current_context
    if not name:
        raise KubeConfigError("the kubeconfig sets no current-context")
    if name not in merged.contexts:
        raise KubeConfigError(f"the kubeconfig has no context {name!r}")
    ctx, _, ctx_file = merged.contexts[name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if not cluster_name or cluster_name not in merged.clusters:
        raise KubeConfigError(f"context {name!r} ({ctx_file}) names no cluster the kubeconfig defines")
    cluster, cluster_base, cluster_file = merged.clusters[cluster_name]
    if user_name and user_name not in merged.users:
        raise KubeConfigError(f"context {name!r} ({ctx_file}) names user {user_name!r}, which the kubeconfig "
                              "does not define")
    user, user_base, user_file = merged.users[user_name] if user_name else ({}, cluster_base, cluster_file)
    unsupported = sorted({what for key, what in _UNSUPPORTED_USER.items() if user.get(key)})
    if unsupported:
        raise KubeConfigError(f"user {user_name!r} ({user_file}) authenticates with {' and '.join(unsupported)}, "
                              "which the operator does not support: use a token, a tokenFile or a client "
                              "certificate")
    if cluster.get("proxy-url"):
        raise KubeConfigError(f"cluster {cluster_name!r} ({cluster_file}) sets proxy-url, which the operator "
                              "does not support")
    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"cluster {cluster_name!r} ({cluster_file}) has no server")
    token_path = _path(user.get("tokenFile"), user_base)
    return ConnectionInfo(
        server=str(server),
        ca_path=_path(cluster.get("certificate-authority"), cluster_base),
        ca_data=_data(cluster.get("certificate-authority-data"),
                      f"certificate-authority-data of cluster {cluster_name!r}"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name") or None,
        certificate_path=_path(user.get("client-certificate"), user_base),
        certificate_data=_data(user.get("client-certificate-data"),
                               f"client-certificate-data of user {user_name!r}"),
        private_key_path=_path(user.get("client-key"), user_base),
        private_key_data=_data(user.get("client-key-data"), f"client-key-data of user {user_name!r}"),
        token=None if token_path else (str(user["token"]) if user.get("token") else None),
        token_path=token_path,
        default_namespace=ctx.get("namespace") or None,
    )


# --- the login --------------------------------------------------------------------------------------------------

def login() -> ConnectionInfo:
    """In a pod: the ServiceAccount, at the address the kubelet gives; elsewhere: KUBECONFIG or ~/.kube/config."""
    return load_in_cluster() or load_kubeconfig()


def default_login() -> Login:
    """The callable KubeRest calls at its first request and again when the API server answers 401: each call
    reads the configuration afresh (a rotated projected token, an edited kubeconfig)."""
    return login
