"""Which replica runs credential passes: kopf's peering rule (domain/peering.py) and the gate that applies it to
the scheduler from the peering watch's events (services/peering.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from vault_sts_operator.clients.kube import KubeGateway
from vault_sts_operator.domain.peering import decide, has_own_entry, live_peers
from vault_sts_operator.services.peering import PeeringGate, peering_paths

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
GRACE = 5.0


def entries(*priorities: int, seen: datetime = T0, lifetime: int = 60) -> dict[str, Any]:
    return {f"pod-{p}": {"priority": p, "lastseen": seen.isoformat(), "lifetime": lifetime} for p in priorities}


def test_live_peers_drop_expired_and_malformed_entries() -> None:
    status = {**entries(3), **entries(4, seen=T0 - timedelta(seconds=61)), "junk": {"priority": "x"}, "odd": 7}
    assert [peer.priority for peer in live_peers(status, T0)] == [3]
    assert live_peers(None, T0) == []


def test_a_live_higher_peer_pauses_until_its_entry_expires() -> None:
    verdict = decide([entries(5, 9)], 5, T0, entered_at=T0, grace_seconds=GRACE)
    assert not verdict.active
    assert verdict.recheck_at == T0 + timedelta(seconds=60)
    after = T0 + timedelta(seconds=60)  # its lastseen was never renewed: dead
    assert decide([entries(9) | entries(5, seen=after)], 5, after, entered_at=T0, grace_seconds=GRACE).active


def test_no_pass_runs_before_the_replicas_own_entry_is_in_the_object() -> None:
    verdict = decide([entries(3)], 5, T0, entered_at=None, grace_seconds=GRACE)
    assert not verdict.active and verdict.recheck_at is None  # the next event (kopf's keep-alive) decides
    assert not decide([None], 5, T0, entered_at=None, grace_seconds=GRACE).active


def test_alone_with_its_own_entry_it_runs_at_once() -> None:
    assert decide([entries(5)], 5, T0, entered_at=T0, grace_seconds=GRACE).active


def test_a_live_lower_peer_gets_the_grace_to_pause_first() -> None:
    verdict = decide([entries(5, 3)], 5, T0, entered_at=T0, grace_seconds=GRACE)
    assert not verdict.active and verdict.recheck_at == T0 + timedelta(seconds=GRACE)
    later = T0 + timedelta(seconds=GRACE)
    assert decide([entries(5, 3, seen=later)], 5, later, entered_at=T0, grace_seconds=GRACE).active
    # A lower peer whose entry expires before the grace ends is looked at again then.
    dying = entries(5) | entries(3, seen=T0 - timedelta(seconds=58))
    assert decide([dying], 5, T0, entered_at=T0, grace_seconds=GRACE).recheck_at == T0 + timedelta(seconds=2)


def test_an_active_replica_stays_active_when_a_lower_one_starts() -> None:
    long_ago = T0 - timedelta(minutes=10)
    assert decide([entries(5, 3)], 5, T0, entered_at=long_ago, grace_seconds=GRACE).active


def test_every_peering_object_counts_namespaced_peering() -> None:
    assert not decide([entries(5), entries(5, 9)], 5, T0, entered_at=T0, grace_seconds=GRACE).active
    assert has_own_entry(entries(5), 5, T0) and not has_own_entry(entries(4), 5, T0)


def test_peering_paths_follow_kopf_cluster_or_per_namespace() -> None:
    assert peering_paths(()) == [("/apis/kopf.dev/v1/clusterkopfpeerings", "")]
    assert peering_paths(("team-*",)) == [("/apis/kopf.dev/v1/clusterkopfpeerings", "")]
    assert peering_paths(("a", "b", "a")) == [("/apis/kopf.dev/v1/namespaces/a/kopfpeerings", "a"),
                                              ("/apis/kopf.dev/v1/namespaces/b/kopfpeerings", "b")]


class Recorder:
    def __init__(self) -> None:
        self.paused = False
        self.changes: list[str] = []

    def pause(self) -> None:
        if not self.paused:
            self.changes.append("pause")
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.changes.append("resume")
        self.paused = False


def _peering(name: str, status: dict[str, Any], namespace: str = "") -> dict[str, Any]:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"metadata": meta, "status": status}


def test_the_gate_follows_the_watch_events() -> None:
    now = [T0]
    scheduler = Recorder()
    gate = PeeringGate(cast(KubeGateway, None), scheduler, name="vso", priority=5, namespaces=(),
                       clock=lambda: now[0], grace_seconds=GRACE)
    scheduler.pause()  # as start() does
    gate.evaluate()
    assert scheduler.paused  # nothing seen yet
    gate._on_event(_peering("vso", entries(3)), None)  # a lower replica, alone and active
    gate._on_event(_peering("other", entries(5)), None)  # another peering name: not ours
    assert gate.evaluate() is None and scheduler.paused
    gate._on_event(_peering("vso", entries(3, 5)), "MODIFIED")  # kopf wrote this replica's entry
    assert gate.evaluate() == T0 + timedelta(seconds=GRACE) and scheduler.paused
    now[0] = T0 + timedelta(seconds=GRACE)
    gate._on_event(_peering("vso", entries(3, 5, seen=now[0])), "MODIFIED")
    gate.evaluate()
    assert not scheduler.paused
    gate._on_event(_peering("vso", entries(3, 5, 9, seen=now[0])), "MODIFIED")  # a higher one arrives
    assert gate.evaluate() == now[0] + timedelta(seconds=60) and scheduler.paused
    gate._on_listed(set())  # the object is gone (a relist without it): no own entry, no pass
    gate.evaluate()
    assert scheduler.paused
    assert scheduler.changes == ["pause", "resume", "pause"]


def test_the_gate_needs_its_entry_in_every_namespace() -> None:
    scheduler = Recorder()
    gate = PeeringGate(cast(KubeGateway, None), scheduler, name="vso", priority=5, namespaces=("a", "b"),
                       clock=lambda: T0, grace_seconds=GRACE)
    gate._on_event(_peering("vso", entries(5), "a"), None)
    gate.evaluate()
    assert scheduler.paused
    gate._on_event(_peering("vso", entries(5), "b"), None)
    gate.evaluate()
    assert not scheduler.paused
    gate._on_event(_peering("vso", entries(5, 9), "b"), "MODIFIED")
    gate.evaluate()
    assert scheduler.paused


def test_the_gate_pauses_a_real_controller_and_the_active_gauge_says_so() -> None:
    import asyncio

    from vault_sts_operator import metrics
    from vault_sts_operator.services.controller import CredentialController
    from vault_sts_operator.services.reconciler import CredentialReconciler

    def active() -> float | None:
        return metrics.REGISTRY.get_sample_value("vault_sts_operator_active")

    async def scenario() -> list[float | None]:
        controller = CredentialController(reconciler=cast(CredentialReconciler, None), kube=cast(Any, None),
                                          workers=1)
        gate = PeeringGate(cast(KubeGateway, None), controller.scheduler, name="vso", priority=5, namespaces=(),
                           clock=lambda: T0, grace_seconds=GRACE)
        seen = [active()]  # standalone: runs passes
        controller.scheduler.pause()  # as gate.start() does
        seen.append(active())
        gate._on_event(_peering("vso", entries(5)), None)
        gate.evaluate()
        seen.append(active())
        gate._on_event(_peering("vso", entries(5, 9)), "MODIFIED")
        gate.evaluate()
        seen.append(active())
        return seen

    assert asyncio.run(scenario()) == [1.0, 0.0, 1.0, 0.0]
