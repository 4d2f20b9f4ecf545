"""Vault access: an authenticated session per connection, and the reads the flow needs.

hvac is synchronous; callers run these methods in a worker thread. A session logs
in once, renews or logs in again before its token ends, and logs in again once
when Vault says the token is no longer valid.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from vault_sts_operator import metrics
from vault_sts_operator.api.specs import VaultConnection
from vault_sts_operator.clients.vault_auth import AuthStrategy, Login
from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.credentials import AccessKey, TemporaryCredentials, TotpCode
from vault_sts_operator.domain.durations import parse_duration
from vault_sts_operator.domain.errors import MfaCodeRejectedError, VaultError
from vault_sts_operator.domain.totp import step_of_fetch

log = logging.getLogger(__name__)
T = TypeVar("T")

# Renew (or log in again) once this share of the token's lifetime has passed.
RENEW_AT_FRACTION = 2 / 3
# Codes read again when a read straddled a TOTP period boundary (HashiCorp Vault reports no generation time).
AMBIGUOUS_CODE_ATTEMPTS = 3


# What each operation reads, as a tenant may be told it: no Vault address, path or key (docs/security.md).
_SUBJECTS = {
    "login": "the operator's Vault login for the identity",
    "kv_read": "the identity's access key",
    "totp_code": "the identity's MFA code",
    "aws_creds": "the identity's MFA session from Vault's AWS engine",
    "aws_sts": "credentials from the identity's Vault AWS engine",
}


def _subject(operation: str) -> str:
    return _SUBJECTS.get(operation, "a Vault read for the identity")


# Both flavours wrap some errors in go-multierror's text ("1 error occurred:\n\t* permission denied\n\n"),
# others not ("permission denied"), and not in the same places: see docs/vault-flavours.md.
_MULTIERROR = re.compile(r"^\d+ errors? occurred:\s*")


def _vault_messages(exc: hvac.exceptions.VaultError) -> str:
    """Vault's error messages on one line, whichever Vault and whichever wrapping."""
    messages: list[str] = []
    for error in getattr(exc, "errors", None) or []:
        for line in _MULTIERROR.sub("", str(error)).split("\n"):
            item = line.strip().removeprefix("* ").strip()
            if item and item not in messages:
                messages.append(item)
    return "; ".join(messages)[:300] or type(exc).__name__


def _login_refused(exc: hvac.exceptions.VaultError) -> bool:
    """A login Vault refused (bad role, unbound ServiceAccount, wrong SecretID): 403 on some paths and
    flavours, 400 on others (docs/vault-flavours.md). Either way, a permission problem, not an outage."""
    return isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.InvalidRequest)


