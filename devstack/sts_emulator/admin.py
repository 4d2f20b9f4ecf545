"""Typed client for the emulator's admin API (``/_emulator/``); stdlib only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Literal, TypedDict, cast
from urllib.parse import quote

FaultKindName = Literal["throttle", "5xx", "latency"]


class UserInfo(TypedDict):
    arn: str
    name: str
    account: str
    user_id: str


class AccessKey(TypedDict):
    AccessKeyId: str
    SecretAccessKey: str


class MFADeviceInfo(TypedDict):
    serial: str
    seed: str
    period: int


class RoleInfo(TypedDict):
    arn: str
    role_id: str
    trusted_principals: list[str]
    require_mfa: bool
    max_mfa_age_seconds: int | None
    external_id: str | None
    max_session_duration: int
    trust_policy: dict[str, Any] | None


class AcceptedCode(TypedDict):
    serial: str
    step: int
    at: float


class CountersInfo(TypedDict):
    calls: dict[str, int]
    calls_by_caller: dict[str, int]  # "<action> <user name | role ARN>": authenticated calls only
    calls_by_target: dict[str, int]  # "<action> <RoleArn | SerialNumber>": every call, faulted ones too
    codes_accepted: int
    codes_refused: int
    codes_accepted_by_serial: dict[str, int]
    codes_refused_by_serial: dict[str, int]
    codes_reused_by_serial: dict[str, int]
    accepted_codes: list[AcceptedCode]
    errors: dict[str, int]
    issued: int


class FaultInfo(TypedDict):
    kind: str
    action: str | None
    count: int | None
    latency_s: float
    status: int
    target: str | None


class CredentialFacts(TypedDict):
    AccessKeyId: str
    kind: str
    arn: str
    account: str
    expiration: float | None
    issued_at: float | None
    mfa_authenticated: bool
    mfa_auth_time: float | None
    carries_mfa_context: bool
    expired: bool
    session_name: str | None
    source_identity: str | None
    session_tags: dict[str, str]
    transitive_tag_keys: list[str]


class ClockInfo(TypedDict):
    now: float
    offset_s: float


class EmulatorAdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class EmulatorAdmin:
    """``EmulatorAdmin("http://127.0.0.1:18790")``: every admin call of the STS emulator."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            f"{self.base_url}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            try:
                message = str(json.loads(raw).get("error", raw.decode("utf-8", "replace")))
            except ValueError:
                message = raw.decode("utf-8", "replace")
            raise EmulatorAdminError(exc.code, message) from None

    # --- lifecycle -------------------------------------------------------------------------

    def health(self) -> bool:
        return bool(self._call("GET", "health").get("ok"))

    def wait_healthy(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health():
                    return
            except (OSError, EmulatorAdminError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def reset(self) -> None:
        self._call("POST", "reset", {})

    # --- identities --------------------------------------------------------------------------

    def create_user(self, name: str, account: str | None = None, partition: str | None = None) -> UserInfo:
        body: dict[str, Any] = {"name": name}
        if account is not None:
            body["account"] = account
        if partition is not None:
            body["partition"] = partition
        return cast(UserInfo, self._call("POST", "users", body))

    def create_access_key(
        self, user: str, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> AccessKey:
        body: dict[str, Any] = {}
        if access_key_id is not None:
            body["AccessKeyId"] = access_key_id
        if secret_access_key is not None:
            body["SecretAccessKey"] = secret_access_key
        return cast(AccessKey, self._call("POST", f"users/{quote(user, safe='')}/access-keys", body))

    def delete_access_key(self, user: str, access_key_id: str) -> None:
        self._call("DELETE", f"users/{quote(user, safe='')}/access-keys/{quote(access_key_id, safe='')}")

    def create_mfa_device(
        self, user: str, serial: str | None = None, seed: str | None = None, period: int | None = None
    ) -> MFADeviceInfo:
        body: dict[str, Any] = {}
        if serial is not None:
            body["serial"] = serial
        if seed is not None:
            body["seed"] = seed
        if period is not None:
            body["period"] = period
        return cast(MFADeviceInfo, self._call("POST", f"users/{quote(user, safe='')}/mfa-devices", body))

    def set_mfa_period(self, serial: str, period: int) -> None:
        self._call("POST", "mfa-devices/period", {"serial": serial, "period": period})

    def issued_for_role(self, role_arn: str) -> list[dict[str, Any]]:
        """The role's AssumeRole credentials the emulator holds (secret halves included), for leak scans."""
        return cast(list[dict[str, Any]], self._call("POST", "issued", {"role_arn": role_arn})["credentials"])

    def set_lifetime_cap(self, arn: str, seconds: int | None) -> None:
        """Test knob: the role's AssumeRole credentials expire `seconds` after issue (None: as asked)."""
        self._call("POST", "roles/lifetime-cap", {"arn": arn, "seconds": seconds})

    def create_role(
        self,
        arn: str,
        trusted_principals: list[str],
        *,
        require_mfa: bool = False,
        max_mfa_age_seconds: int | None = None,
        external_id: str | None = None,
        max_session_duration: int | None = None,
        trust_policy: dict[str, Any] | None = None,
    ) -> RoleInfo:
        body: dict[str, Any] = {
            "arn": arn,
            "trusted_principals": trusted_principals,
            "require_mfa": require_mfa,
        }
        if max_mfa_age_seconds is not None:
            body["max_mfa_age_seconds"] = max_mfa_age_seconds
        if external_id is not None:
            body["external_id"] = external_id
        if max_session_duration is not None:
            body["max_session_duration"] = max_session_duration
        if trust_policy is not None:
            body["trust_policy"] = trust_policy
        return cast(RoleInfo, self._call("POST", "roles", body))

    # --- observation -------------------------------------------------------------------------

    def counters(self) -> CountersInfo:
        return cast(CountersInfo, self._call("GET", "counters"))

    def spent_codes(self) -> list[str]:
        """Every TOTP code the emulator accepted (already spent): for leak scans."""
        return [str(c) for c in cast(dict[str, Any], self._call("GET", "spent-codes"))["codes"]]

    def reset_counters(self) -> None:
        self._call("POST", "counters/reset", {})

    def credential(self, access_key_id: str) -> CredentialFacts:
        return cast(CredentialFacts, self._call("GET", f"credentials/{quote(access_key_id, safe='')}"))

    def expire(self, access_key_id: str) -> None:
        self._call("POST", "expire", {"access_key_id": access_key_id})

    # --- faults and time ------------------------------------------------------------------------

    def add_fault(
        self,
        kind: FaultKindName,
        *,
        action: str | None = None,
        count: int | None = None,
        latency_s: float | None = None,
        status: int | None = None,
        target: str | None = None,
    ) -> list[FaultInfo]:
        body: dict[str, Any] = {"kind": kind}
        if target is not None:
            body["target"] = target
        if action is not None:
            body["action"] = action
        if count is not None:
            body["count"] = count
        if latency_s is not None:
            body["latency_s"] = latency_s
        if status is not None:
            body["status"] = status
        return cast(list[FaultInfo], self._call("POST", "faults", body)["faults"])

    def faults(self) -> list[FaultInfo]:
        return cast(list[FaultInfo], self._call("GET", "faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def clock(self) -> ClockInfo:
        return cast(ClockInfo, self._call("GET", "clock"))

    def advance_clock(self, seconds: float) -> ClockInfo:
        """Move the emulator's clock (credential expiry, TOTP steps, MFA age) forward."""
        return cast(ClockInfo, self._call("POST", "clock/advance", {"seconds": seconds}))
