"""Mode PodIdentity, the operator's pure parts: the verdict over two reviews, the bindings, the held credentials,
the review cache."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from vault_sts_operator.clients.kube import ReviewedUser
from vault_sts_operator.domain import pod_identity as pi
from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.services import pod_identity_server as server_module
from vault_sts_operator.services.credential_store import PodIdentityStore, Stored
from vault_sts_operator.services.gatherer import status_record
from vault_sts_operator.services.pod_identity_server import PodIdentityServer, TokenReviews

AUD, AGENT_AUD = "vaultsts.io/pod-identity", "vaultsts.io/pod-identity-agent"
AGENT = ("vso", "vso-agent")


def review(username: str, audiences: Sequence[str], **extra: str) -> pi.Review:
    return pi.Review(authenticated=True, username=username, audiences=tuple(audiences),
                     extra={f"authentication.kubernetes.io/{k.replace('_', '-')}": [v] for k, v in extra.items()})


def test_the_agent_is_known_by_its_service_account_audience_and_pod() -> None:
    good = review("system:serviceaccount:vso:vso-agent", [AGENT_AUD], pod_name="a", pod_uid="u", node_name="n1")
    assert pi.agent_node(good, audience=AGENT_AUD, agent=AGENT) == "n1"
    for bad in (
        pi.Review(authenticated=False),
        review("system:serviceaccount:vso:vso-agent", [AUD], pod_name="a", pod_uid="u", node_name="n1"),
        review("system:serviceaccount:team:vso-agent", [AGENT_AUD], pod_name="a", pod_uid="u", node_name="n1"),
        review("system:serviceaccount:vso:vso-agent:x", [AGENT_AUD], pod_name="a", pod_uid="u", node_name="n1"),
        review("system:node:n1", [AGENT_AUD], pod_name="a", pod_uid="u", node_name="n1"),
        review("system:serviceaccount:vso:vso-agent", [AGENT_AUD]),  # not bound to a pod
    ):
        refused = pi.agent_node(bad, audience=AGENT_AUD, agent=AGENT)
        assert isinstance(refused, pi.Refusal) and (refused.status, refused.code) == (401, pi.AGENT_UNAUTHENTICATED)


def claims_jwt(**claims: object) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{part}.c2ln"


def test_a_token_that_cannot_be_the_agents_is_refused_before_any_review() -> None:
    now = 1_000_000.0
    agent_sub = "system:serviceaccount:vso:vso-agent"
    good = claims_jwt(sub=agent_sub, aud=[AGENT_AUD], exp=now + 600)
    assert pi.agent_token_precheck(good, audience=AGENT_AUD, agent=AGENT, now=now) is None
    assert pi.agent_token_precheck(claims_jwt(sub=agent_sub, aud=AGENT_AUD, exp=now + 1), audience=AGENT_AUD,
                                   agent=AGENT, now=now) is None  # `aud` may be one string
    for bad in (
        "not-a-jwt",
        "a.b.c",  # payload is not JSON
        claims_jwt(sub=agent_sub, aud=[AGENT_AUD], exp=now),  # expired
        claims_jwt(sub=agent_sub, aud=[AGENT_AUD]),  # no expiry
        claims_jwt(sub=agent_sub, aud=[AGENT_AUD], exp=True),
        claims_jwt(sub=agent_sub, aud=[AUD], exp=now + 600),  # a pod token
        claims_jwt(sub="system:serviceaccount:team:billing", aud=[AGENT_AUD], exp=now + 600),  # a tenant's own
        claims_jwt(sub=agent_sub + ":x", aud=[AGENT_AUD], exp=now + 600),
    ):
        refused = pi.agent_token_precheck(bad, audience=AGENT_AUD, agent=AGENT, now=now)
        assert isinstance(refused, pi.Refusal) and (refused.status, refused.code) == (401, pi.AGENT_UNAUTHENTICATED)


class AgentReviewer:
    """The API server's TokenReview as the operator sees it: one genuine agent token; every other token fails."""

    def __init__(self, genuine: str) -> None:
        self.genuine, self.calls = genuine, 0

    async def review_token(self, token: str, audiences: Sequence[str] = ()) -> ReviewedUser | None:
        self.calls += 1
        if token != self.genuine or AGENT_AUD not in audiences:
            return None
        return ReviewedUser(username="system:serviceaccount:vso:vso-agent", audiences=(AGENT_AUD,), extra={
            pi.POD_UID: ("agent-pod",), pi.NODE_NAME: ("n1",), pi.POD_NAME: ("agent",)})


