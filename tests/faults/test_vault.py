"""Vault faults: OpenBao down longer than a rotation window, and the operator's Vault token revoked.

Runs late in the suite (file order): OpenBao's dev server keeps state in memory, so a restart loses every
identity seeded before; this test re-seeds its own identity only.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime

from devstack import stack as devstack
from devstack.manifests import assumed_role_credential
from tests.e2e.helpers import wait_for
from tests.faults.helpers import metric_sum, operator_token_accessors, restore_vault_side, retry_delays

OUTAGE_SECONDS = 45
VAULT_METRIC = "vault_sts_operator_vault_requests_total"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def failed_vault_requests(operator) -> float:
    text = operator.metrics_text()
    return sum(metric_sum(text, VAULT_METRIC, outcome=o) for o in ("unreachable", "error"))


def test_vault_down_then_back(stack, kube, team, make_identity, operator, emulator_admin, report, seeds):
    ident = make_identity("vdown", totp_period=3, mfa_modes=["session", "direct"])
    secret_key = ident.read_secret_access_key(stack)
    # mfa: direct reads the key and a code from Vault at every issue; rotation every 10-20 s
    kube.create_credential(assumed_role_credential(team, "app", ident.name, ident.role_arns[0], mfa="direct",
                                                   durationSeconds=900, renewBefore="14m45s"))
    kube.wait_ready(team, "app", timeout=60)
    pid, starts = operator.proc.pid, operator.starts

    log_offset = len(operator.log_text())
    failed_before = failed_vault_requests(operator)
    codes_before = emulator_admin.counters()["codes_accepted_by_serial"].get(ident.mfa_serial, 0)
    stopped_at = time.monotonic()
    devstack.stop_service("openbao")
    try:
        held = kube.secret(team, "app")
        status = kube.credential(team, "app")["status"]
        window = (parse_time(status["renewalTime"]) - parse_time(status["issuedAt"])).total_seconds()
        assert window < OUTAGE_SECONDS
        cond = kube.wait_reason(team, "app", "VaultError", timeout=OUTAGE_SECONDS)
        assert "unreachable" in cond["message"]
        while time.monotonic() - stopped_at < OUTAGE_SECONDS:
            now = kube.secret(team, "app")
            assert now["data"] == held["data"], "the Secret changed while Vault was down"
            time.sleep(1)
        outage = time.monotonic() - stopped_at
        attempts = failed_vault_requests(operator) - failed_before
        delays = retry_delays(operator.log_text()[log_offset:], team, "app")
        assert not emulator_admin.credential(held["data"]["AWS_ACCESS_KEY_ID"])["expired"]
        assert emulator_admin.counters()["codes_accepted_by_serial"].get(ident.mfa_serial, 0) == codes_before
    finally:
        devstack.start_service("openbao")
        restore_vault_side(stack, ident, seeds[ident.name], secret_key)
    back_at = time.monotonic()

    # Backoff: 5 s, 10 s, 20 s, ... (+ up to 25 % jitter): a handful of attempts in 45 s, never a hot loop.
    # Counted per pass of this credential from the log (each failed pass made one Vault request); the
    # metric is operator-wide and also counts other tests' credentials on a shared stack.
    passes = len(delays)
    assert 2 <= passes <= 8, f"{passes} failed passes (Vault requests) of this credential in {outage:.0f}s"
    assert [r for r, _ in delays] == ["VaultError"] * len(delays)
    assert all(b >= a for (_, a), (_, b) in itertools.pairwise(delays)), delays

    # Heals by itself: the next attempt logs in to the new Vault and rotates (no operator restart).
    wait_for("a rotation after Vault came back", lambda: (
        s := kube.secret(team, "app")) and s["data"]["AWS_ACCESS_KEY_ID"] != held["data"]["AWS_ACCESS_KEY_ID"],
        timeout=120, interval=1)
    healed = time.monotonic() - back_at
    kube.wait_ready(team, "app", timeout=30)
    assert operator.proc.pid == pid and operator.starts == starts and operator.proc.poll() is None
    report.fault("test_vault_down_then_back", f"{stack.vault_flavor} stopped", outage, rotation_window_s=window,
                 vault_requests_failed=passes, vault_requests_failed_operator_wide=int(attempts),
                 retry_delays_s=[d for _, d in delays],
                 sts_codes_sent=0, healed_after_s=round(healed, 1))
    kube.delete_credential(team, "app")


def test_revoked_vault_token_logs_in_again(stack, kube, team, make_identity, operator, vault, report):
    ident = make_identity("revoke", totp_period=3, mfa_modes=["session", "direct"])
    kube.create_credential(assumed_role_credential(team, "app", ident.name, ident.role_arns[0], mfa="direct",
                                                   durationSeconds=900))
    first = kube.wait_ready(team, "app", timeout=60)["status"]["accessKeyId"]
    accessors = operator_token_accessors(stack, ident.policy)
    assert accessors, "the operator holds no Vault token for this identity"
    logins = operator.log_text().count("logged in to Vault")
    forbidden = metric_sum(operator.metrics_text(), VAULT_METRIC, outcome="forbidden")
    for accessor in accessors:
        vault.write_data("auth/token/revoke-accessor", data={"accessor": accessor})
    assert operator_token_accessors(stack, ident.policy) == []

    kube.patch_credential(team, "app", {"metadata": {"annotations": {"vaultsts.io/rotate": "after-revoke"}}})
    wait_for("a rotation with a new Vault login",
             lambda: kube.credential(team, "app")["status"].get("accessKeyId") not in (None, first), timeout=60)
    assert operator.log_text().count("logged in to Vault") > logins
    assert metric_sum(operator.metrics_text(), VAULT_METRIC, outcome="forbidden") - forbidden >= 1
    assert len(operator_token_accessors(stack, ident.policy)) == 1
    report.fault("test_revoked_vault_token_logs_in_again", "vault token revoked", 0,
                 tokens_revoked=len(accessors), relogins=operator.log_text().count("logged in to Vault") - logins)
    kube.delete_credential(team, "app")