class VaultSession:
    """One authenticated client for one Vault connection (shared by every CR that uses it)."""

    def __init__(
        self,
        connection: VaultConnection,
        strategy: AuthStrategy,
        *,
        verify: bool | str = True,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self._strategy = strategy
        self._clock = clock
        self._client = hvac.Client(url=connection.address, namespace=connection.namespace or None,
                                   verify=verify, timeout=timeout)
        self._lock = threading.Lock()
        self._login: Login | None = None
        self._logged_in_at = 0.0
        self._generation = 0  # bumped by every login: which token a refusal was for
        self._denied: dict[str, int] = {}  # path -> token generation that Vault's policy refused it

    # -- token lifecycle -------------------------------------------------------------
    def _token_fresh(self) -> bool:
        if self._login is None:
            return False
        if self._login.ttl_seconds <= 0:
            return True
        return self._clock() - self._logged_in_at < self._login.ttl_seconds * RENEW_AT_FRACTION

    def _ensure_token(self) -> None:
        with self._lock:
            if self._token_fresh():
                return
            if self._login is not None and self._login.renewable and self._strategy.method != "token":
                try:
                    renewed = self._client.auth.token.renew_self()
                    self._login = Login(token=self._login.token,
                                        ttl_seconds=float(renewed["auth"].get("lease_duration") or 0),
                                        renewable=bool(renewed["auth"].get("renewable")))
                    self._logged_in_at = self._clock()
                    return
                except (hvac.exceptions.VaultError, requests.RequestException):
                    log.info("vault token renewal failed; logging in again (%s)", self.connection.address)
            self._do_login()

    def _do_login(self) -> None:
        started = time.perf_counter()
        try:
            login = self._strategy.login(self._client)
        except hvac.exceptions.VaultError as exc:
            metrics.VAULT_CALLS.labels(operation="login", outcome="error").inc()
            raise VaultError(
                f"{_subject('login')} failed ({self._strategy.method} auth refused)",
                reason=reasons.VAULT_PERMISSION_DENIED if _login_refused(exc) else reasons.VAULT_ERROR,
                detail=f"Vault {self._strategy.method} login at {self.connection.address} failed: "
                       f"{_vault_messages(exc)}",
            ) from None
        except (requests.RequestException, OSError) as exc:
            metrics.VAULT_CALLS.labels(operation="login", outcome="error").inc()
            raise VaultError(f"{_subject('login')} failed: Vault unreachable ({type(exc).__name__})",
                             detail=f"Vault {self._strategy.method} login at {self.connection.address} failed: "
                                    f"{type(exc).__name__}") from None
        finally:
            metrics.VAULT_LATENCY.labels(operation="login").observe(time.perf_counter() - started)
        metrics.VAULT_CALLS.labels(operation="login", outcome="ok").inc()
        self._client.token = login.token
        self._login = login
        self._logged_in_at = self._clock()
        self._generation += 1
        log.info("logged in to Vault at %s with %s auth (token ttl %ss)", self.connection.address,
                 self._strategy.method, int(login.ttl_seconds))

    def _call(self, operation: str, path: str, fn: Callable[[hvac.Client], T], *, idempotent: bool = False) -> T:
        """Run one request, mapping Vault's answers to IssuingErrors.

        On 403, log in again once and retry, unless this token generation was already refused
        this path (a policy denial, not a stale token: logging in again each pass would not help).
        Only one thread logs in for a token that stopped working; the others retry with the new one.
        An idempotent read whose keep-alive connection was closed by the server or a proxy is
        retried once on a fresh connection; writes (which may carry a TOTP code) never are.
        """
        self._ensure_token()
        relogged = reconnected = False
        while True:
            generation = self._generation
            started = time.perf_counter()
            try:
                result = fn(self._client)
                metrics.VAULT_CALLS.labels(operation=operation, outcome="ok").inc()
                return result
            except hvac.exceptions.Forbidden as exc:
                metrics.VAULT_CALLS.labels(operation=operation, outcome="forbidden").inc()
                with self._lock:
                    denied_before = self._denied.get(path) == generation
                if not relogged and not denied_before:
                    relogged = True
                    self._relogin_after_refusal(generation)
                    continue
                with self._lock:
                    self._denied[path] = self._generation
                raise VaultError(f"{_subject(operation)} could not be read: Vault denied access",
                                 reason=reasons.VAULT_PERMISSION_DENIED, transient=False,
                                 detail=f"Vault denied {operation} of {path}: {_vault_messages(exc)}") from None
            except hvac.exceptions.InvalidPath as exc:
                metrics.VAULT_CALLS.labels(operation=operation, outcome="not_found").inc()
                raise VaultError(f"{_subject(operation)} could not be read: Vault has nothing there",
                                 reason=reasons.VAULT_PATH_NOT_FOUND, transient=False,
                                 detail=f"Vault has nothing at {path} ({_vault_messages(exc)})") from None
            except hvac.exceptions.VaultError as exc:
                metrics.VAULT_CALLS.labels(operation=operation, outcome="error").inc()
                raise VaultError(f"{_subject(operation)} could not be read: Vault returned an error",
                                 detail=f"Vault {operation} of {path} failed: {_vault_messages(exc)}") from None
            except (requests.RequestException, OSError) as exc:
                if idempotent and not reconnected and isinstance(exc, requests.ConnectionError):
                    reconnected = True
                    metrics.VAULT_CALLS.labels(operation=operation, outcome="retried").inc()
                    continue
                metrics.VAULT_CALLS.labels(operation=operation, outcome="unreachable").inc()
                raise VaultError(f"{_subject(operation)} could not be read: Vault unreachable ({type(exc).__name__})",
                                 detail=f"Vault at {self.connection.address} unreachable during {operation} of "
                                        f"{path}: {type(exc).__name__}") from None
            finally:
                metrics.VAULT_LATENCY.labels(operation=operation).observe(time.perf_counter() - started)

    def _relogin_after_refusal(self, generation: int) -> None:
        """Log in again, unless another thread already did since `generation` was current."""
        with self._lock:
            if self._generation == generation:
                self._do_login()

    def ensure_login(self) -> None:
        """Log in now if there is no fresh token (`check-identity`: the login alone, no read)."""
        self._ensure_token()

    # -- reads the issuing flow needs -------------------------------------------------
    def read_access_key(self, mount: str, path: str, id_key: str, secret_key: str) -> AccessKey:
        full = f"{mount}/data/{path}"
        response = self._call("kv_read", full, lambda c: c.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True), idempotent=True)
        data = (response.get("data") or {}).get("data") or {}
        if id_key not in data or secret_key not in data:
            raise VaultError("the identity's access key could not be read: the Vault secret lacks the configured keys",
                             reason=reasons.VAULT_PATH_NOT_FOUND, transient=False,
                             detail=f"Vault secret {full} lacks key {id_key!r} or {secret_key!r}")
        return AccessKey(access_key_id=str(data[id_key]), secret_access_key=str(data[secret_key]))

    def totp_code(self, mount: str, key: str, default_period: int) -> TotpCode:
        path = f"{mount}/code/{key}"
        for _ in range(AMBIGUOUS_CODE_ATTEMPTS):
            before = self._clock()
            response = self._call("totp_code", path, lambda c: c.read(path), idempotent=True)
            after = self._clock()
            if not response or "code" not in (response.get("data") or {}):
                raise VaultError("the identity's MFA code could not be read: Vault returned no code",
                                 reason=reasons.VAULT_PATH_NOT_FOUND, transient=False,
                                 detail=f"Vault returned no code at {path}")
            data = response["data"]
            period = _period(data.get("period"), default_period)
            # OpenBao says when it generated the code; HashiCorp Vault does not (see step_of_fetch).
            generated = float(data["generated"]) if data.get("generated") else None
            step = step_of_fetch(before=before, after=after, period=period, generated=generated)
            if step is not None:
                return TotpCode(code=str(data["code"]), step=step, period=period)
            metrics.VAULT_CALLS.labels(operation="totp_code", outcome="ambiguous_step").inc()
            log.info("dropped a TOTP code read across a period boundary (its step is ambiguous)")
        raise VaultError("the identity's MFA code could not be read: every code read crossed a period boundary",
                         detail=f"{AMBIGUOUS_CODE_ATTEMPTS} codes read from {path} crossed a period boundary "
                                "(Vault answers slower than the TOTP period allows)")

    def aws_session_token(self, mount: str, role: str, mfa_code: str, ttl_seconds: int) -> TemporaryCredentials:
        """Vault >= 1.16 `session_token` role: Vault calls GetSessionToken with the MFA code."""
        path = f"{mount}/creds/{role}"
        try:
            response = self._call("aws_creds", path,
                                  lambda c: c.write(path, mfa_code=mfa_code, ttl=f"{ttl_seconds}s"))
        except VaultError as exc:
            if "invalid MFA one time pass code" in exc.detail:  # AWS's answer, passed on by Vault
                raise MfaCodeRejectedError("AWS refused the MFA code passed through Vault's AWS engine",
                                           detail=exc.detail) from None
            raise
        return _credentials_from_aws_engine(response, path, ttl_seconds)

    def aws_assume_role(self, mount: str, role: str, role_arn: str, session_name: str,
                        ttl_seconds: int) -> TemporaryCredentials:
        """`aws/sts/:role` with an assumed_role role: Vault calls AssumeRole itself (no MFA)."""
        path = f"{mount}/sts/{role}"
        try:
            response = self._call("aws_sts", path, lambda c: c.write(
                path, role_arn=role_arn, role_session_name=session_name, ttl=f"{ttl_seconds}s"))
        except VaultError as exc:
            if "AccessDenied" in exc.detail:
                hint = (" (credentialType assumedRole: Vault calls AssumeRole without MFA, "
                        "so a role whose trust policy demands MFA refuses it)")
                raise VaultError(f"{exc.message}: AccessDenied{hint}", reason=reasons.ACCESS_DENIED, transient=False,
                                 detail=exc.detail + hint) from None
            raise
        return _credentials_from_aws_engine(response, path, ttl_seconds)


