"""The controller's per-credential record feeds the metric series: seeded from the status a CR is first seen
with (a restart renders every credential's series before any pass), replaced by each pass, gone on delete."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from vault_sts_operator import metrics
from vault_sts_operator.services.controller import CredentialController
from vault_sts_operator.services.reconciler import CredentialReconciler, PassResult


class FakeReconciler:
    def __init__(self) -> None:
        self.results: list[PassResult] = []

    async def reconcile(self, body: dict[str, Any], resolve: Any, failures: int, **_: Any) -> PassResult:
        return self.results.pop(0)


class NoIdentities:
    def resolve(self, name: str) -> Any:
        return None  # the fake reconciler resolves nothing


def credential(name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
            "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "generation": 1},
            "spec": {"identityRef": {"name": "id"}}, "status": status}


def test_series_from_status_then_from_passes_then_gone() -> None:
    async def scenario() -> list[list[metrics.CredentialState]]:
        reconciler = FakeReconciler()
        controller = CredentialController(reconciler=cast(CredentialReconciler, reconciler), kube=cast(Any, None),
                                          identities=NoIdentities(), workers=1)
        controller.scheduler.pause()  # passes run only when the test calls them
        seen = []
        controller.observe(credential("ok", {
            "observedGeneration": 1, "accessKeyId": "ASIA...", "renewalTime": "2030-01-01T00:00:00Z",
            "expiration": "2030-01-01T01:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Issued"}]}), None)
        controller.observe(credential("bad", {
            "conditions": [{"type": "Ready", "status": "False", "reason": "NotAllowed"}]}), None)
        seen.append(list(controller.series.states()))
        reconciler.results = [PassResult(60.0, failures=1, reason="STSUnavailable"),
                              PassResult(60.0, failures=0, reason="Issued", renewal=1234.0)]
        await controller._pass(("team", "ok"))
        seen.append(list(controller.series.states()))
        await controller._pass(("team", "bad"))
        controller.observe(credential("ok", {}), "DELETED")
        seen.append(list(controller.series.states()))
        return seen

    at_start, after_failure, at_end = asyncio.run(scenario())
    ok_at = 1893456000.0  # 2030-01-01T00:00:00Z
    assert at_start == [
        metrics.CredentialState("team", "ok", ok_at + 3600, True, "Issued", ok_at),
        metrics.CredentialState("team", "bad", None, False, "NotAllowed", None),
    ]
    # a failed pass: not ready with its reason; the renewal time stays the last one scheduled
    assert after_failure[0] == metrics.CredentialState("team", "ok", ok_at + 3600, False, "STSUnavailable", ok_at)
    assert at_end == [metrics.CredentialState("team", "bad", None, True, "Issued", 1234.0)]


def test_a_list_without_a_credential_forgets_it_in_its_own_namespaces_only() -> None:
    async def scenario() -> list[tuple[str, str]]:
        controller = CredentialController(reconciler=cast(CredentialReconciler, FakeReconciler()),
                                          kube=cast(Any, None), identities=NoIdentities(), workers=1)
        controller.scheduler.pause()
        for namespace, name in (("team", "a"), ("team", "b"), ("other", "c")):
            controller.observe({**credential(name, {}), "metadata": {
                "name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1}}, None)
        controller.listed({("team", "a")}, lambda namespace: namespace == "team")
        return [(s.namespace, s.name) for s in controller.series.states()]

    assert asyncio.run(scenario()) == [("team", "a"), ("other", "c")]


def test_a_paused_replica_follows_the_active_ones_status_instead_of_running_its_queued_wake() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        controller = CredentialController(reconciler=cast(CredentialReconciler, FakeReconciler()),
                                          kube=cast(Any, None), identities=NoIdentities(), workers=1)
        controller.scheduler.pause()  # another replica is active
        controller.observe(credential("a", {}), "ADDED")  # new: this replica would issue it once active
        queued_at_first = ("team", "a") in controller.scheduler._queued
        controller.observe(credential("a", {  # the active replica issued it
            "observedGeneration": 1, "accessKeyId": "ASIA...", "renewalTime": "2030-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Issued"}]}), "MODIFIED")
        return (queued_at_first, ("team", "a") in controller.scheduler._queued,
                ("team", "a") in controller.scheduler._due)

    queued_at_first, queued_after, scheduled_after = asyncio.run(scenario())
    assert queued_at_first and not queued_after and scheduled_after


def test_a_failed_rotation_with_a_valid_secret_stays_ready() -> None:
    """The series follows the Ready condition: a failed pass that left valid credentials is still ready."""
    async def scenario() -> metrics.CredentialState:
        reconciler = FakeReconciler()
        controller = CredentialController(reconciler=cast(CredentialReconciler, reconciler), kube=cast(Any, None),
                                          identities=NoIdentities(), workers=1)
        controller.scheduler.pause()
        controller.observe(credential("ok", {}), None)
        reconciler.results = [PassResult(60.0, failures=1, reason="Issued", ready=True)]
        await controller._pass(("team", "ok"))
        return next(iter(controller.series.states()))

    state = asyncio.run(scenario())
    assert (state.ready, state.reason) == (True, "Issued")
