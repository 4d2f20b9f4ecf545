"""kopf handlers only: parse, call a service, report. Importing this package registers them."""

from vault_sts_operator.handlers import credentials, identities, lifecycle, secrets

__all__ = ["credentials", "identities", "lifecycle", "secrets"]