def test_forged_agent_tokens_from_one_address_cost_a_bounded_number_of_reviews() -> None:
    """The endpoint (real aiohttp on loopback, no TLS): junk costs no review; forgeries carrying the agent's claims
    cost at most the address's burst; a genuine agent whose review is cached is still served from that address."""
    async def scenario() -> None:
        exp = time.time() + 600
        genuine = claims_jwt(sub="system:serviceaccount:vso:vso-agent", aud=[AGENT_AUD], exp=exp, jti="real")
        reviewer = AgentReviewer(genuine)
        server = PodIdentityServer(store=PodIdentityStore(), reviewer=reviewer, leading=lambda: True, audience=AUD,
                                   agent_audience=AGENT_AUD, agent_account=AGENT, port=0, host="127.0.0.1", tls=None)
        await server.start()
        url = f"http://127.0.0.1:{server.bound_port}{server_module.PATH}"
        try:
            async with aiohttp.ClientSession() as http:
                async def ask(agent_token: str) -> tuple[int, str]:
                    async with http.post(url, json={"token": "pod.token.x"},
                                         headers={"Authorization": f"Bearer {agent_token}"}) as response:
                        return response.status, (await response.json())["code"]

                # The genuine agent first: reviewed once, then cached.
                assert await ask(genuine) == (401, pi.POD_TOKEN_INVALID)  # its pod token is junk
                reviews_before = reviewer.calls
                tenant_own = claims_jwt(sub="system:serviceaccount:team:billing", aud=["https://kubernetes"], exp=exp)
                for _ in range(50):
                    assert await ask(tenant_own) == (401, pi.AGENT_UNAUTHENTICATED)
                assert reviewer.calls == reviews_before  # refused unverified: no review at all
                started = time.monotonic()
                answers = [await ask(claims_jwt(sub="system:serviceaccount:vso:vso-agent", aud=[AGENT_AUD], exp=exp,
                                                jti=f"forged-{i}")) for i in range(100)]
                elapsed = time.monotonic() - started
                forged_reviews = reviewer.calls - reviews_before
                # The genuine agent's own first review took one of the address's burst.
                allowed = server_module.PEER_REVIEW_BURST - 1 + server_module.PEER_REVIEW_RATE * elapsed + 1
                assert server_module.PEER_REVIEW_BURST - 1 <= forged_reviews <= allowed, (forged_reviews, elapsed)
                assert answers.count((429, pi.THROTTLED)) >= 100 - allowed
                assert set(answers) == {(401, pi.AGENT_UNAUTHENTICATED), (429, pi.THROTTLED)}
                # The address is out of reviews, yet the genuine agent's cached review still lets it through.
                assert await ask(genuine) == (401, pi.POD_TOKEN_INVALID)
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_the_pod_token_must_be_for_the_audience_bound_to_a_pod_on_the_agents_node() -> None:
    pod = pi.pod_subject(review("system:serviceaccount:team:billing", [AUD], pod_name="app", pod_uid="u1",
                                node_name="n1"), audience=AUD)
    assert pod == pi.PodSubject("team", "billing", "app", "u1", "n1")
    assert pi.node_refusal(pod, "n1") is None
    mismatch = pi.node_refusal(pod, "n2")
    assert mismatch is not None and (mismatch.status, mismatch.code) == (403, pi.NODE_MISMATCH)
    other_aud = pi.pod_subject(review("system:serviceaccount:team:billing", ["vault"], pod_name="app",
                                      pod_uid="u1", node_name="n1"), audience=AUD)
    assert isinstance(other_aud, pi.Refusal) and other_aud.code == pi.POD_TOKEN_INVALID
    assert AUD in other_aud.message  # says which audience to mount
    unbound = pi.pod_subject(review("system:serviceaccount:team:billing", [AUD]), audience=AUD)
    assert isinstance(unbound, pi.Refusal) and (unbound.status, unbound.code) == (403, pi.NOT_POD_BOUND)
    user = pi.pod_subject(review("alice", [AUD], pod_name="app", pod_uid="u1", node_name="n1"), audience=AUD)
    assert isinstance(user, pi.Refusal) and user.code == pi.POD_TOKEN_INVALID
    # Two values for one extra are not one pod.
    double = pi.Review(authenticated=True, username="system:serviceaccount:team:billing", audiences=(AUD,),
                       extra={pi.POD_NAME: ["a", "b"], pi.POD_UID: ["u"], pi.NODE_NAME: ["n1"]})
    assert isinstance(pi.pod_subject(double, audience=AUD), pi.Refusal)


