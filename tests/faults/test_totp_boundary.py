"""TOTP period boundary: with a 2 s period, codes fetched at any moment of a period are sent once at most."""

from __future__ import annotations

from typing import Any

from devstack.manifests import assumed_role_credential


def issue_direct_with_sts_latency(kube, team: str, emulator_admin, ident, names: list[str],
                                  timeout: float) -> list[dict[str, Any]]:
    """`mfa: direct` credentials (a code each) with 1 s of STS latency: this device's accepted codes, after
    checking each went to a step of its own and none was refused or reused."""
    emulator_admin.add_fault("latency", action="AssumeRole", latency_s=1.0, target=ident.role_arns[0])
    try:
        for name in names:
            kube.create_credential(assumed_role_credential(team, name, ident.name, ident.role_arns[0], mfa="direct",
                                                           durationSeconds=3600))
        for name in names:
            kube.wait_ready(team, name, timeout=timeout)
    finally:
        emulator_admin.clear_faults()
    counters = emulator_admin.counters()
    accepted = [c for c in counters["accepted_codes"] if c["serial"] == ident.mfa_serial]
    steps = [c["step"] for c in accepted]
    assert len(steps) == len(names) and len(set(steps)) == len(names), steps
    assert counters["codes_reused_by_serial"].get(ident.mfa_serial, 0) == 0
    assert counters["codes_refused_by_serial"].get(ident.mfa_serial, 0) == 0
    return accepted


def test_codes_near_the_period_boundary_are_never_sent_twice(stack, kube, team, make_identity, operator,
                                                               emulator_admin, report):
    ident = make_identity("boundary", totp_period=2, mfa_modes=["session", "direct"])
    names = [f"d{i}" for i in range(6)]
    # 1 s of STS latency: a code fetched late in its period reaches STS in the next one (AWS's tolerance:
    # one step either side), and the next code must come from a later step than any code sent before.
    accepted = issue_direct_with_sts_latency(kube, team, emulator_admin, ident, names, timeout=90)
    steps = [c["step"] for c in accepted]
    assert steps == sorted(steps)
    # sent late: how many codes reached STS in the step after the one they belong to
    late = sum(1 for c in accepted if int(c["at"] // 2) > c["step"])
    report.fault("test_codes_near_the_period_boundary_are_never_sent_twice", "totp period 2s + sts latency 1s",
                 0, codes_accepted=len(steps), codes_accepted_in_next_period=late, codes_refused=0, codes_reused=0)


def test_fifty_periods_no_code_refused_or_reused(stack, kube, team, make_identity, operator, emulator_admin, report):
    """HashiCorp Vault's `totp/code` answers carry no generation time (OpenBao's carry `generated`), so there
    the operator infers each code's step from its own clock around the read. 50 codes of one device, one per
    2 s period, each sent with 1 s of STS latency: AWS (the emulator) refuses none and sees none twice."""
    ident = make_identity("fifty", totp_period=2, mfa_modes=["session", "direct"])
    names = [f"p{i:02d}" for i in range(50)]
    accepted = issue_direct_with_sts_latency(kube, team, emulator_admin, ident, names, timeout=400)
    steps = [c["step"] for c in accepted]
    report.fault("test_fifty_periods_no_code_refused_or_reused", f"totp period 2s x 50 on {stack.vault_flavor}",
                 0, periods=max(steps) - min(steps) + 1, codes_accepted=len(steps), codes_refused=0, codes_reused=0)
