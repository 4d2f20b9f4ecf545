"""vault-sts-operator: MFA-backed AWS STS credentials from Vault, delivered as rotating Secrets."""

__version__ = "0.1.0"