def body(name: str, accounts: list[str], created: str, mode: str = "PodIdentity") -> dict[str, object]:
    return {"metadata": {"namespace": "team", "name": name, "creationTimestamp": created},
            "spec": {"delivery": {"mode": mode, "serviceAccounts": accounts}}}


def test_bindings_follow_the_watch_and_the_older_credential_serves() -> None:
    store = PodIdentityStore()
    store.observe(("team", "b"), body("b", ["shared", "own"], "2026-01-02T00:00:00Z"))
    assert store.serving("team", "shared") == "b"
    store.observe(("team", "a"), body("a", ["shared"], "2026-01-01T00:00:00Z"))
    assert store.serving("team", "shared") == "a" and store.serving("team", "own") == "b"
    assert store.conflicts(("team", "b")) == {"shared": "a"} and store.conflicts(("team", "a")) == {}
    assert store.serving("other", "shared") is None  # namespaces never share
    store.observe(("team", "a"), body("a", ["shared"], "2026-01-01T00:00:00Z", mode="Secret"))
    assert store.serving("team", "shared") == "b"
    store.forget(("team", "b"))
    assert store.serving("team", "shared") is None and store.serving("team", "own") is None


def creds(minutes: int = 60) -> TemporaryCredentials:
    return TemporaryCredentials("ASIAEXAMPLE", "secret", "token", datetime.now(UTC) + timedelta(minutes=minutes),
                                "arn:aws:sts::123456789012:assumed-role/r/team@b")


def stored(uid: str = "uid-1") -> Stored:
    c = creds()
    return Stored(c, IssuedRecord(datetime.now(UTC), c.expiration, "h", "", c.access_key_id, c.assumed_role_arn), uid)


def test_a_request_for_credentials_not_held_wakes_one_pass_and_waits_for_it() -> None:
    async def scenario() -> None:
        woken: list[tuple[str, str]] = []
        store = PodIdentityStore(wake=woken.append)
        first, second = store.want(("team", "b")), store.want(("team", "b"))
        assert first is second and woken == [("team", "b")] and store.is_wanted(("team", "b"))
        store.put(("team", "b"), stored())
        outcome = await first
        assert outcome.stored is not None and not store.is_wanted(("team", "b"))
        assert store.get(("team", "b"), "uid-1") is not None
        assert store.get(("team", "b"), "another-uid") is None  # deleted and created again: held nothing
        refused = store.want(("team", "b"))
        store.refused(("team", "b"), "NotAllowed", "no", keep=False)
        assert (await refused).reason == "NotAllowed" and store.get(("team", "b")) is None
        assert store.refusal(("team", "b")) == ("NotAllowed", "no")
        store.put(("team", "b"), stored())
        store.refused(("team", "b"), "STSUnavailable", "later", keep=True)  # transient: still served
        assert store.get(("team", "b")) is not None
        waiting = store.want(("team", "c"))
        store.drop_all()  # stopped leading
        assert (await waiting).reason == "NotLeader" and len(store) == 0

    asyncio.run(scenario())


def test_after_a_restart_the_status_is_the_record_only_when_it_describes_this_spec_in_this_mode() -> None:
    status = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 3,
              "delivery": {"mode": "PodIdentity"}, "issuedAt": "2026-12-04T10:00:00Z",
              "expiration": "2026-12-04T11:00:00Z", "assumedRoleArn": "arn", "rotateRequest": "r1"}
    record = status_record({"metadata": {"generation": 3}, "status": status}, "hash")
    assert record is not None and record.spec_hash == "hash" and record.rotate_request == "r1"
    assert record.access_key_id == ""  # never in the status of this mode
    assert status_record({"metadata": {"generation": 4}, "status": status}, "hash") is None
    assert status_record({"metadata": {"generation": 3}, "status": {**status, "delivery": None}}, "hash") is None
    not_ready = {**status, "conditions": [{"type": "Ready", "status": "False"}]}
    assert status_record({"metadata": {"generation": 3}, "status": not_ready}, "hash") is None


