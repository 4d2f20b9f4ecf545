"""The agent's cache (agent/cache.py) on a fake clock: a hit answers without the operator; below the refresh margin
the copy is still served while exactly one refresh per credential runs; token entries end at the token's expiry or
after the revalidation period (then the old copy is only a fallback); refusals last 5 s; the token map is an LRU."""

from __future__ import annotations

from vault_sts_operator.agent.cache import (
    MIN_LEFT_SECONDS,
    REFRESH_RETRY_SECONDS,
    Cache,
    Credentials,
    Hit,
    Miss,
    Refusal,
)

T0 = 1_800_000_000.0
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def creds(key: str, expires_at: float) -> Credentials:
    return Credentials(answer={"AccessKeyId": key, "SecretAccessKey": f"secret-{key}", "Token": f"tok-{key}",
                               "Expiration": "x"}, expires_at=expires_at)


def test_a_stored_token_hits_until_revalidation_and_the_credential_is_shared_by_every_pod() -> None:
    clock, cache = Clock(), Cache(revalidate_seconds=300, refresh_margin_seconds=1080)
    assert cache.lookup("pod-a", clock.now) == Miss()
    cache.store("pod-a", token_expires_at=T0 + HOUR, credential="team/app", credentials=creds("K1", T0 + HOUR),
                now=clock.now)
    hit = cache.lookup("pod-a", clock.advance(299))
    assert isinstance(hit, Hit) and hit.credentials.answer["AccessKeyId"] == "K1" and not hit.refresh
    # another pod of the same credential: its own token entry, the same credential entry
    cache.store("pod-b", token_expires_at=T0 + HOUR, credential="team/app", credentials=creds("K1", T0 + HOUR),
                now=clock.now)
    assert cache.sizes() == {"tokens": 2, "credentials": 1, "refusals": 0}
    # revalidation due: a miss, with the still-usable copy as fallback for an unreachable operator
    found = cache.lookup("pod-a", clock.advance(1))
    assert isinstance(found, Miss) and found.fallback is not None and found.fallback.answer["AccessKeyId"] == "K1"
    assert isinstance(cache.lookup("pod-b", clock.now), Hit)


def test_a_token_entry_ends_at_the_tokens_expiry_even_before_revalidation() -> None:
    clock, cache = Clock(), Cache(revalidate_seconds=300)
    cache.store("pod", token_expires_at=T0 + 100, credential="team/app", credentials=creds("K1", T0 + HOUR),
                now=clock.now)
    assert isinstance(cache.lookup("pod", clock.advance(99)), Hit)
    assert cache.lookup("pod", clock.advance(1)) == Miss()  # no fallback for an expired token
    assert cache.sizes()["tokens"] == 0


def test_the_operator_may_shorten_revalidation_never_lengthen_it() -> None:
    clock, cache = Clock(), Cache(revalidate_seconds=300)
    cache.store("short", token_expires_at=T0 + HOUR, credential="c", credentials=creds("K", T0 + HOUR),
                now=clock.now, revalidate_after=60)
    cache.store("long", token_expires_at=T0 + HOUR, credential="c", credentials=creds("K", T0 + HOUR),
                now=clock.now, revalidate_after=3000)
    clock.advance(61)
    assert isinstance(cache.lookup("short", clock.now), Miss) and isinstance(cache.lookup("long", clock.now), Hit)
    clock.advance(240)
    assert isinstance(cache.lookup("long", clock.now), Miss)


def test_below_the_margin_the_copy_is_served_and_one_refresh_runs_per_credential() -> None:
    clock, cache = Clock(), Cache(revalidate_seconds=300, refresh_margin_seconds=1080)
    expires = T0 + 1200
    for pod in ("a", "b", "c"):
        cache.store(pod, token_expires_at=T0 + HOUR, credential="team/app", credentials=creds("K1", expires),
                    now=clock.now)
    first = cache.lookup("a", clock.advance(119))
    assert isinstance(first, Hit) and not first.refresh  # 1081 s left: above the margin
    first = cache.lookup("a", clock.advance(1))
    assert isinstance(first, Hit) and first.refresh and first.credentials.answer["AccessKeyId"] == "K1"
    assert cache.begin_refresh("team/app")  # this request starts the refresh
    others = [cache.lookup(pod, clock.now) for pod in ("a", "b", "c")]
    assert all(isinstance(o, Hit) and not o.refresh for o in others)  # served, no second refresh
    assert not cache.begin_refresh("team/app")
    # the refresh brings the rotated credential: every pod of the credential gets it
    cache.store("a", token_expires_at=T0 + HOUR, credential="team/app", credentials=creds("K2", T0 + 2 * HOUR),
                now=clock.now)
    cache.end_refresh("team/app", clock.now)
    for pod in ("a", "b", "c"):
        hit = cache.lookup(pod, clock.now)
        assert isinstance(hit, Hit) and hit.credentials.answer["AccessKeyId"] == "K2" and not hit.refresh


