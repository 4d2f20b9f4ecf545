"""Parameter constraints of the STS service model, with AWS's ValidationError wording."""

from __future__ import annotations

import re
from collections.abc import Mapping

from . import errors

ROLE_SESSION_NAME = r"[\w+=,.@-]*"
SERIAL_NUMBER = r"[\w+=/:,.@-]*"
TOKEN_CODE = r"[\d]*"
EXTERNAL_ID = r"[\w+=,.@:\/-]*"
SOURCE_IDENTITY = r"[\w+=,.@-]*"
ARN_CHARS = r"[\u0009\u000A\u000D\u0020-\u007E\u0085\u00A0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]+"
POLICY_CHARS = r"[\u0009\u000A\u000D\u0020-\u00FF]+"
TAG_KEY = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+"
TAG_VALUE = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*"
FAILED = "failed to satisfy constraint"
_TAG_KEY_RE = re.compile(r"[\w\s.:/=+\-@]+")
_TAG_VALUE_RE = re.compile(r"[\w\s.:/=+\-@]*")


class Checker:
    """Collects constraint violations; ``done()`` raises one ValidationError listing them all."""

    def __init__(self, params: Mapping[str, str]) -> None:
        self.params = params
        self.problems: list[str] = []

    def _value(self, field: str, value: str, echo: bool) -> str:
        return f"Value '{value}' at '{field}'" if echo else f"Value at '{field}'"

    def string(
        self,
        name: str,
        field: str,
        *,
        required: bool = False,
        min_len: int | None = None,
        max_len: int | None = None,
        pattern: str | None = None,
        regex: re.Pattern[str] | None = None,
        echo: bool = True,
        value: str | None = None,
    ) -> str | None:
        if value is None:
            value = self.params.get(name)
        if value is None:
            if required:
                self.problems.append(f"Value null at '{field}' {FAILED}: Member must not be null")
            return None
        where = self._value(field, value, echo)
        if min_len is not None and len(value) < min_len:
            self.problems.append(
                f"{where} {FAILED}: Member must have length greater than or equal to {min_len}"
            )
        if max_len is not None and len(value) > max_len:
            self.problems.append(
                f"{where} {FAILED}: Member must have length less than or equal to {max_len}"
            )
        if pattern is not None:
            compiled = regex or re.compile(pattern, re.ASCII if "\\w" in pattern or "\\d" in pattern else 0)
            if compiled.fullmatch(value) is None:
                self.problems.append(
                    f"{where} {FAILED}: Member must satisfy regular expression pattern: {pattern}"
                )
        return value

    def integer(self, name: str, field: str, *, low: int, high: int) -> int | None:
        raw = self.params.get(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"Value '{raw}' at '{field}' {FAILED}: Member must be an integer")
            return None
        if value < low:
            self.problems.append(
                f"Value '{value}' at '{field}' {FAILED}: "
                f"Member must have value greater than or equal to {low}"
            )
        elif value > high:
            self.problems.append(
                f"Value '{value}' at '{field}' {FAILED}: "
                f"Member must have value less than or equal to {high}"
            )
        return value

    def count(self, field: str, items: int, *, max_items: int) -> None:
        if items > max_items:
            self.problems.append(
                f"Value at '{field}' {FAILED}: Member must have length less than or equal to {max_items}"
            )

    def tag_key(self, field: str, value: str) -> None:
        self.string("", field, min_len=1, max_len=128, pattern=TAG_KEY, regex=_TAG_KEY_RE, value=value)

    def tag_value(self, field: str, value: str) -> None:
        self.string("", field, max_len=256, pattern=TAG_VALUE, regex=_TAG_VALUE_RE, value=value)

    def done(self) -> None:
        if self.problems:
            raise errors.validation_errors(self.problems)

    # shared by GetSessionToken and AssumeRole
    def mfa(self) -> tuple[str | None, str | None]:
        serial = self.string("SerialNumber", "serialNumber", min_len=9, max_len=256, pattern=SERIAL_NUMBER)
        code = self.string("TokenCode", "tokenCode", min_len=6, max_len=6, pattern=TOKEN_CODE, echo=False)
        return serial, code
