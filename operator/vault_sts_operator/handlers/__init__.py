"""kopf handlers only: parse, call a service, report. Importing this package registers them.

AssumedRoleCredentials and the operator's Secrets have no kopf handler: the operator lists and watches
them itself (services/watch.py).
"""

from vault_sts_operator.handlers import identities, lifecycle

__all__ = ["identities", "lifecycle"]