def test_a_refresh_that_brought_nothing_newer_is_retried_only_after_a_pause() -> None:
    clock, cache = Clock(), Cache(refresh_margin_seconds=1080)
    cache.store("a", token_expires_at=T0 + HOUR, credential="c", credentials=creds("K1", T0 + 600), now=clock.now)
    hit = cache.lookup("a", clock.now)
    assert isinstance(hit, Hit) and hit.refresh and cache.begin_refresh("c")
    cache.end_refresh("c", clock.now)  # the operator was down, or has not rotated yet
    hit = cache.lookup("a", clock.advance(REFRESH_RETRY_SECONDS - 1))
    assert isinstance(hit, Hit) and not hit.refresh
    hit = cache.lookup("a", clock.advance(1))
    assert isinstance(hit, Hit) and hit.refresh


def test_an_older_answer_does_not_replace_a_newer_copy() -> None:
    clock, cache = Clock(), Cache()
    cache.store("a", token_expires_at=T0 + HOUR, credential="c", credentials=creds("NEW", T0 + 2 * HOUR),
                now=clock.now)
    cache.store("b", token_expires_at=T0 + HOUR, credential="c", credentials=creds("OLD", T0 + HOUR), now=clock.now)
    hit = cache.lookup("b", clock.now)
    assert isinstance(hit, Hit) and hit.credentials.answer["AccessKeyId"] == "NEW"


def test_a_copy_with_less_than_15_seconds_left_is_never_served() -> None:
    clock, cache = Clock(), Cache(revalidate_seconds=300)
    cache.store("a", token_expires_at=T0 + HOUR, credential="c", credentials=creds("K1", T0 + 100), now=clock.now)
    assert isinstance(cache.lookup("a", clock.advance(100 - MIN_LEFT_SECONDS)), Hit)
    assert cache.lookup("a", clock.advance(0.5)) == Miss()  # and no fallback either


def test_refusals_are_repeated_for_five_seconds_per_token_digest() -> None:
    clock, cache = Clock(), Cache()
    cache.store("a", token_expires_at=T0 + HOUR, credential="c", credentials=creds("K1", T0 + HOUR), now=clock.now)
    refusal = Refusal(status=403, code="NotBound", message="ServiceAccount team/app is not bound")
    cache.refuse("a", refusal, clock.now)
    assert cache.lookup("a", clock.advance(4.9)) == refusal
    assert cache.lookup("other", clock.now) == Miss()
    assert cache.lookup("a", clock.advance(0.1)) == Miss()  # the grant was forgotten with the refusal
    # a later grant clears a refusal
    cache.refuse("a", refusal, clock.now)
    cache.store("a", token_expires_at=T0 + HOUR, credential="c", credentials=creds("K1", T0 + HOUR), now=clock.now)
    assert isinstance(cache.lookup("a", clock.now), Hit)


def test_the_token_map_is_bounded_least_recently_used_out_first() -> None:
    clock, cache = Clock(), Cache(max_tokens=3)
    for pod in ("a", "b", "c"):
        cache.store(pod, token_expires_at=T0 + HOUR, credential="c", credentials=creds("K", T0 + HOUR), now=clock.now)
    assert isinstance(cache.lookup("a", clock.now), Hit)  # a is now the most recently used
    cache.store("d", token_expires_at=T0 + HOUR, credential="c", credentials=creds("K", T0 + HOUR), now=clock.now)
    assert cache.sizes()["tokens"] == 3
    assert cache.lookup("b", clock.now) == Miss()
    assert all(isinstance(cache.lookup(pod, clock.now), Hit) for pod in ("a", "c", "d"))
    for n in range(10):
        cache.refuse(f"r{n}", Refusal(401, "PodTokenInvalid", "x"), clock.now)
    assert cache.sizes()["refusals"] == 3


def test_prune_drops_expired_tokens_refusals_and_credentials_no_token_points_to() -> None:
    clock, cache = Clock(), Cache(max_tokens=10)
    cache.store("a", token_expires_at=T0 + 100, credential="one", credentials=creds("K1", T0 + HOUR), now=clock.now)
    cache.store("b", token_expires_at=T0 + HOUR, credential="two", credentials=creds("K2", T0 + HOUR), now=clock.now)
    cache.refuse("c", Refusal(403, "NotBound", "x"), clock.now)
    cache.prune(clock.advance(101))
    assert cache.sizes() == {"tokens": 1, "credentials": 1, "refusals": 0}
    assert isinstance(cache.lookup("b", clock.now), Hit)
    cache.prune(clock.advance(HOUR))
    assert cache.sizes() == {"tokens": 0, "credentials": 0, "refusals": 0}


def test_no_key_in_the_repr_of_what_is_cached() -> None:
    text = repr(creds("AKIAEXAMPLE", T0))
    assert "AKIAEXAMPLE" not in text and "secret-" not in text
