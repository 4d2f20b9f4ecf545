"""STS faults from the emulator (throttling, 5xx, latency): backoff with jitter, no burst, no code wasted."""

from __future__ import annotations

import time

import pytest

from devstack.manifests import GROUP, VERSION, assumed_role_credential
from tests.e2e.helpers import wait_for
from tests.faults.helpers import CallSampler, retry_delays

HOLD_SECONDS = 30


@pytest.fixture(autouse=True)
def _no_fault_left(emulator_admin):
    yield
    emulator_admin.clear_faults()


def rotate_all(kube, team, names, value):
    for name in names:
        kube.patch_credential(team, name, {"metadata": {"annotations": {"vaultsts.io/rotate": value}}})


def wait_rotated(kube, team, names, before, timeout):
    for name in names:
        wait_for(f"{name} rotated", lambda n=name: (
            s := kube.secret(team, n)) and s["data"]["AWS_ACCESS_KEY_ID"] != before[n], timeout=timeout, interval=1)
        kube.wait_ready(team, name, timeout=30)


def test_throttled_rotation_backs_off_with_jitter(stack, kube, team, make_identity, operator, emulator_admin,
                                                  report):
    ident = make_identity("throttle")
    names = ["a", "b", "c"]
    for name in names:
        kube.create_credential(assumed_role_credential(team, name, ident.name, ident.role_arns[0]))
    before = {n: kube.wait_ready(team, n)["status"]["accessKeyId"] for n in names}
    codes = emulator_admin.counters()["codes_accepted_by_serial"][ident.mfa_serial]
    log_offset = len(operator.log_text())

    emulator_admin.add_fault("throttle", action="AssumeRole", target=ident.role_arns[0])
    with CallSampler(stack, targets=ident.role_arns) as calls:
        rotate_all(kube, team, names, "throttled")
        for name in names:
            cond = kube.wait_reason(team, name, "Throttled", timeout=20)
            assert "Throttling" in cond["message"]
        while calls.samples[-1][0] - calls.samples[0][0] < HOLD_SECONDS:
            for name in names:  # the Secret is kept while STS throttles
                assert kube.secret(team, name)["data"]["AWS_ACCESS_KEY_ID"] == before[name]
            time.sleep(1)
        emulator_admin.clear_faults()
    wait_rotated(kube, team, names, before, timeout=90)

    log = operator.log_text()[log_offset:]
    delays = {n: [d for reason, d in retry_delays(log, team, n) if reason == "Throttled"] for n in names}
    # Exponential backoff from 5 s (+ up to 25 % jitter) per credential: about 3 passes in 30 s; each pass
    # lets botocore try AssumeRole at most 3 times (it carries no TOTP code, so retrying is safe).
    assert all(2 <= len(d) <= 5 for d in delays.values()), delays
    for seq in delays.values():
        for attempt, delay in enumerate(seq, start=1):
            base = min(300.0, 5.0 * 2 ** (attempt - 1))
            assert base - 1 <= delay <= base * 1.25 + 1, seq
    assert len({tuple(seq) for seq in delays.values()}) > 1, f"no jitter between credentials: {delays}"
    total = calls.total("AssumeRole")
    assert total <= len(names) * 5 * 4, total
    burst = calls.max_in_window("AssumeRole", 2.0)
    assert burst <= len(names) * 4, f"{burst} AssumeRole calls within 2 s"
    assert emulator_admin.counters()["codes_accepted_by_serial"][ident.mfa_serial] == codes  # no code spent
    report.fault("test_throttled_rotation_backs_off_with_jitter", "sts throttle AssumeRole", calls.seconds,
                 credentials=len(names), sts_calls=total, max_calls_in_2s=burst,
                 retry_delays_s={n: d for n, d in delays.items()})


