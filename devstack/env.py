"""``.stack/env``: what a running stack exports, and handy clients built from it."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.layout import Layout

if TYPE_CHECKING:
    from devstack.sts_emulator.admin import EmulatorAdmin  # written in parallel; may be absent


@dataclass(frozen=True)
class StackEnv:
    stack_dir: Path
    logs: Path
    kubeconfig: Path
    kube_api: str
    kube_ca: Path
    vault_addr: str
    vault_token: str
    sts_endpoint: str
    emulator_admin_url: str
    aws_mount: str  # "aws" when the OpenBao AWS plugin is mounted, else ""
    extra: dict[str, str] = field(default_factory=dict)

    def as_environ(self) -> dict[str, str]:
        env = {
            "VSO_STACK_DIR": str(self.stack_dir),
            "VSO_STACK_LOGS": str(self.logs),
            "KUBECONFIG": str(self.kubeconfig),
            "VSO_KUBE_API": self.kube_api,
            "VSO_KUBE_CA": str(self.kube_ca),
            "VAULT_ADDR": self.vault_addr,
            "VAULT_TOKEN": self.vault_token,
            "BAO_ADDR": self.vault_addr,
            "BAO_TOKEN": self.vault_token,
            "AWS_ENDPOINT_URL_STS": self.sts_endpoint,
            "STS_EMULATOR_ADMIN_URL": self.emulator_admin_url,
            "VSO_VAULT_AWS_MOUNT": self.aws_mount,
        }
        env.update(self.extra)
        return env

    def render(self) -> str:
        lines = ["# written by `python -m devstack up`; source it: . .stack/env"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.as_environ().items()]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(self.render())

    @classmethod
    def load(cls, path: Path | None = None) -> StackEnv:
        path = path or Layout.default().env_file
        values = parse_env_file(path)
        known = {
            "VSO_STACK_DIR",
            "VSO_STACK_LOGS",
            "KUBECONFIG",
            "VSO_KUBE_API",
            "VSO_KUBE_CA",
            "VAULT_ADDR",
            "VAULT_TOKEN",
            "BAO_ADDR",
            "BAO_TOKEN",
            "AWS_ENDPOINT_URL_STS",
            "STS_EMULATOR_ADMIN_URL",
            "VSO_VAULT_AWS_MOUNT",
        }
        return cls(
            stack_dir=Path(values["VSO_STACK_DIR"]),
            logs=Path(values["VSO_STACK_LOGS"]),
            kubeconfig=Path(values["KUBECONFIG"]),
            kube_api=values["VSO_KUBE_API"],
            kube_ca=Path(values["VSO_KUBE_CA"]),
            vault_addr=values["VAULT_ADDR"],
            vault_token=values["VAULT_TOKEN"],
            sts_endpoint=values["AWS_ENDPOINT_URL_STS"],
            emulator_admin_url=values["STS_EMULATOR_ADMIN_URL"],
            aws_mount=values.get("VSO_VAULT_AWS_MOUNT", ""),
            extra={k: v for k, v in values.items() if k not in known},
        )

    # --- clients (imported lazily: `python -m devstack down` should not pay for them) ---

    def api_client(self) -> Any:
        """A new admin ``kubernetes.client.ApiClient`` (system:masters)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call,unused-ignore]

    @property
    def vault_flavor(self) -> str:
        """``openbao`` or ``hashicorp`` (devstack/vault_server.py)."""
        return self.extra.get("VSO_VAULT_FLAVOR", "openbao")

    @property
    def vault_ca(self) -> Path | None:
        """The CA that signed the Vault's TLS certificate (None for a plain-http Vault)."""
        ca = self.extra.get("VAULT_CACERT")
        return Path(ca) if ca else None

    def vault(self, token: str | None = None, *, namespace: str | None = None) -> Any:
        """An ``hvac.Client`` for the stack's Vault (OpenBao or HashiCorp Vault), with the root token unless
        another is given, verifying its TLS certificate against the stack CA."""
        import hvac

        ca = self.vault_ca
        return hvac.Client(url=self.vault_addr, token=self.vault_token if token is None else token,
                           verify=str(ca) if ca else True, namespace=namespace or None)

    def emulator(self) -> EmulatorAdmin:
        from devstack.sts_emulator.admin import EmulatorAdmin

        return EmulatorAdmin(self.emulator_admin_url)

    def subprocess_env(self) -> dict[str, str]:
        """``os.environ`` plus this stack's variables, for kubectl, bao and friends."""
        return {**os.environ, **self.as_environ()}


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line.startswith("export "):
            continue
        key, _, rest = line.removeprefix("export ").partition("=")
        parts = shlex.split(rest)
        values[key] = parts[0] if parts else ""
    return values
