"""The list-and-watch loop (services/watch.py) and the identity catalog, against a scripted API.

The loop's behaviour on the real API server is covered by every end-to-end test (the operator finds its
credentials through it); these tables pin the sequencing a live server rarely shows on demand: pages,
an expired resourceVersion, a failed watch, a relist that no longer has an object, namespace scoping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from vault_sts_operator.clients import kube_paths
from vault_sts_operator.clients.kube import ResourceVersionExpired
from vault_sts_operator.config import OperatorConfig
from vault_sts_operator.domain.backoff import ExponentialBackoff
from vault_sts_operator.domain.errors import IdentityNotFoundError, KubernetesError
from vault_sts_operator.services.identity_catalog import IdentityCatalog
from vault_sts_operator.services.watch import MIN_WATCH_TIMEOUT, ListWatch, SecretDeletions, credential_sources, sources


def obj(name: str, rv: str, namespace: str = "team", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, "uid": f"uid-{name}"},
            "spec": spec}


class Stop(Exception):
    pass


class ScriptedKube:
    """Answers list pages and watch streams from scripts; raises Stop when the script runs out."""

    def __init__(self, lists: list[list[dict[str, Any]] | Exception], watches: list[list[dict[str, Any]] | Exception],
                 page_size: int) -> None:
        self.lists = lists
        self.watches = watches
        self.page_size = page_size
        self.calls: list[str] = []
        self._pages: list[dict[str, Any]] = []

    async def list_page(self, path: str, *, limit: int, continue_token: str = "", label_selector: str = "",
                        metadata_only: bool = False) -> dict[str, Any]:
        self.calls.append(f"list {continue_token or '-'}")
        if not continue_token:
            if not self.lists:
                raise Stop
            items = self.lists.pop(0)
            if isinstance(items, Exception):
                raise items
            chunks = [items[i:i + limit] for i in range(0, len(items), limit)] or [[]]
            self._pages = [{"kind": "AssumedRoleCredentialList", "apiVersion": "vaultsts.io/v1alpha1",
                            "metadata": {"resourceVersion": "100", "continue": f"p{i + 1}" if i + 1 < len(chunks)
                                         else ""}, "items": chunk} for i, chunk in enumerate(chunks)]
        return self._pages.pop(0)

    async def watch(self, path: str, resource_version: str, *, timeout_seconds: int, label_selector: str = "",
                    metadata_only: bool = False) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(f"watch {resource_version}")
        if not self.watches:
            raise Stop
        events = self.watches.pop(0)
        if isinstance(events, Exception):
            raise events
        for event in events:
            yield event


def run(kube: ScriptedKube) -> tuple[list[tuple[str, str | None]], list[set[tuple[str, str]]]]:
    seen: list[tuple[str, str | None]] = []
    listed: list[set[tuple[str, str]]] = []
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    watch = ListWatch(kube, "/apis/x", on_event=lambda o, t: seen.append((o["metadata"]["name"], t)),  # type: ignore[arg-type]
                      on_listed=listed.append, page_size=kube.page_size, sleep=sleep)
    with pytest.raises(Stop):
        asyncio.run(watch.run())
    return seen, listed


def test_pages_then_watch_from_the_list_version_then_from_the_last_seen() -> None:
    kube = ScriptedKube(
        lists=[[obj("a", "1"), obj("b", "2"), obj("c", "3")]],
        watches=[[{"type": "MODIFIED", "object": obj("a", "101")},
                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}}],
                 [{"type": "DELETED", "object": obj("b", "160")}]],
        page_size=2)
    seen, listed = run(kube)
    assert seen == [("a", None), ("b", None), ("c", None), ("a", "MODIFIED"), ("b", "DELETED")]
    assert listed == [{("team", "a"), ("team", "b"), ("team", "c")}]
    # two pages, then each watch resumes where the previous one ended (the bookmark's version)
    assert kube.calls == ["list -", "list p1", "watch 100", "watch 150", "watch 160"]


def test_expired_version_lists_again_and_reports_what_the_new_list_has() -> None:
    kube = ScriptedKube(
        lists=[[obj("a", "1"), obj("b", "2")], [obj("a", "1")]],
        watches=[ResourceVersionExpired("gone")], page_size=10)
    seen, listed = run(kube)
    assert seen == [("a", None), ("b", None), ("a", None)]
    assert listed == [{("team", "a"), ("team", "b")}, {("team", "a")}]  # b was deleted meanwhile
    assert kube.calls == ["list -", "watch 100", "list -", "watch 100"]


def test_a_failed_watch_backs_off_and_resumes_from_the_same_version() -> None:
    kube = ScriptedKube(lists=[[obj("a", "1")]], watches=[KubernetesError("HTTP 0 unreachable"), []],
                        page_size=10)
    run(kube)
    assert kube.calls == ["list -", "watch 100", "watch 100", "watch 100"]


def test_sources_per_namespace_cluster_wide_or_filtered() -> None:
    (everything,) = credential_sources(())
    assert everything[0] == "/apis/vaultsts.io/v1alpha1/assumedrolecredentials" and everything[1]("any")
    exact = credential_sources(("a", "b", "a"))
    assert [path for path, _ in exact] == ["/apis/vaultsts.io/v1alpha1/namespaces/a/assumedrolecredentials",
                                           "/apis/vaultsts.io/v1alpha1/namespaces/b/assumedrolecredentials"]
    assert exact[0][1]("a") and not exact[0][1]("b")  # each watch's list answers for its own namespace only
    (globbed,) = credential_sources(("team-*, !team-x", "ops"))  # each pattern adds namespaces
    assert globbed[0].endswith("/assumedrolecredentials") and "/namespaces/" not in globbed[0]
    assert [ns for ns in ("team-a", "team-x", "ops", "other") if globbed[1](ns)] == ["team-a", "ops"]
    (bracket,) = credential_sources(("team-[ab]",))  # fnmatch's set: a pattern too, not a namespace's name
    assert "/namespaces/" not in bracket[0]
    assert [ns for ns in ("team-a", "team-b", "team-c") if bracket[1](ns)] == ["team-a", "team-b"]


def test_identity_catalog_resolves_and_wakes_on_change_only() -> None:
    woken: list[str] = []
    catalog = IdentityCatalog(OperatorConfig(allowed_vault_addresses=("https://127.0.0.1:8200",)),
                              on_change=woken.append)
    spec = {"vault": {"address": "https://127.0.0.1:8200/", "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}},
            "accessKey": {"kv": {"path": "aws/ci"}},
            "mfa": {"serialNumber": "arn:aws:iam::123456789012:mfa/ci", "totp": {"key": "ci"}},
            "allowedNamespaces": ["team"], "allowedRoleArns": ["arn:aws:iam::123456789012:role/r"]}
    with pytest.raises(IdentityNotFoundError):
        catalog.resolve("ci")
    catalog.observe(obj("ci", "1", namespace="", **spec), None)
    catalog.observe({**obj("ci", "2", namespace="", **spec), "status": {"x": 1}}, "MODIFIED")  # status only
    assert woken == ["ci"]
    assert catalog.resolve("ci").name == "ci"
    catalog.listed(set())  # a relist without it: deleted while the watch was away
    assert woken == ["ci", "ci"]
    with pytest.raises(IdentityNotFoundError):
        catalog.resolve("ci")


def test_secret_deletions_wake_the_owner_also_when_a_relist_misses_the_secret() -> None:
    woken: list[tuple[str, str]] = []
    secrets = SecretDeletions(lambda namespace, name: woken.append((namespace, name)))
    label = "vaultsts.io/credential"

    def secret(namespace: str, name: str, owner: str) -> dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": name, "labels": {label: owner}}}

    secrets.observe(secret("a", "app-aws", "app"), None)
    secrets.observe(secret("b", "db-aws", "db"), "ADDED")
    secrets.observe(secret("a", "app-aws", "app"), "MODIFIED")
    assert woken == []
    secrets.observe(secret("a", "app-aws", "app"), "DELETED")
    assert woken == [("a", "app")]
    secrets.observe(secret("a", "app-aws", "app"), "ADDED")
    secrets.listed({("b", "db-aws")}, lambda namespace: namespace == "a")  # namespace a's list lost app-aws
    assert woken == [("a", "app"), ("a", "app")]
    secrets.listed(set(), lambda namespace: namespace == "a")  # b is another watch's: not touched
    assert woken == [("a", "app"), ("a", "app")]
    assert sources(("a",), kube_paths.secrets)[0][0] == "/api/v1/namespaces/a/secrets"


# -- the reflector's behaviour (issue 18) ------------------------------------------------------------------


def test_backoff_steps_as_client_gos_reflector() -> None:
    low, high = ExponentialBackoff(), ExponentialBackoff()
    now = 1000.0
    lows, highs = [], []
    for _ in range(9):
        now += 1.0  # failures a second apart: no reset
        lows.append(round(low.next_delay(now, 0.0), 3))
        highs.append(round(high.next_delay(now, 0.999999), 3))
    assert lows == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]  # doubling, capped at 30 s
    assert highs == [round(2 * d, 3) for d in lows]  # jitter 1.0: up to twice the step
    assert low.next_delay(now + 119.0, 0.0) == 30.0  # under 2 min since the last failure: no reset
    assert low.next_delay(now + 119.0 + 120.5, 0.0) == 0.8  # 2 min without a failure: from the start again


def test_failures_back_off_with_jitter_within_client_gos_bounds() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    kube = ScriptedKube(lists=[[obj("a", "1")]], watches=[KubernetesError("HTTP 503") for _ in range(12)], page_size=10)
    watch = ListWatch(kube, "/apis/x", on_event=lambda o, t: None, on_listed=lambda keys: None,  # type: ignore[arg-type]
                      sleep=sleep, clock=lambda: 0.0)
    with pytest.raises(Stop):
        asyncio.run(watch.run())
    steps = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    assert len(sleeps) == 12 and watch.failures == 12
    assert all(step <= slept < 2 * step for step, slept in zip(steps, sleeps, strict=True)), sleeps
    assert len({round(slept / step, 6) for step, slept in zip(steps, sleeps, strict=True)}) > 1  # jittered
    assert kube.calls == ["list -"] + ["watch 100"] * 13  # each retry from the same version, no relist


def test_watch_timeouts_are_randomised_between_one_and_two_minimums() -> None:
    timeouts: list[int] = []

    class Recording(ScriptedKube):
        def watch(self, path: str, resource_version: str, *, timeout_seconds: int, label_selector: str = "",
                  metadata_only: bool = False) -> AsyncIterator[dict[str, Any]]:
            timeouts.append(timeout_seconds)
            return super().watch(path, resource_version, timeout_seconds=timeout_seconds)

    ticks = iter(range(0, 10_000, 5))  # each watch "lasts" 5 s: not a very short one
    kube = Recording(lists=[[]], watches=[[] for _ in range(40)], page_size=10)
    watch = ListWatch(kube, "/apis/x", on_event=lambda o, t: None, on_listed=lambda keys: None,  # type: ignore[arg-type]
                      clock=lambda: float(next(ticks)))
    with pytest.raises(Stop):
        asyncio.run(watch.run())
    assert len(timeouts) == 41 and all(MIN_WATCH_TIMEOUT <= t < 2 * MIN_WATCH_TIMEOUT for t in timeouts)
    assert len(set(timeouts)) > 10  # spread, so the watches of many replicas do not end together
    edges = ListWatch(kube, "/x", on_event=lambda o, t: None, on_listed=lambda keys: None,  # type: ignore[arg-type]
                      rand=lambda: 0.0)
    assert edges.watch_timeout() == 300
    edges._rand = lambda: 0.999999
    assert edges.watch_timeout() == 599


def test_bookmarks_advance_the_version_and_every_step_is_progress() -> None:
    progress: list[str] = []
    seen: list[tuple[str, str | None]] = []

    def on_event(o: Any, t: str | None) -> None:
        seen.append((o["metadata"]["name"], t))
        progress.append(f"event {o['metadata']['name']}")

    ticks = iter(range(0, 10_000, 5))
    kube = ScriptedKube(lists=[[obj("a", "1"), obj("b", "2")]],
                        watches=[[{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}},
                                  {"type": "ADDED", "object": obj("c", "151")}],
                                 [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "170"}}}]],
                        page_size=1)
    watch = ListWatch(kube, "/apis/x", on_event=on_event, on_listed=lambda keys: progress.append("listed"),  # type: ignore[arg-type]
                      on_progress=lambda: progress.append("progress"), page_size=1, clock=lambda: float(next(ticks)))
    with pytest.raises(Stop):
        asyncio.run(watch.run())
    assert kube.calls == ["list -", "list p1", "watch 100", "watch 151", "watch 170"]
    assert watch.bookmarks == 2 and watch.version == "170" and watch.lists == 1
    assert progress == ["event a", "progress",  # page 1
                        "event b", "progress", "listed", "progress",  # page 2, then the complete list
                        "progress", "event c", "progress", "progress",  # bookmark, event, the watch's clean end
                        "progress", "progress"]  # bookmark, clean end


def test_a_watch_that_ends_at_once_without_an_event_is_a_failure() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    kube = ScriptedKube(lists=[[]], watches=[[], []], page_size=10)
    watch = ListWatch(kube, "/apis/x", on_event=lambda o, t: None, on_listed=lambda keys: None,  # type: ignore[arg-type]
                      sleep=sleep, clock=lambda: 0.0)
    with pytest.raises(Stop):
        asyncio.run(watch.run())
    assert len(sleeps) == 2 and watch.failures == 2  # backed off, not a hot loop


def test_an_exception_in_on_event_ends_the_run_with_it_and_closes_the_stream() -> None:
    closed: list[bool] = []

    class Closing(ScriptedKube):
        async def watch(self, path: str, resource_version: str, *, timeout_seconds: int, label_selector: str = "",
                        metadata_only: bool = False) -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"type": "MODIFIED", "object": obj("bad", "101")}
                yield {"type": "MODIFIED", "object": obj("next", "102")}
            finally:
                closed.append(True)

    def on_event(o: Any, t: str | None) -> None:
        if o["metadata"]["name"] == "bad" and t == "MODIFIED":
            raise KeyError("a bug in observe")

    kube = Closing(lists=[[obj("bad", "1")]], watches=[], page_size=10)
    watch = ListWatch(kube, "/apis/x", on_event=on_event, on_listed=lambda keys: None)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="a bug in observe"):
        asyncio.run(watch.run())
    assert closed == [True] and watch.failures == 0 and watch.version == "100"  # not retried in place
