"""Make the github.com/hashicorp/vault v1.21.4 tree compile against a published github.com/hashicorp/vault/sdk.

Vault's release builds compile the tree against its own ./sdk directory (a replace directive in its go.mod,
ignored for a dependency). That in-tree sdk of the release/1.21.x branch was never published: the proxy
refuses it ("github.com/hashicorp/vault/sdk@ffe7023c...: 403 Forbidden: This module version is not
available"), and no published sdk matches the tree on both sides: it calls LockManager.RestorePolicy as
returning (name, error) (sdk >= v0.24.0) and framework.Backend.ActivationFunc with two arguments (every sdk
from v0.21.0 takes three). With sdk v0.21.0 (what v1.21.4's go.mod requires) three lines differ; each edit
below adapts a call site without changing what Vault does for the stack (transit key restore and the identity
deduplication activation flag, neither of which the stack uses).

Usage: python3 sdk_skew.py <copy of the module>   (devstack/build_vault_server.sh runs it; fails loudly if a
line is not found exactly once, e.g. for another Vault version.)
"""

from __future__ import annotations

import sys
from pathlib import Path

EDITS = [
    ("builtin/logical/transit/path_restore.go",
     "restoredKeyName, err := b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)",
     "restoredKeyName, err := keyName, b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)"),
    ("vault/identity_store_util.go",
     "func (i *IdentityStore) activateDeduplication(ctx context.Context, req *logical.Request) error {",
     "func (i *IdentityStore) activateDeduplication(ctx context.Context, req *logical.Request, _ string) error {"),
    ("vault/logical_system_activation_flags.go",
     "if err := b.idStoreBackend.ActivationFunc(ctx, nil); err != nil {",
     'if err := b.idStoreBackend.ActivationFunc(ctx, nil, ""); err != nil {'),
]


def main(root: Path) -> None:
    for rel, old, new in EDITS:
        path = root / rel
        text = path.read_text()
        if text.count(old) != 1:
            sys.exit(f"sdk_skew.py: {rel}: expected the line once, found it {text.count(old)} times: {old}")
        path.write_text(text.replace(old, new))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
