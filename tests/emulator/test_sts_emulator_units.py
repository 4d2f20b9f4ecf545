"""Unit tests of the emulator's pure pieces: TOTP step logic, SigV4, validation, trust, the rules."""

from __future__ import annotations

import hashlib
import re
import time
from urllib.parse import urlencode, urlsplit

import pyotp
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.sts_emulator import errors, mfa, sigv4
from devstack.sts_emulator.emulator import Emulator
from devstack.sts_emulator.faults import Fault, FaultBook, FaultKind
from devstack.sts_emulator.model import Credential, Kind, Role, State, User, trusts
from devstack.sts_emulator.protocol import parse_params, render_error
from devstack.sts_emulator.validation import Checker

SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = 1_800_000_000.0  # a step boundary for period 30 (1.8e9 / 30 is whole)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def code(step: int, seed: str = SEED) -> str:
    return str(pyotp.HOTP(seed).at(step))


def device(period: int = 30) -> mfa.MFADevice:
    return mfa.MFADevice(serial="arn:aws:iam::123456789012:mfa/ops", seed=SEED, owner="ops", period=period)


# --- MFA ------------------------------------------------------------------------------


def test_code_matches_pyotp_totp() -> None:
    assert mfa.code_at_step(SEED, int(T0 // 30)) == pyotp.TOTP(SEED).at(T0)


def test_current_and_adjacent_steps_accepted_two_away_refused() -> None:
    step = int(T0 // 30)
    now = T0 + 10
    for delta in (-1, 0, 1):
        assert mfa.check_code(device(), code(step + delta), now).outcome is mfa.Outcome.ACCEPTED
    for delta in (-2, 2, 100):
        assert mfa.check_code(device(), code(step + delta), now).outcome is mfa.Outcome.INVALID


def test_code_accepted_once_and_older_codes_refused_after_newer() -> None:
    dev = device()
    step = int(T0 // 30)
    first = mfa.verify_and_consume(dev, code(step), T0)
    assert (first.outcome, first.step, dev.last_step) == (mfa.Outcome.ACCEPTED, step, step)
    again = mfa.verify_and_consume(dev, code(step), T0 + 29)
    assert (again.outcome, again.step) == (mfa.Outcome.REUSED, step)
    assert mfa.verify_and_consume(dev, code(step - 1), T0 + 29).outcome is mfa.Outcome.REUSED
    assert mfa.verify_and_consume(dev, code(step + 1), T0 + 30).accepted
    assert mfa.verify_and_consume(dev, code(step + 1), T0 + 31).outcome is mfa.Outcome.REUSED
    # a step that matched and was refused leaves the bookkeeping alone
    assert dev.last_step == step + 1


def test_step_ahead_then_current_is_refused() -> None:
    dev = device()
    step = int(T0 // 30)
    assert mfa.verify_and_consume(dev, code(step + 1), T0 + 5).accepted
    assert mfa.verify_and_consume(dev, code(step), T0 + 6).outcome is mfa.Outcome.REUSED


def test_short_period_with_fake_clock() -> None:
    clock = FakeClock(T0)
    dev = device(period=2)
    first = mfa.code_at_step(SEED, dev.step_at(clock()))
    assert mfa.verify_and_consume(dev, first, clock()).accepted
    clock.now += 1
    assert not mfa.verify_and_consume(dev, first, clock()).accepted
    clock.now += 1  # next 2-second step
    assert mfa.verify_and_consume(dev, mfa.code_at_step(SEED, dev.step_at(clock())), clock()).accepted
    clock.now += 10  # first code is now 6 steps old
    assert mfa.check_code(dev, first, clock()).outcome is mfa.Outcome.INVALID


def test_change_period_keeps_spent_time_spent() -> None:
    dev = device(period=30)
    step = int(T0 // 30)
    assert mfa.verify_and_consume(dev, code(step), T0).accepted
    mfa.change_period(dev, 2)
    # under period 2, every step before T0 + 30 (end of the spent 30 s step) is spent
    assert dev.last_step == int((T0 + 30) // 2) - 1
    assert not mfa.check_code(dev, mfa.code_at_step(SEED, dev.step_at(T0 + 10)), T0 + 10).accepted
    assert mfa.check_code(dev, mfa.code_at_step(SEED, dev.step_at(T0 + 30)), T0 + 30).accepted
    with pytest.raises(ValueError):
        mfa.change_period(dev, 0)


def test_seed_validation() -> None:
    assert mfa.valid_seed(SEED)
    assert mfa.valid_seed(mfa.generate_seed())
    assert not mfa.valid_seed("not base32!")
    assert not mfa.valid_seed("AAAA")  # too short
    assert mfa.normalise_seed("jbsw y3dp ehpk 3pxp====") == "JBSWY3DPEHPK3PXP"


# --- SigV4 ----------------------------------------------------------------------------


def signed(
    body: bytes,
    secret: str = "s" * 40,
    token: str | None = None,
    akid: str = "AKIAEXAMPLEEXAMPLE00",
    **headers: str,
) -> sigv4.SignedRequest:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:18790/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **headers},
    )
    SigV4Auth(Credentials(akid, secret, token), "sts", "us-east-1").add_auth(request)
    lowered = {name.lower(): str(value) for name, value in request.headers.items()}
    lowered["host"] = urlsplit(request.url).netloc
    return sigv4.SignedRequest("POST", "/", "", lowered, body)


def now_of(request: sigv4.SignedRequest) -> float:
    return sigv4.parse_timestamp(request.headers["x-amz-date"])


def test_botocore_signature_verifies() -> None:
    request = signed(b"Action=GetCallerIdentity&Version=2011-06-15")
    auth = sigv4.parse_authorization(request.headers["authorization"])
    assert (auth.access_key_id, auth.region, auth.service) == ("AKIAEXAMPLEEXAMPLE00", "us-east-1", "sts")
    assert "host" in auth.signed_headers and "x-amz-date" in auth.signed_headers
    sigv4.verify(request, auth, "s" * 40, now_of(request))


def test_signature_with_session_token_and_content_sha256_header() -> None:
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    request = signed(body, token="TOKEN", **{"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    auth = sigv4.parse_authorization(request.headers["authorization"])
    assert "x-amz-security-token" in auth.signed_headers
    assert "x-amz-content-sha256" in auth.signed_headers
    sigv4.verify(request, auth, "s" * 40, now_of(request))


@pytest.mark.parametrize(
    "tamper",
    ["secret", "body", "header", "skew"],
)
def test_signature_failures(tamper: str) -> None:
    request = signed(b"Action=GetCallerIdentity&Version=2011-06-15")
    auth = sigv4.parse_authorization(request.headers["authorization"])
    secret = "s" * 40
    now = now_of(request)
    if tamper == "secret":
        secret = "t" * 40
    elif tamper == "body":
        request = sigv4.SignedRequest("POST", "/", "", request.headers, b"Action=GetSessionToken&Version=2011-06-15")
    elif tamper == "header":
        request = sigv4.SignedRequest("POST", "/", "", {**request.headers, "host": "evil:1"}, request.body)
    else:
        now += 16 * 60
    with pytest.raises(errors.STSError) as excinfo:
        sigv4.verify(request, auth, secret, now)
    assert excinfo.value.code == "SignatureDoesNotMatch"
    assert excinfo.value.status == 403


def test_content_sha256_mismatch_and_malformed_authorization() -> None:
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    request = signed(body, **{"X-Amz-Content-SHA256": "0" * 64})
    auth = sigv4.parse_authorization(request.headers["authorization"])
    with pytest.raises(errors.STSError) as excinfo:
        sigv4.verify(request, auth, "s" * 40, now_of(request))
    assert excinfo.value.code == "XAmzContentSHA256Mismatch"
    for header in ("AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/sts/aws4_request", "Basic abc"):
        with pytest.raises(errors.STSError) as excinfo:
            sigv4.parse_authorization(header)
        assert excinfo.value.code == "IncompleteSignature"


def test_canonical_pieces() -> None:
    assert sigv4.canonical_uri("/") == "/"
    assert sigv4.canonical_uri("/a/./b/../c") == "/a/c"
    assert sigv4.canonical_query("b=2&a=1&a=0&X-Amz-Signature=x") == "a=0&a=1&b=2"
    headers = {"host": " h  1 ", "x-amz-date": "d"}
    assert sigv4.canonical_headers(headers, ["host", "x-amz-date"]) == "host:h 1\nx-amz-date:d\n"


# --- validation, protocol, trust, faults --------------------------------------------------


def test_validation_messages() -> None:
    check = Checker({"RoleSessionName": "a", "TokenCode": "12a"})
    check.string("RoleArn", "roleArn", required=True)
    check.string("RoleSessionName", "roleSessionName", min_len=2, max_len=64, pattern=r"[\w+=,.@-]*")
    check.mfa()
    with pytest.raises(errors.STSError) as excinfo:
        check.done()
    assert excinfo.value.code == "ValidationError"
    assert excinfo.value.message == (
        "4 validation errors detected: "
        "Value null at 'roleArn' failed to satisfy constraint: Member must not be null; "
        "Value 'a' at 'roleSessionName' failed to satisfy constraint: "
        "Member must have length greater than or equal to 2; "
        "Value at 'tokenCode' failed to satisfy constraint: Member must have length greater than or equal to 6; "
        "Value at 'tokenCode' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\d]*"
    )


def test_parse_params_and_error_xml() -> None:
    params = parse_params("Version=2011-06-15", urlencode({"Action": "AssumeRole", "X": ""}).encode(), "")
    assert params == {"Version": "2011-06-15", "Action": "AssumeRole", "X": ""}
    xml = render_error(errors.access_denied("a < b"), "rid").decode()
    assert "<Type>Sender</Type>" in xml and "<Code>AccessDenied</Code>" in xml
    assert "<Message>a &lt; b</Message>" in xml and "<RequestId>rid</RequestId>" in xml


def test_trust_matching() -> None:
    state = State()
    user = User(name="ops")
    state.users["ops"] = user
    cred = Credential("AKIAX", "s", Kind.USER, user.account, user.partition, user_name="ops")
    principal = state.principal(cred)
    assert trusts(Role("arn:aws:iam::123456789012:role/r", [user.arn]), principal)
    assert trusts(Role("arn:aws:iam::123456789012:role/r", ["arn:aws:iam::123456789012:root"]), principal)
    assert not trusts(Role("arn:aws:iam::123456789012:role/r", ["arn:aws:iam::999999999999:root"]), principal)
    assert not trusts(Role("arn:aws:iam::123456789012:role/r", ["arn:aws:iam::123456789012:user/x"]), principal)
    assert not trusts(Role("arn:aws:iam::123456789012:role/r", ["arn:aws-cn:iam::123456789012:root"]), principal)


def test_fault_book_counts_down_and_matches_action() -> None:
    book = FaultBook([Fault(FaultKind.THROTTLE, action="AssumeRole", count=2)])
    assert book.take("GetCallerIdentity") is None
    assert book.take("AssumeRole") is not None
    assert book.take("AssumeRole") is not None
    assert book.take("AssumeRole") is None
    with pytest.raises(ValueError):
        Fault.from_json({"kind": "explode"})
    with pytest.raises(ValueError):
        Fault.from_json({"kind": "5xx", "status": 404})


# --- the rules end to end, in process, with a fake clock -----------------------------------


def _call(emu: Emulator, cred: dict[str, str], params: dict[str, str]) -> str:
    body = urlencode({**params, "Version": "2011-06-15"}).encode()
    request = signed(body, secret=cred["secret"], token=cred.get("token"), akid=cred["akid"])
    return emu.call(params["Action"], request, params, "rid").body.decode()


def _creds(xml: str) -> dict[str, str]:
    found = {
        name: re.search(f"<{name}>(.*?)</{name}>", xml) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken")
    }
    values = {name: match.group(1) for name, match in found.items() if match is not None}
    return {"akid": values["AccessKeyId"], "secret": values["SecretAccessKey"], "token": values["SessionToken"]}


def test_rules_in_process_with_fake_clock() -> None:
    clock = FakeClock(time.time())  # SigV4's 15-minute skew check reads this wall clock
    emu = Emulator(clock=clock)
    emu.create_user("ops")
    key = emu.create_access_key("ops", "AKIAEXAMPLEEXAMPLE00", "s" * 40)
    dev = emu.create_mfa_device("ops", seed=SEED)
    role = "arn:aws:iam::123456789012:role/app"
    emu.put_role(role, ["arn:aws:iam::123456789012:root"], require_mfa=True, max_mfa_age_seconds=600)
    user = {"akid": key.access_key_id, "secret": key.secret_access_key}
    assert "<Arn>arn:aws:iam::123456789012:user/ops</Arn>" in _call(emu, user, {"Action": "GetCallerIdentity"})

    totp_code = pyotp.TOTP(SEED).at(emu.now())
    mfa_params = {"Action": "GetSessionToken", "SerialNumber": dev.serial, "TokenCode": totp_code}
    session = _creds(_call(emu, user, mfa_params))
    assert emu.counters.codes_accepted == 1
    facts = emu.credential_facts(session["akid"])
    assert (facts["kind"], facts["mfa_authenticated"], facts["carries_mfa_context"]) == ("session", True, True)
    with pytest.raises(errors.STSError) as excinfo:
        _call(emu, user, mfa_params)
    assert excinfo.value.message == errors.MFA_INVALID_CODE
    assert emu.counters.codes_refused == 1

    assume = {"Action": "AssumeRole", "RoleArn": role, "RoleSessionName": "s1"}
    assert "assumed-role/app/s1" in _call(emu, session, assume)
    emu.advance_clock(601)  # aws:MultiFactorAuthAge now above the role's limit
    with pytest.raises(errors.STSError) as excinfo:
        _call(emu, session, assume)
    assert excinfo.value.code == "AccessDenied"
    emu.advance_clock(43200)  # past the session's expiry
    with pytest.raises(errors.STSError) as excinfo:
        _call(emu, session, {"Action": "GetCallerIdentity"})
    assert excinfo.value.code == "ExpiredToken"
    assert emu.counters.issued == 2
