"""The handle on this checkout's stack (where it lives, its ports, binaries and Vault flavour) and its
recorded state: what devstack/stack.py, node.py and image.py share.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from devstack import vault_server
from devstack.layout import Binaries, Layout, Ports


@dataclass(frozen=True)
class Stack:
    layout: Layout
    ports: Ports
    binaries: Binaries
    vault_flavor: str = vault_server.DEFAULT_FLAVOR

    @classmethod
    def default(cls) -> Stack:
        """The stack of this checkout. While one runs, its recorded ports win over
        ``VSO_STACK_PORT_OFFSET``, so every shell and test run talks to the same processes.
        ``VSO_VAULT_FLAVOR`` picks the Vault when set (``up`` restarts a stack running the other
        one); unset, the running stack's flavour, else OpenBao."""
        layout = Layout.default()
        state = read_state(layout)
        recorded = state.get("ports")
        try:
            # a stack recorded before a port was added gets today's ports (it restarts anyway)
            same = isinstance(recorded, dict) and set(recorded) == set(vars(Ports()))
            ports = Ports(**recorded) if same and isinstance(recorded, dict) else Ports.default()
        except TypeError:
            ports = Ports.default()
        flavor = vault_server.flavor_from_env()
        if not os.environ.get(vault_server.FLAVOR_ENV) and state.get("vault_flavor") in vault_server.FLAVORS:
            flavor = str(state["vault_flavor"])
        return cls(layout, ports, Binaries.discover(), flavor)

    @property
    def vault(self) -> vault_server.VaultServer:
        return vault_server.VaultServer.for_stack(self.vault_flavor, self.binaries, self.layout, self.ports)

    @property
    def kube_api(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def vault_addr(self) -> str:
        return self.vault.addr

    @property
    def sts_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.emulator}"

    @property
    def emulator_admin_url(self) -> str:
        """What ``EmulatorAdmin`` takes; the admin API itself is under ``<this>/_emulator/``."""
        return self.sts_endpoint


def read_state(layout: Layout) -> dict[str, object]:
    try:
        data = json.loads(layout.state_file.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(layout: Layout, state: dict[str, object]) -> None:
    layout.state_file.write_text(json.dumps(state))