class CountingReviewer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def review_token(self, token: str, audiences: Sequence[str] = ()) -> ReviewedUser | None:
        self.calls.append((token, tuple(audiences)))
        await asyncio.sleep(0.01)
        return ReviewedUser(username="system:serviceaccount:team:billing", audiences=tuple(audiences))


def jwt(exp: float) -> str:
    part = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"e30.{part}.sig"


@pytest.mark.parametrize("exp_in", [3600.0, 5.0])
def test_reviews_are_cached_per_token_and_audience_never_past_the_token_expiry(exp_in: float) -> None:
    async def scenario() -> None:
        now = [1_000_000.0]
        reviewer = CountingReviewer()
        reviews = TokenReviews(reviewer, clock=lambda: now[0], ttl=60)
        token = jwt(now[0] + exp_in)
        results = await asyncio.gather(*(reviews.review(token, AUD, kind="pod") for _ in range(5)))
        assert len(reviewer.calls) == 1 and all(r.authenticated for r in results)  # one flight
        await reviews.review(token, AGENT_AUD, kind="agent")  # another audience is another review
        assert len(reviewer.calls) == 2
        now[0] += 10
        await reviews.review(token, AUD, kind="pod")
        assert len(reviewer.calls) == (2 if exp_in > 60 else 3)  # a token expiring sooner is reviewed again
        now[0] += 61
        await reviews.review(token, AUD, kind="pod")
        assert len(reviewer.calls) == (3 if exp_in > 60 else 4)

    asyncio.run(scenario())


def test_pod_identity_renews_twenty_minutes_before_expiry_yet_keeps_a_third_of_short_sessions() -> None:
    from vault_sts_operator.domain.delivery import POD_IDENTITY_MIN_RENEW_BEFORE
    from vault_sts_operator.domain.renewal import renewal_time

    issued = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def before(lifetime_s: int, floor: timedelta | None) -> float:
        expiration = issued + timedelta(seconds=lifetime_s)
        at = renewal_time(issued_at=issued, expiration=expiration, renew_before=None, jitter_key="k",
                          default_at_least=floor)
        return (expiration - at).total_seconds()

    floor = POD_IDENTITY_MIN_RENEW_BEFORE
    assert 600 <= before(1800, None) <= 720  # mode Secret: a third (plus a jitter of up to 10 % of the wait)
    assert 1200 <= before(1800, floor) <= 1260  # mode PodIdentity: 20 min, above the agents' 18-min margin
    assert 1200 <= before(3600, floor) <= 1440
    assert 1440 <= before(4320, floor) <= 1728  # a third is longer than 20 min: a third
    assert 200 <= before(300, floor) <= 210  # a session capped at 5 min: renewed after 100 s, not at once


def test_a_status_written_from_a_status_record_keeps_its_fingerprint() -> None:
    """After a restart the record comes from the status, which has no key id: a status write must not erase the
    fingerprint (a merge patch leaves a key it does not name)."""
    from vault_sts_operator.api.specs import parse_credential
    from vault_sts_operator.services.reconciler import CredentialReconciler

    spec = parse_credential("team", "b", {"identityRef": {"name": "ops"}, "roleArn": "arn:aws:iam::123456789012:role/r",
                                          "delivery": {"mode": "PodIdentity", "serviceAccounts": ["b"]}})
    held = stored().record
    from_status = IssuedRecord(held.issued_at, held.expiration, "h", "", "", held.assumed_role_arn)
    fields = CredentialReconciler._delivery_fields(spec, held)
    assert fields["credentialFingerprint"] == pi_fingerprint(held.access_key_id)
    assert fields["accessKeyId"] is None and fields["secretName"] is None  # removed: no key id in etcd
    assert "credentialFingerprint" not in CredentialReconciler._delivery_fields(spec, from_status)


def pi_fingerprint(access_key_id: str) -> str:
    from vault_sts_operator.domain.delivery import fingerprint

    return fingerprint(access_key_id)
