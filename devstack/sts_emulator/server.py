"""HTTP front: the STS Query API at ``/`` and the admin API under ``/_emulator/``."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from . import errors, iam, protocol, sigv4, sts
from .emulator import AdminError, Emulator
from .faults import Fault, FaultKind

log = logging.getLogger("sts_emulator")

ADMIN_PREFIX = "/_emulator/"
MAX_BODY = 1 << 20


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        super().__init__(address, Handler)
        self.emulator = emulator


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stalls
    server_version = "sts-emulator"
    server: EmulatorServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own access log: it would print raw request lines."""

    # --- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, request_id: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if request_id is not None:
            self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._json(413, {"error": "request body too large or malformed"})
            return
        if parts.path.startswith(ADMIN_PREFIX):
            self._admin(parts.path[len(ADMIN_PREFIX) :], body)
        else:
            self._sts(parts.path, parts.query, body)

    # --- STS -----------------------------------------------------------------------------

    def _sts(self, path: str, query: str, body: bytes) -> None:
        emulator = self.server.emulator
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        action = "-"
        caller = "-"
        is_iam = False
        try:
            if self.command not in ("GET", "POST"):
                raise errors.STSError("InvalidAction", f"Unsupported method {self.command}", 400)
            params = protocol.parse_params(query, body, self.headers.get("Content-Type", ""))
            action = params.get("Action", "")
            if not action:
                raise errors.STSError("MissingAction", "Missing Action", 400)
            version = params.get("Version", protocol.API_VERSION)
            is_iam = version == iam.API_VERSION and action in iam.ACTIONS  # MFA enrolment (iam.py)
            if not is_iam and (action not in sts.ACTIONS or version != protocol.API_VERSION):
                raise errors.STSError(
                    "InvalidAction", f"Could not find operation {action} for version {version}", 400
                )
            fault = emulator.begin_call(action, params.get("RoleArn") or params.get("SerialNumber") or "")
            if fault is not None:
                if fault.kind is FaultKind.THROTTLE:
                    raise errors.throttling()
                if fault.kind is FaultKind.SERVER_ERROR:
                    raise errors.internal_failure(fault.status)
            headers = {name.lower(): ",".join(self.headers.get_all(name) or []) for name in self.headers}
            request = sigv4.SignedRequest(self.command, path, query, headers, body)
            outcome = (emulator.call_iam(action, request, params, request_id) if is_iam
                       else emulator.call(action, request, params, request_id))
            if fault is not None and fault.latency_s > 0:
                # As on the wire: AWS checks the request (and spends its MFA code) when it arrives; the
                # latency delays the answer. A client gone meanwhile never learns that its code was spent.
                time.sleep(fault.latency_s)
            caller = outcome.caller_arn
            self._send(200, outcome.body, "text/xml", request_id)
            result = "OK"
            status = 200
        except errors.STSError as exc:
            caller = exc.caller_arn or caller
            emulator.record_error(exc.code)
            render = iam.render_error if is_iam else protocol.render_error
            self._send(exc.status, render(exc, request_id), "text/xml", request_id)
            result = exc.code
            status = exc.status
        log.info(
            "sts action=%s caller=%s status=%d result=%s ms=%d request_id=%s",
            action or "-",
            caller,
            status,
            result,
            int((time.monotonic() - started) * 1000),
            request_id,
        )

    # --- admin ---------------------------------------------------------------------------

    def _admin(self, route: str, body: bytes) -> None:
        status = 200
        try:
            if not _is_loopback(self.client_address[0]):
                raise AdminError(403, "the admin API answers loopback clients only")
            payload: dict[str, Any] = {}
            if body:
                loaded = json.loads(body)
                if not isinstance(loaded, dict):
                    raise AdminError(400, "body must be a JSON object")
                payload = loaded
            result = self._admin_route(self.command, route.rstrip("/"), payload)
        except AdminError as exc:
            status = exc.status
            result = {"error": exc.message}
        except (ValueError, TypeError, KeyError) as exc:
            status = 400
            result = {"error": f"bad request: {type(exc).__name__}: {exc}"}
        self._json(status, result)
        log.info("admin %s /_emulator/%s status=%d", self.command, route, status)

    def _admin_route(self, method: str, route: str, body: dict[str, Any]) -> Any:
        emulator = self.server.emulator
        segments = [unquote(s) for s in route.split("/")] if route else []
        match (method, segments):
            case ("GET", ["health"]):
                return {"ok": True}
            case ("POST", ["reset"]):
                emulator.reset()
                return {"ok": True}
            case ("POST", ["users"]):
                user = emulator.create_user(str(body["name"]), body.get("account"), body.get("partition"))
                return {"arn": user.arn, "name": user.name, "account": user.account, "user_id": user.user_id}
            case ("POST", ["users", name, "access-keys"]):
                cred = emulator.create_access_key(name, body.get("AccessKeyId"), body.get("SecretAccessKey"))
                return {"AccessKeyId": cred.access_key_id, "SecretAccessKey": cred.secret_access_key}
            case ("DELETE", ["users", name, "access-keys", akid]):
                emulator.delete_access_key(name, akid)
                return {"ok": True}
            case ("POST", ["users", name, "mfa-devices"]):
                device = emulator.create_mfa_device(
                    name, body.get("serial"), body.get("seed"), _opt_int(body.get("period"))
                )
                return {"serial": device.serial, "seed": device.seed, "period": device.period}
            case ("POST", ["mfa-devices", "period"]):
                device = emulator.set_mfa_period(str(body["serial"]), int(body["period"]))
                return {"serial": device.serial, "period": device.period}
            case ("POST", ["issued"]):
                return {"credentials": emulator.issued_for_role(str(body["role_arn"]))}
            case ("POST", ["roles", "lifetime-cap"]):
                role = emulator.set_lifetime_cap(str(body["arn"]), _opt_int(body.get("seconds")))
                return {"arn": role.arn, "lifetime_cap_seconds": role.lifetime_cap_seconds}
            case ("POST", ["roles"]):
                trusted = body.get("trusted_principals", [])
                if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
                    raise AdminError(400, "trusted_principals must be a list of strings")
                role = emulator.put_role(
                    arn=str(body["arn"]),
                    trusted_principals=trusted,
                    require_mfa=bool(body.get("require_mfa", False)),
                    max_mfa_age_seconds=_opt_int(body.get("max_mfa_age_seconds")),
                    external_id=body.get("external_id"),
                    max_session_duration=_opt_int(body.get("max_session_duration")),
                    trust_policy=_opt_policy(body.get("trust_policy")),
                )
                return {
                    "arn": role.arn,
                    "role_id": role.role_id,
                    "trusted_principals": role.trusted_principals,
                    "require_mfa": role.require_mfa,
                    "max_mfa_age_seconds": role.max_mfa_age_seconds,
                    "external_id": role.external_id,
                    "max_session_duration": role.max_session_duration,
                    "trust_policy": role.trust_policy,
                }
            case ("GET", ["counters"]):
                return emulator.counters_json()
            case ("GET", ["spent-codes"]):
                return {"codes": emulator.spent_codes()}
            case ("POST", ["counters", "reset"]):
                emulator.reset_counters()
                return {"ok": True}
            case ("GET", ["faults"]):
                return {"faults": emulator.list_faults()}
            case ("POST", ["faults"]):
                return {"faults": emulator.add_fault(Fault.from_json(body))}
            case ("DELETE", ["faults"]):
                emulator.clear_faults()
                return {"ok": True}
            case ("POST", ["expire"]):
                cred = emulator.expire(str(body["access_key_id"]))
                return {"AccessKeyId": cred.access_key_id, "expiration": cred.expiration}
            case ("GET", ["credentials", akid]):
                return emulator.credential_facts(akid)
            case ("GET", ["clock"]):
                return emulator.clock_info()
            case ("POST", ["clock", "advance"]):
                return emulator.advance_clock(float(body["seconds"]))
        raise AdminError(int(HTTPStatus.NOT_FOUND), f"no admin route {method} /_emulator/{route}")


_INT = re.compile(r"-?\d+")


def _opt_policy(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise AdminError(400, "trust_policy must be a JSON object (an IAM policy document)")
    return value


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise AdminError(400, "expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    raise AdminError(400, "expected an integer")
