"""Vault access: an authenticated session per connection, and the reads the flow needs.

hvac is synchronous; callers run these methods in a worker thread. A session logs
in once, renews or logs in again before its token ends, and logs in again once
when Vault says the token is no longer valid.
"""

from __future__ import annotations

import logging
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
from vault_sts_operator.api import reasons
from vault_sts_operator.api.specs import VaultConnection
from vault_sts_operator.clients.vault_auth import AuthStrategy, Login
from vault_sts_operator.domain.credentials import AccessKey, TemporaryCredentials, TotpCode
from vault_sts_operator.domain.durations import parse_duration
from vault_sts_operator.domain.errors import VaultError
from vault_sts_operator.domain.totp import time_step

log = logging.getLogger(__name__)
T = TypeVar("T")

# Renew (or log in again) once this share of the token's lifetime has passed.
RENEW_AT_FRACTION = 2 / 3


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
        self.logins = 0

    # -- token lifecycle -------------------------------------------------------------
    def _token_fresh(self) -> bool:
        if self._login is None:
            return False
        if self._login.ttl_seconds <= 0:
            return True
        return self._clock() - self._logged_in_at < self._login.ttl_seconds * RENEW_AT_FRACTION

    def _ensure_token(self, *, force: bool = False) -> None:
        with self._lock:
            if not force and self._token_fresh():
                return
            if not force and self._login is not None and self._login.renewable and self._strategy.method != "token":
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
                f"Vault {self._strategy.method} login at {self.connection.address} failed: {_vault_messages(exc)}",
                reason=reasons.VAULT_PERMISSION_DENIED if _login_refused(exc) else reasons.VAULT_ERROR,
            ) from None
        except (requests.RequestException, OSError) as exc:
            metrics.VAULT_CALLS.labels(operation="login", outcome="error").inc()
            raise VaultError(f"Vault {self._strategy.method} login at {self.connection.address} failed: "
                             f"{type(exc).__name__}") from None
        finally:
            metrics.VAULT_LATENCY.labels(operation="login").observe(time.perf_counter() - started)
        metrics.VAULT_CALLS.labels(operation="login", outcome="ok").inc()
        self._client.token = login.token
        self._login = login
        self._logged_in_at = self._clock()
        self.logins += 1
        log.info("logged in to Vault at %s with %s auth (token ttl %ss)", self.connection.address,
                 self._strategy.method, int(login.ttl_seconds))

    def _call(self, operation: str, path: str, fn: Callable[[hvac.Client], T]) -> T:
        """Run one request; on 403 log in again once (token revoked or expired), then retry."""
        self._ensure_token()
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                result = fn(self._client)
                metrics.VAULT_CALLS.labels(operation=operation, outcome="ok").inc()
                return result
            except hvac.exceptions.Forbidden as exc:
                metrics.VAULT_CALLS.labels(operation=operation, outcome="forbidden").inc()
                if attempt == 1:  # token revoked or expired (or a token Secret replaced): log in again
                    self._ensure_token(force=True)
                    continue
                raise VaultError(f"Vault denied {operation} of {path}: {_vault_messages(exc)}",
                                 reason=reasons.VAULT_PERMISSION_DENIED, transient=False) from None
            except hvac.exceptions.InvalidPath as exc:
                metrics.VAULT_CALLS.labels(operation=operation, outcome="not_found").inc()
                raise VaultError(f"Vault has nothing at {path} ({_vault_messages(exc)})",
                                 reason=reasons.VAULT_PATH_NOT_FOUND, transient=False) from None
            except hvac.exceptions.VaultError as exc:
                metrics.VAULT_CALLS.labels(operation=operation, outcome="error").inc()
                raise VaultError(f"Vault {operation} of {path} failed: {_vault_messages(exc)}") from None
            except (requests.RequestException, OSError) as exc:
                metrics.VAULT_CALLS.labels(operation=operation, outcome="unreachable").inc()
                raise VaultError(f"Vault at {self.connection.address} unreachable during {operation} of "
                                 f"{path}: {type(exc).__name__}") from None
            finally:
                metrics.VAULT_LATENCY.labels(operation=operation).observe(time.perf_counter() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reads the issuing flow needs -------------------------------------------------
    def read_access_key(self, mount: str, path: str, id_key: str, secret_key: str) -> AccessKey:
        full = f"{mount}/data/{path}"
        response = self._call("kv_read", full, lambda c: c.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True))
        data = (response.get("data") or {}).get("data") or {}
        if id_key not in data or secret_key not in data:
            raise VaultError(f"Vault secret {full} lacks key {id_key!r} or {secret_key!r}",
                             reason=reasons.VAULT_PATH_NOT_FOUND, transient=False)
        return AccessKey(access_key_id=str(data[id_key]), secret_access_key=str(data[secret_key]))

    def totp_code(self, mount: str, key: str, default_period: int) -> TotpCode:
        path = f"{mount}/code/{key}"
        now = self._clock()
        response = self._call("totp_code", path, lambda c: c.read(path))
        if not response or "code" not in (response.get("data") or {}):
            raise VaultError(f"Vault returned no code at {path}", reason=reasons.VAULT_PATH_NOT_FOUND,
                             transient=False)
        data = response["data"]
        period = _period(data.get("period"), default_period)
        # OpenBao says when it generated the code; HashiCorp Vault does not, so our clock stands in.
        generated = float(data.get("generated") or now)
        return TotpCode(code=str(data["code"]), step=time_step(generated, period), period=period)

    def aws_session_token(self, mount: str, role: str, mfa_code: str, ttl_seconds: int) -> TemporaryCredentials:
        """Vault >= 1.16 `session_token` role: Vault calls GetSessionToken with the MFA code."""
        path = f"{mount}/creds/{role}"
        response = self._call("aws_creds", path, lambda c: c.write(path, mfa_code=mfa_code, ttl=f"{ttl_seconds}s"))
        return _credentials_from_aws_engine(response, path, ttl_seconds)

    def aws_assume_role(self, mount: str, role: str, role_arn: str, session_name: str,
                        ttl_seconds: int) -> TemporaryCredentials:
        """`aws/sts/:role` with an assumed_role role: Vault calls AssumeRole itself (no MFA)."""
        path = f"{mount}/sts/{role}"
        response = self._call("aws_sts", path, lambda c: c.write(
            path, role_arn=role_arn, role_session_name=session_name, ttl=f"{ttl_seconds}s"))
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
        raise VaultError(f"Vault returned no credentials at {path}")
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


def ca_file_for(pem: str) -> str:
    """Write a PEM bundle to a private temporary file for `requests` to verify with."""
    handle = tempfile.NamedTemporaryFile("w", prefix="vault-ca-", suffix=".pem", delete=False)  # noqa: SIM115
    with handle:
        handle.write(pem)
    return handle.name
