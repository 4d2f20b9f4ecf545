"""The emulator: one lock around all state, the STS actions, the admin operations and persistence."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors, iam, mfa, policy, protocol, sigv4, sts
from .counters import Counters
from .faults import Fault, FaultBook
from .model import (
    ACCOUNT,
    DEFAULT_ACCOUNT,
    DEFAULT_MAX_SESSION,
    DEFAULT_PARTITION,
    PARTITIONS,
    ROLE_ARN,
    USER_NAME,
    Credential,
    Kind,
    Role,
    State,
    User,
    random_id,
    random_secret,
)

Clock = Callable[[], float]


class AdminError(Exception):
    """A bad admin request; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """What an STS call produced, for the HTTP layer to render and log."""

    action: str
    caller_arn: str
    body: bytes


class Emulator:
    def __init__(self, clock: Clock = time.time, state_file: Path | None = None) -> None:
        self._lock = threading.RLock()
        self._wall_clock = clock
        self._offset = 0.0
        self._state_file = state_file
        self.state = State()
        self.counters = Counters()
        self.faults = FaultBook([])
        self.iam = iam.IamState()
        if state_file is not None and state_file.exists():
            self.state = State.from_json(json.loads(state_file.read_text()))

    # --- time ----------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's time: the wall clock plus an offset tests can advance."""
        return self._wall_clock() + self._offset

    def advance_clock(self, seconds: float) -> dict[str, float]:
        with self._lock:
            self._offset += seconds
            return self.clock_info()

    def clock_info(self) -> dict[str, float]:
        with self._lock:
            return {"now": self.now(), "offset_s": self._offset}

    # --- persistence -----------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_file is None:
            return
        data = json.dumps(self.state.to_json())
        directory = self._state_file.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".sts-state-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(data)
            Path(tmp).replace(self._state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- STS -----------------------------------------------------------------------------

    def begin_call(self, action: str, target: str = "") -> Fault | None:
        """Count the call and take the fault that applies to it, if any (before any MFA check).

        ``target`` is what the call names (RoleArn, or SerialNumber for GetSessionToken), counted before
        authentication so that faulted calls count too.
        """
        with self._lock:
            self.counters.calls[action] += 1
            if target:
                self.counters.calls_by_target[f"{action} {target}"] += 1
            return self.faults.take(action, target)

    def record_error(self, code: str) -> None:
        with self._lock:
            self.counters.errors[code] += 1

    def call(
        self, action: str, request: sigv4.SignedRequest, params: Mapping[str, str], request_id: str
    ) -> Outcome:
        with self._lock:
            now = self.now()
            cred = sts.authenticate(self.state, request, self._wall_clock(), now)
            caller = self.state.principal(cred).arn
            # Per calling principal (user name, or assumed-role ARN): tests count one identity's calls.
            self.counters.calls_by_caller[f"{action} {cred.user_name or cred.role_arn or ''}"] += 1
            try:
                if action == "GetCallerIdentity":
                    principal = sts.get_caller_identity(self.state, cred)
                    return Outcome(action, caller, protocol.render_get_caller_identity(principal, request_id))
                if action == "GetSessionToken":
                    session = sts.get_session_token(self.state, cred, params, now, self.counters)
                    return Outcome(action, caller, protocol.render_get_session_token(session, request_id))
                if action == "AssumeRole":
                    result = sts.assume_role(self.state, cred, params, now, self.counters)
                    return Outcome(action, caller, protocol.render_assume_role(result, request_id))
            except errors.STSError as exc:
                exc.caller_arn = caller
                raise
            finally:
                if action != "GetCallerIdentity":
                    self._save()
        raise errors.STSError(
            "InvalidAction", f"Could not find operation {action} for version 2011-06-15", 400
        )

    def call_iam(
        self, action: str, request: sigv4.SignedRequest, params: Mapping[str, str], request_id: str
    ) -> Outcome:
        """IAM's MFA enrolment actions (iam.py); pending devices are not persisted."""
        with self._lock:
            cred = sts.authenticate(self.state, request, self._wall_clock(), self.now(), service="iam")
            caller = self.state.principal(cred).arn
            try:
                body = iam.call(self.state, self.iam, cred, action, params, self.now())
            except errors.STSError as exc:
                exc.caller_arn = caller
                raise
            self._save()
            return Outcome(action, caller, body.replace("{request_id}", request_id).encode())

    # --- admin ---------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.state = State()
            self.counters = Counters()
            self.faults = FaultBook([])
            self.iam = iam.IamState()
            self._offset = 0.0
            self._save()

    def _user(self, name: str) -> User:
        user = self.state.users.get(name)
        if user is None:
            raise AdminError(404, f"no such user: {name}")
        return user

    def create_user(self, name: str, account: str | None = None, partition: str | None = None) -> User:
        account = account or DEFAULT_ACCOUNT
        partition = partition or DEFAULT_PARTITION
        if not USER_NAME.fullmatch(name):
            raise AdminError(400, "user name must match [\\w+=,.@-]{1,64}")
        if not ACCOUNT.fullmatch(account):
            raise AdminError(400, "account must be 12 digits")
        if partition not in PARTITIONS:
            raise AdminError(400, f"partition must be one of {', '.join(PARTITIONS)}")
        with self._lock:
            if name in self.state.users:
                raise AdminError(409, f"EntityAlreadyExists: user with name {name} already exists")
            user = User(name=name, account=account, partition=partition)
            self.state.users[name] = user
            self._save()
            return user

    def create_access_key(
        self, user_name: str, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> Credential:
        with self._lock:
            user = self._user(user_name)
            akid = access_key_id or random_id("AKIA")
            if not (16 <= len(akid) <= 128) or not akid.isalnum():
                raise AdminError(400, "AccessKeyId must be 16-128 alphanumeric characters")
            existing = self.state.credentials.get(akid)
            if existing is not None and (existing.kind is not Kind.USER or existing.user_name != user_name):
                raise AdminError(409, f"access key {akid} belongs to someone else")
            cred = Credential(
                access_key_id=akid,
                secret_access_key=secret_access_key or random_secret(),
                kind=Kind.USER,
                account=user.account,
                partition=user.partition,
                user_name=user.name,
                issued_at=self.now(),
            )
            self.state.credentials[akid] = cred
            self._save()
            return cred

    def delete_access_key(self, user_name: str, access_key_id: str) -> None:
        with self._lock:
            cred = self.state.credentials.get(access_key_id)
            if cred is None or cred.kind is not Kind.USER or cred.user_name != user_name:
                raise AdminError(404, f"no such access key for {user_name}")
            del self.state.credentials[access_key_id]
            self._save()

    def create_mfa_device(
        self, user_name: str, serial: str | None = None, seed: str | None = None, period: int | None = None
    ) -> mfa.MFADevice:
        period = period or mfa.DEFAULT_PERIOD
        if period < 1:
            raise AdminError(400, "period must be a positive integer")
        if seed is not None and not mfa.valid_seed(seed):
            raise AdminError(400, "seed must be base32 of at least 80 bits")
        with self._lock:
            user = self._user(user_name)
            serial = serial or f"arn:{user.partition}:iam::{user.account}:mfa/{user.name}"
            seed_text = mfa.normalise_seed(seed) if seed else mfa.generate_seed()
            existing = self.state.devices.get(serial)
            if existing is not None and existing.owner != user_name:
                raise AdminError(409, f"MFA device {serial} belongs to another user")
            last_step = existing.last_step if existing is not None and existing.seed == seed_text else None
            device = mfa.MFADevice(serial=serial, seed=seed_text, owner=user_name, period=period)
            if existing is not None and last_step is not None:
                device.last_step = last_step
                device.period = existing.period
                mfa.change_period(device, period)
            self.state.devices[serial] = device
            self._save()
            return device

    def set_mfa_period(self, serial: str, period: int) -> mfa.MFADevice:
        if period < 1:
            raise AdminError(400, "period must be a positive integer")
        with self._lock:
            device = self.state.devices.get(serial)
            if device is None:
                raise AdminError(404, f"no such MFA device: {serial}")
            mfa.change_period(device, period)
            self._save()
            return device

    def set_lifetime_cap(self, arn: str, seconds: int | None) -> Role:
        """Test knob: this role's credentials expire `seconds` after issue (None: as asked)."""
        if seconds is not None and seconds < 60:
            raise AdminError(400, "seconds must be at least 60")
        with self._lock:
            role = self.state.roles.get(arn)
            if role is None:
                raise AdminError(404, f"no such role: {arn}")
            role.lifetime_cap_seconds = seconds
            self._save()
            return role

    def put_role(
        self,
        arn: str,
        trusted_principals: list[str],
        *,
        require_mfa: bool = False,
        max_mfa_age_seconds: int | None = None,
        external_id: str | None = None,
        max_session_duration: int | None = None,
        trust_policy: dict[str, Any] | None = None,
    ) -> Role:
        if ROLE_ARN.fullmatch(arn) is None:
            raise AdminError(
                400, "arn must look like arn:<aws|aws-cn|aws-us-gov>:iam::<12 digits>:role/<path/name>"
            )
        max_session = max_session_duration or DEFAULT_MAX_SESSION
        if not 3600 <= max_session <= 43200:
            raise AdminError(400, "max_session_duration must be 3600..43200")
        if max_mfa_age_seconds is not None and max_mfa_age_seconds < 0:
            raise AdminError(400, "max_mfa_age_seconds must not be negative")
        if trust_policy is not None:
            try:
                policy.validate(trust_policy)
            except policy.PolicyError as exc:
                raise AdminError(400, f"trust_policy: {exc}") from None
        with self._lock:
            existing = self.state.roles.get(arn)
            role = Role(
                arn=arn,
                trusted_principals=list(trusted_principals),
                require_mfa=require_mfa,
                max_mfa_age_seconds=max_mfa_age_seconds,
                external_id=external_id,
                max_session_duration=max_session,
                trust_policy=trust_policy,
            )
            if existing is not None:
                role.role_id = existing.role_id
            self.state.roles[arn] = role
            self._save()
            return role

    def expire(self, access_key_id: str) -> Credential:
        with self._lock:
            cred = self.state.credentials.get(access_key_id)
            if cred is None or not cred.temporary:
                raise AdminError(404, f"no temporary credential {access_key_id}")
            cred.expiration = self.now() - 1.0
            self._save()
            return cred

    def credential_facts(self, access_key_id: str) -> dict[str, Any]:
        with self._lock:
            cred = self.state.credentials.get(access_key_id)
            if cred is None:
                raise AdminError(404, f"no credential {access_key_id}")
            facts = cred.public(self.state.principal(cred).arn)
            facts["expired"] = cred.expired(self.now())
            return facts

    def issued_for_role(self, role_arn: str) -> list[dict[str, Any]]:
        """Every AssumeRole credential of a role the emulator still holds, secret halves included: a test tool's
        view (leak scans look for them where they must not be)."""
        with self._lock:
            return [{"AccessKeyId": c.access_key_id, "SecretAccessKey": c.secret_access_key,
                     "SessionToken": c.session_token, "Expiration": c.expiration}
                    for c in self.state.credentials.values() if c.role_arn == role_arn]

    def counters_json(self) -> dict[str, Any]:
        with self._lock:
            return self.counters.to_json()

    def spent_codes(self) -> list[str]:
        """Codes AWS would have accepted: already spent, exposed so tests can scan logs for them."""
        with self._lock:
            return list(self.counters.spent_codes)

    def reset_counters(self) -> None:
        with self._lock:
            self.counters = Counters()

    def add_fault(self, fault: Fault) -> list[dict[str, Any]]:
        with self._lock:
            self.faults.faults.append(fault)
            return [f.to_json() for f in self.faults.faults]

    def clear_faults(self) -> None:
        with self._lock:
            self.faults = FaultBook([])

    def list_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self.faults.faults]