@pytest.mark.parametrize("kind", ["throttle", "5xx"])
def test_failing_mfa_call_reuses_no_code(stack, kube, team, make_identity, operator, emulator_admin, report, kind):
    """GetSessionToken carries the TOTP code: it is never retried by botocore, and the code of a failed call
    is never sent again (the operator waits for the next period's code)."""
    ident = make_identity(f"gst-{kind}", totp_period=3)
    # Let the identity's verification finish first: it wakes the identity's credentials when done, which
    # would start a second pass within a second of the first and look like a burst.
    wait_for("the MFAIdentity verified", lambda: any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (kube.custom.get_cluster_custom_object(GROUP, VERSION, "mfaidentities", ident.name).get("status")
                  or {}).get("conditions") or ()), timeout=30)
    # Aimed at this identity's device: other identities' background passes must neither take the fault nor
    # count as this identity's calls.
    emulator_admin.add_fault(kind, action="GetSessionToken", count=2, status=503, target=ident.mfa_serial)
    started = time.monotonic()
    with CallSampler(stack, targets=[ident.mfa_serial]) as calls:
        kube.create_credential(assumed_role_credential(team, "app", ident.name, ident.role_arns[0]))
        kube.wait_ready(team, "app", timeout=90)
    reason = "Throttled" if kind == "throttle" else "STSUnavailable"
    kube.wait_event(team, "app", reason, lambda e: e.reason == reason)
    counters = emulator_admin.counters()
    assert calls.total("GetSessionToken") == 3  # two faulted, one accepted
    # the call carries the code: botocore must not resend it (a resent code is a reused code at AWS)
    assert calls.max_in_window("GetSessionToken", 1.0) == 1
    assert counters["codes_accepted_by_serial"][ident.mfa_serial] == 1
    assert counters["codes_refused_by_serial"].get(ident.mfa_serial, 0) == 0
    assert counters["codes_reused_by_serial"].get(ident.mfa_serial, 0) == 0
    report.fault("test_failing_mfa_call_reuses_no_code", f"sts {kind} GetSessionToken x2",
                 time.monotonic() - started, sts_calls=calls.total("GetSessionToken"), codes_accepted=1,
                 codes_refused=0)


def test_sts_5xx_backs_off_then_heals(stack, kube, team, make_identity, operator, emulator_admin, report):
    ident = make_identity("fivexx")
    kube.create_credential(assumed_role_credential(team, "app", ident.name, ident.role_arns[0]))
    before = {"app": kube.wait_ready(team, "app")["status"]["accessKeyId"]}
    emulator_admin.add_fault("5xx", action="AssumeRole", status=503, target=ident.role_arns[0])
    with CallSampler(stack, targets=ident.role_arns) as calls:
        rotate_all(kube, team, ["app"], "five-xx")
        cond = kube.wait_reason(team, "app", "STSUnavailable", timeout=20)
        assert "503" in cond["message"] or "ServiceUnavailable" in cond["message"]
        while calls.samples[-1][0] - calls.samples[0][0] < 20:
            assert kube.secret(team, "app")["data"]["AWS_ACCESS_KEY_ID"] == before["app"]
            time.sleep(1)
        emulator_admin.clear_faults()
    wait_rotated(kube, team, ["app"], before, timeout=60)
    total = calls.total("AssumeRole")
    # Each pass is one AssumeRole plus botocore's retries (retries={"max_attempts": 3}: 3 retries, 4 calls;
    # for 5xx botocore backs off from 50 ms, so a pass is a volley within ~0.3 s); passes back off from 5 s.
    assert 4 <= total <= 4 * 4, total
    burst = calls.max_in_window("AssumeRole", 2.0)
    assert burst <= 4, f"{burst} AssumeRole calls within 2 s"
    report.fault("test_sts_5xx_backs_off_then_heals", "sts 503 AssumeRole", calls.seconds, sts_calls=total,
                 max_calls_in_2s=burst)
    if burst > 1:
        report.findings.append(
            f"STS 5xx: each retry pass sends up to {burst} AssumeRole calls within 2 s (botocore retries once, "
            "total_max_attempts=2, for calls that carry no TOTP code); the operator's own backoff paces the passes")


def test_sts_latency_is_waited_for_not_retried(stack, kube, team, make_identity, operator, emulator_admin, report):
    ident = make_identity("latency")
    kube.create_credential(assumed_role_credential(team, "app", ident.name, ident.role_arns[0]))
    before = {"app": kube.wait_ready(team, "app")["status"]["accessKeyId"]}
    emulator_admin.add_fault("latency", action="AssumeRole", latency_s=4.0, target=ident.role_arns[0])
    with CallSampler(stack, targets=ident.role_arns) as calls:
        rotate_all(kube, team, ["app"], "slow")
        wait_rotated(kube, team, ["app"], before, timeout=40)
        emulator_admin.clear_faults()
    assert calls.total("AssumeRole") == 1
    report.fault("test_sts_latency_is_waited_for_not_retried", "sts latency 4s AssumeRole", calls.seconds,
                 sts_calls=calls.total("AssumeRole"))
