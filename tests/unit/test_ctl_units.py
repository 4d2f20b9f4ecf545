"""Pure parts of the verbs for people: consecutive TOTP codes, the status text, argument parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vault_sts_operator.cli import _parser
from vault_sts_operator.ctl.enroll import consecutive_codes
from vault_sts_operator.ctl.plugin import parser as plugin_parser
from vault_sts_operator.ctl.status import healthy, render, render_list


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_consecutive_codes_wait_for_the_next_step():
    clock = FakeClock(1000 * 30 + 12.0)
    reads: list[float] = []

    def read() -> tuple[str, int]:
        reads.append(clock.now)
        step = int(clock.now // 30)
        return f"{step % 1_000_000:06d}", step

    first, second = consecutive_codes(read, clock=clock, sleep=clock.sleep)
    assert (first, second) == ("001000", "001001")
    assert reads[1] >= 1001 * 30  # the second read happened in the next step, not before


def test_consecutive_codes_start_again_after_oversleeping():
    clock = FakeClock(1000 * 30 + 29.9)
    steps = iter([1000, 1002, 1003])

    def read() -> tuple[str, int]:
        step = next(steps)
        return f"{step:06d}", step

    assert consecutive_codes(read, clock=clock, sleep=clock.sleep) == ("001002", "001003")


def test_status_text_says_when_and_hides_nothing_it_should_show():
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    info = {
        "namespace": "team-a", "name": "billing", "identity": "ops", "mfa": "session",
        "roleArn": "arn:aws:iam::123456789012:role/app-billing",
        "ready": {"status": "True", "reason": "Issued", "lastTransitionTime": "2026-11-26T11:40:00Z",
                  "message": "issued"},
        "generation": 2, "observedGeneration": 2, "accessKeyId": "ASIAEXAMPLE", "assumedRoleArn": "arn:x",
        "issuedAt": "2026-11-26T11:40:00Z", "expiration": "2026-11-26T12:40:00Z",
        "renewalTime": "2026-11-26T12:20:00Z",
        "rotationFailing": {"type": "RotationFailing", "status": "False", "reason": "Succeeded", "message": "ok"},
        "failing": False, "failedAttempts": 0, "lastFailureTime": None, "nextRetryTime": None,
        "secret": {"name": "billing-aws", "exists": True, "keys": ["AWS_ACCESS_KEY_ID"], "ownedByCredential": False},
        "rotateRequested": None,
        "events": [{"type": "Normal", "reason": "Issued", "message": "m", "count": 3, "last": "t"}],
    }
    text = render(info, now)
    assert "Ready:        True (Issued)" in text
    assert "Rotation:     not failing" in text
    assert "Expiration:   2026-11-26T12:40:00Z (in 40m00s)" in text
    assert "Issued:       2026-11-26T11:40:00Z (20m00s ago)" in text
    assert "NOT owned by this credential" in text
    assert "(x3)" in text
    assert healthy(info["ready"], info["failing"])

    failing = {**info, "failing": True, "failedAttempts": 3, "lastFailureTime": "2026-11-26T11:59:00Z",
               "nextRetryTime": "2026-11-26T12:00:30Z",
               "rotationFailing": {"type": "RotationFailing", "status": "True", "reason": "Throttled",
                                   "message": "STS throttled the request"}}
    text = render(failing, now)
    assert "Ready:        True (Issued)" in text  # the Secret is still valid ...
    assert ("Rotation:     FAILING (Throttled), 3 attempt(s) in a row, last 2026-11-26T11:59:00Z (1m00s ago); "
            "next attempt 2026-11-26T12:00:30Z (in 0m30s)") in text  # ... and its rotation is not
    assert "STS throttled the request" in text
    assert not healthy(failing["ready"], failing["failing"])  # exit 1: not well


@pytest.mark.parametrize("argv", [["status", "-o", "yaml"], ["rotate"], ["mfa", "enroll"], ["check-identity"], ["mfa"]])
def test_missing_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2


def test_every_verb_documents_its_exit_codes(capsys):
    for verb in (["status"], ["rotate"], ["check-identity"], ["mfa", "enroll"]):
        with pytest.raises(SystemExit):
            _parser().parse_args([*verb, "--help"])
        out = capsys.readouterr().out
        assert "exit codes:" in out and "3  no such" in out and "4  Kubernetes API" in out, verb


def test_status_without_a_name_lists_the_namespace():
    assert _parser().parse_args(["status", "-n", "team-a"]).name is None
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    rows = [{"name": "billing", "identity": "ops", "ready": "True", "reason": "Issued", "secretName": "billing",
             "failing": False, "failingReason": "",
             "expiration": "2026-11-26T12:40:00Z", "renewalTime": "2026-11-26T12:30:00Z"},
            {"name": "ledger", "identity": "ops", "ready": "True", "reason": "Issued", "secretName": "ledger",
             "failing": True, "failingReason": "Throttled",
             "expiration": "2026-11-26T12:40:00Z", "renewalTime": "2026-11-26T12:30:00Z"},
            {"name": "reports", "identity": "ops", "ready": "False", "reason": "NotAllowed", "secretName": None,
             "failing": True, "failingReason": "NotAllowed", "expiration": None, "renewalTime": None}]
    lines = render_list(rows, "team-a", now).splitlines()
    assert lines[0].split() == ["NAME", "IDENTITY", "READY", "REASON", "FAILING", "EXPIRATION", "RENEWAL"]
    assert lines[1].split()[:5] == ["billing", "ops", "True", "Issued", "-"] and "(in 40m00s)" in lines[1]
    assert lines[2].split()[:5] == ["ledger", "ops", "True", "Issued", "Throttled"]
    assert lines[3].split() == ["reports", "ops", "False", "NotAllowed", "NotAllowed", "-", "-"]
    assert render_list([], "team-a", now) == "No AssumedRoleCredentials in namespace team-a."


def test_kubectl_plugin_has_the_verbs_for_people_and_not_run(capsys):
    for verb in (["status", "app", "-n", "x"], ["rotate", "app"], ["check-identity", "ops"],
                 ["mfa", "enroll", "--user", "u"]):
        assert plugin_parser().parse_args(verb).handler is _parser().parse_args(verb).handler
    with pytest.raises(SystemExit) as exit_info:
        plugin_parser().parse_args(["run"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        plugin_parser().parse_args(["--help"])
    assert capsys.readouterr().out.startswith("usage: kubectl vaultsts")


class OneCredential:
    """What `status` reads through its Kube client, for one credential (no API server: pure rendering)."""

    def __init__(self, body: dict[str, object], secret: dict[str, object] | None = None) -> None:
        self.body, self.secret = body, secret

    def credential(self, namespace: str, name: str) -> dict[str, object]:
        return self.body

    def secret_metadata(self, namespace: str, name: str) -> dict[str, object] | None:
        return self.secret

    def events(self, namespace: str, kind: str, name: str) -> list[dict[str, object]]:
        return []


def test_status_and_rotate_in_mode_pod_identity_show_the_fingerprint_and_no_missing_secret():
    from vault_sts_operator.ctl.rotate import _key
    from vault_sts_operator.ctl.status import gather

    status = {"conditions": [{"type": "Ready", "status": "True", "reason": "Issued", "message": "m"}],
              "delivery": {"mode": "PodIdentity", "serviceAccounts": ["billing"]},
              "credentialFingerprint": "9c1f0d2a7b3e4f55", "expiration": "2026-12-04T13:00:00Z"}
    body = {"metadata": {"name": "b", "namespace": "t", "uid": "u"}, "status": status,
            "spec": {"identityRef": {"name": "ops"}, "delivery": status["delivery"]}}
    text = render(gather(OneCredential(body), "t", "b", 5), datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
    assert "fingerprint 9c1f0d2a7b3e4f55" in text
    assert "PodIdentity (no Secret), to the pods of ServiceAccount(s) billing" in text
    assert "does not exist" not in text
    assert _key(status) == "9c1f0d2a7b3e4f55" and _key({"accessKeyId": "ASIA1"}) == "ASIA1"
