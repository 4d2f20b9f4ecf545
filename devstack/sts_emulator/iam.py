"""The two IAM actions MFA enrolment needs: CreateVirtualMFADevice and EnableMFADevice.

AWS Query protocol, API version 2010-05-08 (botocore's ``iam`` client with ``endpoint_url`` pointed
at the emulator). Errors carry AWS's codes: EntityAlreadyExists (409), NoSuchEntity (404),
InvalidAuthenticationCode (403), ValidationError (400), LimitExceeded (409, one device per user
here). The caller must sign with a long-term key of any emulated user (the emulator has no IAM
permission model). A created device waits unassigned (not persisted) until EnableMFADevice proves
two consecutive codes; it then belongs to the user and STS checks codes against it.
Also DeactivateMFADevice and DeleteVirtualMFADevice, so a failed enrolment can be undone.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from . import mfa
from .errors import STSError
from .model import Credential, State

API_VERSION = "2010-05-08"
NAMESPACE = "https://iam.amazonaws.com/doc/2010-05-08/"
ACTIONS = frozenset({"CreateVirtualMFADevice", "EnableMFADevice", "DeactivateMFADevice",
                     "DeleteVirtualMFADevice"})
DEVICE_NAME = re.compile(r"[\w+=,.@-]{1,226}")
PATH = re.compile(r"(\u002F)|(\u002F[\u0021-\u007E]+\u002F)")
CODE = re.compile(r"[\d]{6}")


@dataclass
class PendingDevice:
    serial: str
    seed: str


@dataclass
class IamState:
    """Virtual devices created and not yet enabled, by serial."""

    pending: dict[str, PendingDevice] = field(default_factory=dict)


def _error(code: str, message: str, status: int) -> STSError:
    return STSError(code, message, status)


def _validation(message: str) -> STSError:
    return _error("ValidationError", message, 400)


def _require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise _validation(f"1 validation error detected: Value null at '{name[0].lower() + name[1:]}' "
                          "failed to satisfy constraint: Member must not be null")
    return value


def _caller(cred: Credential) -> tuple[str, str]:
    """The caller's account and partition: devices and users are looked up in that account."""
    return cred.account, cred.partition


def envelope(action: str, result: str) -> str:
    inner = f"  <{action}Result>\n{result}  </{action}Result>\n" if result else ""
    return (f'<{action}Response xmlns="{NAMESPACE}">\n{inner}'
            "  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n"
            f"</{action}Response>\n")


def call(state: State, iam: IamState, cred: Credential, action: str, params: Mapping[str, str],
         now: float) -> str:
    """Run one IAM action; returns the XML body with a ``{request_id}`` placeholder."""
    account, partition = _caller(cred)
    if action == "CreateVirtualMFADevice":
        name = _require(params, "VirtualMFADeviceName")
        path = params.get("Path") or "/"
        if not DEVICE_NAME.fullmatch(name):
            raise _validation("1 validation error detected: Value at 'virtualMFADeviceName' failed to satisfy "
                              "constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+")
        if not PATH.fullmatch(path):
            raise _validation("The specified value for path is invalid. It must begin and end with / and "
                              "contain only alphanumeric characters and/or / characters.")
        serial = f"arn:{partition}:iam::{account}:mfa{path}{name}"
        if serial in iam.pending or serial in state.devices:
            raise _error("EntityAlreadyExists", "MFADevice entity at the same path and name already exists.", 409)
        seed = mfa.generate_seed()
        iam.pending[serial] = PendingDevice(serial=serial, seed=seed)
        blob = base64.b64encode(seed.encode()).decode()
        return envelope(action, "    <VirtualMFADevice>\n"
                                f"      <SerialNumber>{escape(serial)}</SerialNumber>\n"
                                f"      <Base32StringSeed>{blob}</Base32StringSeed>\n"
                                "    </VirtualMFADevice>\n")
    if action == "EnableMFADevice":
        user_name = _require(params, "UserName")
        serial = _require(params, "SerialNumber")
        codes = (_require(params, "AuthenticationCode1"), _require(params, "AuthenticationCode2"))
        for index, code in enumerate(codes, 1):
            if not CODE.fullmatch(code):
                raise _validation(f"1 validation error detected: Value at 'authenticationCode{index}' failed to "
                                  "satisfy constraint: Member must satisfy regular expression pattern: [\\d]+")
        user = state.users.get(user_name)
        if user is None or user.account != account:
            raise _error("NoSuchEntity", f"The user with name {user_name} cannot be found.", 404)
        if serial in state.devices:
            raise _error("EntityAlreadyExists", "MFA Device is already in use.", 409)
        pending = iam.pending.get(serial)
        if pending is None:
            raise _error("NoSuchEntity", f"VirtualMFADevice with serial number {serial} doesn't exist.", 404)
        if any(device.owner == user_name for device in state.devices.values()):
            raise _error("LimitExceeded", "Cannot exceed quota for UsersPerMFADevice: 1", 409)
        device = mfa.MFADevice(serial=serial, seed=pending.seed, owner=user_name)
        first = mfa.check_code(device, codes[0], now)
        if first.step is None:
            raise _error("InvalidAuthenticationCode", "Authentication code for device is not valid.", 403)
        # The second code must be the very next time step (AWS: "two consecutive codes").
        if not hmac.compare_digest(mfa.code_at_step(device.seed, first.step + 1, device.digits), codes[1]):
            raise _error("InvalidAuthenticationCode", "Authentication code for device is not valid.", 403)
        device.last_step = first.step + 1  # both codes are spent
        state.devices[serial] = device
        del iam.pending[serial]
        return envelope(action, "")
    if action == "DeactivateMFADevice":
        user_name = _require(params, "UserName")
        serial = _require(params, "SerialNumber")
        device = state.devices.get(serial)
        if device is None or device.owner != user_name:
            raise _error("NoSuchEntity", f"MFA Device with serial number {serial} does not exist.", 404)
        del state.devices[serial]
        iam.pending[serial] = PendingDevice(serial=serial, seed=device.seed)
        return envelope(action, "")
    if action == "DeleteVirtualMFADevice":
        serial = _require(params, "SerialNumber")
        if serial in state.devices:
            raise _error("DeleteConflict", "MFA Device is still in use", 409)
        if iam.pending.pop(serial, None) is None:
            raise _error("NoSuchEntity", f"VirtualMFADevice with serial number {serial} doesn't exist.", 404)
        return envelope(action, "")
    raise _error("InvalidAction", f"Could not find operation {action} for version {API_VERSION}", 400)


def render_error(error: STSError, request_id: str) -> bytes:
    return (f'<ErrorResponse xmlns="{NAMESPACE}">\n  <Error>\n    <Type>{error.fault}</Type>\n'
            f"    <Code>{escape(error.code)}</Code>\n    <Message>{escape(error.message)}</Message>\n"
            f"  </Error>\n  <RequestId>{escape(request_id)}</RequestId>\n</ErrorResponse>\n").encode()