def _period(raw: Any, default: int) -> int:
    """Vault reports the period as seconds (30) or a duration ("30s")."""
    if raw in (None, ""):
        return default
    if isinstance(raw, int | float):
        return int(raw)
    try:
        return int(parse_duration(str(raw))) if not str(raw).isdigit() else int(str(raw))
    except ValueError:
        return default


def _credentials_from_aws_engine(response: Any, path: str, ttl_seconds: int) -> TemporaryCredentials:
    data = (response or {}).get("data") or {}
    if not data.get("access_key") or not data.get("secret_key"):
        raise VaultError("the identity's Vault AWS engine returned no credentials",
                         detail=f"Vault returned no credentials at {path}")
    # The lifetime is in the response: the engine's own `ttl` (seconds left on the STS credentials), else
    # the lease's duration. STS credentials are not renewable, and some Vault versions register no lease for
    # them at all (vault#15869: lease_id "", lease_duration 0), so nothing waits on or renews a lease.
    lifetime = int(data.get("ttl") or (response or {}).get("lease_duration") or ttl_seconds)
    expiration = datetime.now(UTC) + timedelta(seconds=lifetime)
    if data.get("expiration"):
        expiration = datetime.fromisoformat(str(data["expiration"]).replace("Z", "+00:00"))
    return TemporaryCredentials(
        access_key_id=str(data["access_key"]), secret_access_key=str(data["secret_key"]),
        session_token=str(data.get("session_token") or data.get("security_token") or ""),
        expiration=expiration, assumed_role_arn=str(data.get("arn") or ""),
    )


_CA_FILES: dict[str, str] = {}
_CA_LOCK = threading.Lock()


def ca_file_for(pem: str) -> str:
    """A private file holding this PEM bundle, for `requests` to verify with (it takes paths only).

    One file per distinct bundle for the life of the process, however many sessions use it or
    are (re)created with it; removed when the process exits.
    """
    digest = hashlib.sha256(pem.encode()).hexdigest()
    with _CA_LOCK:
        path = _CA_FILES.get(digest)
        if path is not None and os.path.exists(path):
            return path
        fd, path = tempfile.mkstemp(prefix="vault-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
        _CA_FILES[digest] = path
        return path


@atexit.register
def _remove_ca_files() -> None:
    for path in _CA_FILES.values():
        with contextlib.suppress(OSError):
            os.unlink(path)
