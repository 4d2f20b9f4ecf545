import asyncio
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import pytest

from vault_sts_operator import metrics
from vault_sts_operator.api.specs import ConnectionRules, parse_identity
from vault_sts_operator.clients.sts import classify
from vault_sts_operator.domain.credentials import TemporaryCredentials, TotpCode
from vault_sts_operator.domain.errors import MfaCodeRejectedError, SessionInvalidError, StsError
from vault_sts_operator.services.mfa_device import MfaDeviceGuard
from vault_sts_operator.services.mfa_sessions import MfaSessionCache

ALLOWED_VAULTS = ("https://127.0.0.1:8200", "https://v:8200", "https://v", "http://v:8200", "https://other:8200")
RULES = ConnectionRules(vault_addresses=ALLOWED_VAULTS)

IDENTITY = parse_identity("ops", "u", {
    "vault": {"address": "https://v", "auth": {"tokenSecretRef": {"name": "t", "key": "k"}}},
    "accessKey": {"kv": {"path": "aws/ops"}},
    "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/ops", "totp": {"key": "ops"}},
    "session": {"durationSeconds": 3600},
    "allowedNamespaces": ["a"], "allowedRoleArns": ["*"]}, default_vault=None, operator_namespace="x",
    rules=RULES)



class InMemoryStepStore:
    """A StepStore for one process (the operator's is clients/leases.LeaseStepStore)."""

    def __init__(self) -> None:
        self._steps: dict[str, int] = {}

    async def claim(self, device: str, step: int, *, supersede: int | None = None) -> int | None:
        last = self._steps.get(device)
        if last is not None and step <= last and last != supersede:
            return last
        self._steps[device] = step
        return None

    async def release(self, device: str) -> None:
        return None


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def guard_with_clock(start: float = 1000.0):
    clock = FakeClock(start)
    guard = MfaDeviceGuard(InMemoryStepStore(), clock=clock, sleep=clock.sleep)

    async def fetch() -> TotpCode:
        step = int(clock.now // 30)
        return TotpCode(code=f"{step:06d}", step=step, period=30)

    return clock, guard, fetch


def test_same_step_is_never_spent_twice():
    clock, guard, fetch = guard_with_clock(1000.0)
    sent: list[str] = []

    async def use(code: str) -> str:
        sent.append(code)
        return code

    async def run() -> None:
        await guard.spend("dev", fetch, use)
        await guard.spend("dev", fetch, use)
        await guard.spend("dev", fetch, use)

    asyncio.run(run())
    assert len(sent) == 3 and len(set(sent)) == 3
    assert len(clock.slept) == 2 and all(0 < s <= 30.3 for s in clock.slept)


class SlowClaimStore(InMemoryStepStore):
    """A claim that waits (a killed instance's Lease has not expired yet) while the clock moves on."""

    def __init__(self, clock: FakeClock, wait: float) -> None:
        super().__init__()
        self.clock, self.wait = clock, wait

    async def claim(self, device: str, step: int, *, supersede: int | None = None) -> int | None:
        self.clock.now += self.wait
        self.wait = 0.0
        return await super().claim(device, step, supersede=supersede)


def test_code_gone_stale_while_claiming_is_not_sent():
    clock = FakeClock(1000.0)
    guard = MfaDeviceGuard(SlowClaimStore(clock, wait=40.0), clock=clock, sleep=clock.sleep)

    async def fetch() -> TotpCode:
        step = int(clock.now // 30)
        return TotpCode(code=f"{step:06d}", step=step, period=30)

    sent: list[tuple[str, float]] = []

    async def use(code: str) -> str:
        sent.append((code, clock.now))
        return code

    asyncio.run(guard.spend("dev", fetch, use))
    assert len(sent) == 1
    code, at = sent[0]
    assert int(code) == int(at // 30)  # the code of the period it is sent in, not the one fetched before the wait


def test_concurrent_spends_are_serialised():
    _clock, guard, fetch = guard_with_clock(1000.0)
    sent: list[str] = []

    async def use(code: str) -> str:
        sent.append(code)
        await asyncio.sleep(0)
        return code

    async def run() -> None:
        await asyncio.gather(*(guard.spend("dev", fetch, use) for _ in range(5)))

    asyncio.run(run())
    assert len(set(sent)) == 5


def test_rejected_code_retries_next_period_then_gives_up():
    _clock, guard, fetch = guard_with_clock(1000.0)
    sent: list[str] = []

    async def use(code: str) -> str:
        sent.append(code)
        raise MfaCodeRejectedError("invalid MFA one time pass code")

    with pytest.raises(MfaCodeRejectedError):
        asyncio.run(guard.spend("dev", fetch, use))
    assert len(sent) == 3 and len(set(sent)) == 3


def test_unspent_code_error_is_raised_without_retry():
    _clock, guard, fetch = guard_with_clock(1000.0)
    calls = 0

    async def use(code: str) -> str:
        nonlocal calls
        calls += 1
        raise StsError("throttled", code_spent=False)

    with pytest.raises(StsError):
        asyncio.run(guard.spend("dev", fetch, use))
    assert calls == 1


def creds(expires_in: timedelta, key: str = "ASIA1") -> TemporaryCredentials:
    return TemporaryCredentials(access_key_id=key, secret_access_key="s", session_token="t",
                                expiration=datetime.now(UTC) + expires_in)


class Provider:
    """An MFA-session provider that creates sessions with a test function."""

    def __init__(self, create):
        self.create = create


def test_session_single_flight():
    created = 0

    async def create(identity):
        nonlocal created
        created += 1
        await asyncio.sleep(0.01)
        return creds(timedelta(hours=1), key=f"ASIA{created}")

    cache = MfaSessionCache(kv=Provider(create), vault_aws=Provider(create))

    async def run():
        return await asyncio.gather(*(cache.get(IDENTITY) for _ in range(100)))

    results = asyncio.run(run())
    assert created == 1
    assert {r.access_key_id for r in results} == {"ASIA1"}


def test_session_renewed_near_expiry_and_after_invalidation():
    made: list[timedelta] = [timedelta(minutes=10), timedelta(hours=1), timedelta(hours=1)]

    async def create(identity):
        return creds(made.pop(0), key=f"ASIA{len(made)}")

    cache = MfaSessionCache(kv=Provider(create), vault_aws=Provider(create))

    async def run():
        first = await cache.get(IDENTITY)  # 10 min left < 15 min margin of a 1 h session: renewed next time
        second = await cache.get(IDENTITY)
        third = await cache.get(IDENTITY)
        cache.invalidate("ops", third.access_key_id)
        fourth = await cache.get(IDENTITY)
        return first, second, third, fourth

    first, second, third, fourth = asyncio.run(run())
    assert first.access_key_id != second.access_key_id
    assert second == third
    assert fourth.access_key_id != third.access_key_id


def client_error(code: str, message: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "AssumeRole")


@pytest.mark.parametrize(
    ("code", "message", "reason", "transient", "kind"),
    [
        ("AccessDenied", "MultiFactorAuthentication failed with invalid MFA one time pass code.", "MFARejected",
         True, MfaCodeRejectedError),
        ("AccessDenied", "MultiFactorAuthentication failed, unable to validate MFA code. Please verify your MFA "
         "serial number is valid and associated with this user.", "MFADeviceInvalid", False, StsError),
        ("AccessDenied", "User: x is not authorized to perform: sts:AssumeRole", "AccessDenied", False, StsError),
        ("ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
         "InvalidDuration", False, StsError),
        ("Throttling", "Rate exceeded", "Throttled", True, StsError),
        ("InternalFailure", "oops", "STSUnavailable", True, StsError),
        ("InvalidClientTokenId", "The security token included in the request is invalid.", "AccessKeyInvalid",
         False, StsError),
    ],
)

def test_classify(code, message, reason, transient, kind):
    err = classify(client_error(code, message), "AssumeRole")
    assert isinstance(err, kind)
    assert err.reason == reason and err.transient is transient
    assert message[:50] in err.message


def test_classify_expired_session():
    err = classify(client_error("ExpiredToken", "The security token included in the request is expired"),
                   "AssumeRole", with_session=True)
    assert isinstance(err, SessionInvalidError)


def test_classify_connection_error_does_not_spend_code():
    err = classify(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), "AssumeRole")
    assert err.code_spent is False and err.transient is True


def test_fair_limiter_leaves_room_for_other_identities():
    from vault_sts_operator.services.limiter import FairLimiter

    limiter = FairLimiter(4)
    active: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    b_done_while_a_busy: list[bool] = []

    async def call(key: str, hold: float) -> None:
        async with limiter.slot(key):
            active[key] += 1
            peak[key] = max(peak[key], active[key])
            await asyncio.sleep(hold)
            if key == "b":
                b_done_while_a_busy.append(active["a"] > 0)
            active[key] -= 1

    async def run() -> None:
        await asyncio.gather(*(call("a", 0.01) for _ in range(40)), call("b", 0.0))

    asyncio.run(run())
    assert peak["a"] == 3  # 75 % of 4 slots
    assert b_done_while_a_busy == [True]  # b got a slot while a still had work queued


def test_rollout_restarts_are_debounced():
    from vault_sts_operator.domain.errors import KubernetesError
    from vault_sts_operator.services.restarts import RolloutRestarter

    class FakeKube:
        def __init__(self) -> None:
            self.restarts: list[tuple[str, str, str]] = []

        async def workload_metadata(self, kind: str, namespace: str, name: str) -> dict[str, object]:
            opt_in = {"stranger": "other-cred", "db": "x, cred"}.get(name, "cred")
            return {"annotations": {"vaultsts.io/restart-on-rotation": opt_in}, "resourceVersion": "7"}

        async def restart_workload(self, kind: str, namespace: str, name: str, stamp: str,
                                   resource_version: str) -> None:
            assert resource_version == "7"
            if name == "broken":
                raise KubernetesError("restarting Deployment ns/broken: HTTP 404")
            self.restarts.append((kind, namespace, name))

    kube = FakeKube()
    failures: list[str] = []
    restarter = RolloutRestarter(kube, debounce_seconds=0.05)  # type: ignore[arg-type]

    async def report(message: str) -> None:
        failures.append(message)

    def ask(kind: str, name: str) -> bool:
        return restarter.request((kind, "ns", name), report, credential="cred")

    async def run() -> list[bool]:
        asked = [ask("Deployment", "app") for _ in range(5)]
        asked.append(ask("StatefulSet", "db"))
        asked.append(ask("Deployment", "broken"))
        asked.append(ask("Deployment", "stranger"))
        await restarter.drain()
        asked.append(ask("Deployment", "app"))
        await restarter.drain()
        return asked

    asked = asyncio.run(run())
    assert asked == [True, False, False, False, False, True, True, True, True]
    assert kube.restarts == [("Deployment", "ns", "app"), ("StatefulSet", "ns", "db"), ("Deployment", "ns", "app")]
    assert sorted(failures) == [
        "Deployment stranger was not restarted: it does not opt in (add the annotation "
        "vaultsts.io/restart-on-rotation: cred to its metadata)",
        "restarting Deployment ns/broken: HTTP 404"]


def test_sts_clients_are_reused_and_bounded():
    from vault_sts_operator.clients.sts import StsGateway

    gateway = StsGateway(max_clients=2)
    first = gateway._client("us-east-1", "http://127.0.0.1:1", "AKIA1", "s", None, carries_code=False)
    assert gateway._client("us-east-1", "http://127.0.0.1:1", "AKIA1", "s", None, carries_code=False) is first
    gateway._client("us-east-1", "http://127.0.0.1:1", "AKIA2", "s", None, carries_code=False)
    gateway._client("us-east-1", "http://127.0.0.1:1", "AKIA3", "s", None, carries_code=False)
    assert len(gateway._clients) == 2
    assert gateway._client("us-east-1", "http://127.0.0.1:1", "AKIA1", "s", None, carries_code=False) is not first
def test_calls_carrying_a_code_are_never_retried_by_botocore():
    from vault_sts_operator.clients.sts import StsGateway

    gateway = StsGateway()
    client = gateway._client("us-east-1", "http://127.0.0.1:1", "AKIAX", "s", None, carries_code=True)
    assert client.meta.config.retries["total_max_attempts"] == 1


def test_a_step_recorded_by_a_clock_running_ahead_costs_one_period_not_hours():
    """A replica whose clock runs an hour ahead recorded step S+120: the others wait one period, report the
    skew and take the record over, and the code they send is from a step later than any the other could
    have spent (it was read a full period after the record was seen)."""
    clock, guard, fetch = guard_with_clock(1000.0)
    store = guard._store
    assert isinstance(store, InMemoryStepStore)
    now_step = int(clock.now // 30)
    asyncio.run(store.claim("dev", now_step + 120))
    sent: list[str] = []

    async def use(code: str) -> str:
        sent.append(code)
        return code

    asyncio.run(guard.spend("dev", fetch, use))
    assert sum(clock.slept) <= 30.3 + 1e-6, clock.slept
    assert sent == [f"{now_step + 1:06d}"]
    assert metrics.CLOCK_SKEW_SECONDS.labels(source="mfa-step")._value.get() == pytest.approx(120 * 30, abs=31)
    # the next spend on a sound clock waits for the next period only
    asyncio.run(guard.spend("dev", fetch, use))
    assert sent[-1] == f"{now_step + 2:06d}" and sum(clock.slept) <= 2 * 30.3 + 1e-6


def test_a_small_lead_is_waited_for_as_usual():
    clock, guard, fetch = guard_with_clock(1000.0)
    now_step = int(clock.now // 30)
    asyncio.run(guard._store.claim("dev", now_step + 1))
    sent: list[str] = []

    async def use(code: str) -> str:
        sent.append(code)
        return code

    asyncio.run(guard.spend("dev", fetch, use))
    assert sent == [f"{now_step + 2:06d}"]


def test_a_lease_renewed_in_the_future_holds_no_longer_than_its_duration():
    from datetime import UTC, datetime, timedelta
    from typing import Any, cast

    from vault_sts_operator.clients.leases import LeaseStepStore

    store = LeaseStepStore(cast(Any, None), namespace="vso", holder="me", lease_seconds=1)
    ahead = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {"spec": {"holderIdentity": "other", "renewTime": ahead, "leaseDurationSeconds": 1}}
    assert store._held_by_other("l", lease) is True
    assert metrics.CLOCK_SKEW_SECONDS.labels(source="lease")._value.get() > 3500
    import time
    time.sleep(1.1)
    assert store._held_by_other("l", lease) is False
    expired = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert store._held_by_other("l", {"spec": {"holderIdentity": "other", "renewTime": expired,
                                               "leaseDurationSeconds": 1}}) is False
