"""Condition and Event reasons (defined in domain/reasons.py, which the domain's errors use)."""

from vault_sts_operator.domain.reasons import *  # noqa: F403
