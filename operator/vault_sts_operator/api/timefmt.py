"""RFC 3339 timestamps (defined in domain/timefmt.py)."""

from vault_sts_operator.domain.timefmt import format_time, parse_time

__all__ = ["format_time", "parse_time"]
