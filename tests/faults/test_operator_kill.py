"""The operator SIGKILLed while an MFA call is in flight, then started again."""

from __future__ import annotations

import signal
import time

from kubernetes import client

from devstack.manifests import assumed_role_credential
from devstack.operator_run import OPERATOR_NAMESPACE, TEST_ROTATE_MIN_INTERVAL
from tests.e2e.helpers import wait_for


def last_step(kube, serial: str) -> str | None:
    """The device's durable record (its Lease), which the operator writes just before it sends a code."""
    for lease in client.CoordinationV1Api(kube.api).list_namespaced_lease(OPERATOR_NAMESPACE).items:
        annotations = lease.metadata.annotations or {}
        if annotations.get("vaultsts.io/mfa-device") == serial:
            return annotations.get("vaultsts.io/last-step")
    return None


def test_sigkill_mid_rotation(stack, kube, team, make_identity, operator, emulator_admin, guard, report):
    ident = make_identity("kill", totp_period=3, mfa_modes=["session", "direct"])
    # mfa: direct: the AssumeRole call itself carries the TOTP code
    kube.create_credential(assumed_role_credential(team, "app", ident.name, ident.role_arns[0], mfa="direct",
                                                   durationSeconds=3600))
    first = kube.wait_ready(team, "app", timeout=60)["status"]["accessKeyId"]
    # rotate once the rotate annotation's minimum interval has passed, so the rotation starts at once
    time.sleep(TEST_ROTATE_MIN_INTERVAL)
    recorded = last_step(kube, ident.mfa_serial)
    call_key = f"AssumeRole {ident.role_arns[0]}"
    calls = emulator_admin.counters()["calls_by_target"].get(call_key, 0)
    emulator_admin.add_fault("latency", action="AssumeRole", latency_s=5.0, target=ident.role_arns[0])
    try:
        kube.patch_credential(team, "app", {"metadata": {"annotations": {"vaultsts.io/rotate": "kill-me"}}})
        # This device's record moves to the rotation's step just before its code is sent, and the call is held
        # 5 s at the emulator. Both must be seen, and the call counted is this role's own (on a shared stack
        # another credential's AssumeRole could move a global counter first, and the kill would land too early).
        wait_for("the rotation's step recorded and an AssumeRole in flight (held 5 s by the emulator)",
                 lambda: last_step(kube, ident.mfa_serial) != recorded
                 and emulator_admin.counters()["calls_by_target"].get(call_key, 0) > calls,
                 timeout=30, interval=0.05)
        killed_at = time.monotonic()
        operator.stop(signal.SIGKILL)
    finally:
        emulator_admin.clear_faults()
    # the emulator still answers the orphaned call (and accepts its code) after the operator is gone
    time.sleep(6)
    assert kube.secret(team, "app")["data"]["AWS_ACCESS_KEY_ID"] == first
    operator.start()
    rotated = wait_for("the rotation completed by the restarted operator", lambda: (
        s := kube.secret(team, "app")) and s["data"]["AWS_ACCESS_KEY_ID"] != first and s, timeout=60)
    kube.wait_ready(team, "app", timeout=30)
    counters = emulator_admin.counters()
    steps = [c["step"] for c in counters["accepted_codes"] if c["serial"] == ident.mfa_serial]
    assert len(steps) == len(set(steps)) == 3  # first issue, the orphaned call, the completed rotation
    assert counters["codes_reused_by_serial"].get(ident.mfa_serial, 0) == 0
    assert counters["codes_refused_by_serial"].get(ident.mfa_serial, 0) == 0
    assert rotated["metadata"].annotations["vaultsts.io/rotate-request"] == "kill-me"
    report.fault("test_sigkill_mid_rotation", "operator SIGKILL during AssumeRole (latency 5s)",
                 time.monotonic() - killed_at, codes_accepted=len(steps), codes_reused=0)
