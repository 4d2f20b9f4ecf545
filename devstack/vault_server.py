"""The stack's Vault: OpenBao (default) or HashiCorp Vault (``VSO_VAULT_FLAVOR=hashicorp``), over TLS.

Both flavours run the same way, so every test sees one shape whatever the flavour:

- server mode (not ``-dev``) with in-memory storage and one TLS listener on ``127.0.0.1:<ports.bao>``,
  its certificate signed by the stack CA (``.stack/pki/ca.crt``, exported as ``VAULT_CACERT``). No
  plaintext listener: ``-dev`` always opens one, and TLS is what users run.
- initialised with one unseal key and unsealed by ``start``; the root token then gets the fixed id the
  stack chose (``auth/token/create`` with ``id``), so a restart (fault tests) keeps the token the
  tests hold; the generated initial root token is revoked. State is in memory: a restart loses it and
  ``devstack.vault_config.configure`` applies the mounts again (callers re-seed identities).
- the AWS secrets engine: HashiCorp Vault has it built in (its ``aws`` engine, from the same source
  as the plugin); OpenBao mounts Vault's engine as the external plugin devstack/build_vault_aws.sh
  builds (registered in the catalog by sha256 from ``plugin_directory``).

HashiCorp Vault is built by devstack/build_vault_server.sh (BUSL-1.1: local tests only, never shipped).
See docs/vault-flavours.md for what differs between the two and how the operator copes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import health
from devstack.layout import Binaries, Layout, Ports, read_versions
from devstack.pki import Pki
from devstack.procs import StackError

OPENBAO = "openbao"
HASHICORP = "hashicorp"
FLAVORS = (OPENBAO, HASHICORP)
DEFAULT_FLAVOR = OPENBAO
FLAVOR_ENV = "VSO_VAULT_FLAVOR"
# The process name in .stack/pids and .stack/logs (the same for both flavours).
SERVICE = "vault"


def flavor_from_env() -> str:
    value = os.environ.get(FLAVOR_ENV, "").strip().lower() or DEFAULT_FLAVOR
    if value not in FLAVORS:
        raise StackError(f"{FLAVOR_ENV}={value!r}: expected one of {', '.join(FLAVORS)}")
    return value


def hashicorp_binary() -> Path:
    """Where devstack/build_vault_server.sh puts HashiCorp Vault."""
    version = read_versions()["HASHICORP_VAULT_VERSION"]
    cache = Path(os.environ.get("VSO_CACHE", Path.home() / ".cache" / "vault-sts-operator")) / "bin"
    return cache / f"vault-{version}" / "vault"


@dataclass(frozen=True)
class VaultServer:
    flavor: str
    binary: Path
    aws_plugin: Path | None  # OpenBao only: HashiCorp Vault has the AWS engine built in
    layout: Layout
    ports: Ports

    @classmethod
    def for_stack(cls, flavor: str, binaries: Binaries, layout: Layout, ports: Ports) -> VaultServer:
        if flavor == HASHICORP:
            return cls(flavor, hashicorp_binary(), None, layout, ports)
        return cls(flavor, binaries.bao, binaries.aws_plugin, layout, ports)

    @property
    def label(self) -> str:
        return "HashiCorp Vault" if self.flavor == HASHICORP else "OpenBao"

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.ports.bao}"

    @property
    def has_aws_engine(self) -> bool:
        return self.flavor == HASHICORP or self.aws_plugin is not None

    def missing(self) -> list[Path]:
        return [] if os.access(self.binary, os.X_OK) else [self.binary]

    @property
    def config_file(self) -> Path:
        return self.layout.data / "vault.hcl"

    def write_config(self, pki: Pki) -> Path:
        lines = [
            'storage "inmem" {}',
            'listener "tcp" {',
            f'  address = "127.0.0.1:{self.ports.bao}"',
            f'  tls_cert_file = "{pki.vault.cert}"',
            f'  tls_key_file = "{pki.vault.key}"',
            "}",
            f'api_addr = "{self.addr}"',
            "disable_mlock = true",
        ]
        if self.flavor == OPENBAO and self.aws_plugin is not None:
            lines.append(f'plugin_directory = "{self.layout.bao_plugins}"')
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("\n".join(lines) + "\n")
        return self.config_file

    def argv(self, pki: Pki) -> list[str | Path]:
        return [self.binary, "server", f"-config={self.write_config(pki)}", "-log-level=warn"]

    def env(self) -> dict[str, str]:
        """HOME inside .stack: the server must not read or write the developer's ~/.vault-token or config."""
        return {"HOME": str(self.layout.data), "VAULT_ADDR": "", "BAO_ADDR": ""}

    def listening(self, ca: Path) -> bool:
        """The listener answers (sealed and uninitialised count: ``initialise`` comes next)."""
        return health.vault_status(self.addr, ca) in (200, 429, 472, 473, 501, 503)

    def healthy(self, ca: Path) -> bool:
        return health.vault_status(self.addr, ca) == 200

    def client(self, ca: Path, token: str | None = None) -> Any:
        import hvac

        return hvac.Client(url=self.addr, token=token, verify=str(ca))

    def initialise(self, ca: Path, token: str, timeout: float = 30) -> None:
        """Initialise and unseal a fresh server; give its root token the id ``token``."""
        client = self.client(ca)
        try:
            if client.sys.is_initialized():
                # State is in memory: an initialised server is one this stack already set up.
                return
            init = client.sys.initialize(secret_shares=1, secret_threshold=1)
            client.sys.submit_unseal_key(init["keys"][0])
            deadline = time.monotonic() + timeout
            while not self.healthy(ca):
                if time.monotonic() > deadline:
                    raise StackError(f"{self.label} did not become active within {timeout:.0f}s of unsealing")
                time.sleep(0.2)
            client.token = init["root_token"]
            client.auth.token.create(id=token, policies=["root"], no_parent=True, display_name="vso-root")
            client.auth.token.revoke_self()
        finally:
            client.adapter.close()
