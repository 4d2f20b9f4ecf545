"""The Pod Identity node agent: serves the AWS SDKs' container-credentials protocol on each node and forwards
each pod's token to the operator, which alone reviews tokens and holds credentials (docs/design/pod-identity.md,
section 7).

It imports only `domain/`, `logsetup` and itself (an import-linter contract): nothing that talks to Vault, STS or
the Kubernetes API can be linked into the node's process, and its memory stays small (one agent per node).
"""
