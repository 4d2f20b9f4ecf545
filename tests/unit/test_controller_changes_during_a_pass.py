"""What a pass leaves behind when its credential or Secret changes while it runs.

A Secret deleted while the pass that wrote it is still running (between its write and the pass's end: the status
patch, the Event) is read by the next pass, not trusted from memory: else it came back only at the next renewal.
Found on the stack with a slow Event post (tests/e2e/test_operator_privilege.py, namespaced scope). And a
credential deleted while its pass runs leaves nothing in the Pod Identity store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from vault_sts_operator.domain.credentials import TemporaryCredentials
from vault_sts_operator.domain.decisions import IssuedRecord
from vault_sts_operator.services.controller import CredentialController
from vault_sts_operator.services.credential_store import PodIdentityStore, Stored
from vault_sts_operator.services.gatherer import KnownSecret
from vault_sts_operator.services.reconciler import CredentialReconciler, PassResult

NOW = datetime(2030, 1, 1, tzinfo=UTC)
RECORD = IssuedRecord(issued_at=NOW, expiration=NOW + timedelta(hours=1), spec_hash="h", rotate_request="",
                      access_key_id="ASIAEXAMPLE", assumed_role_arn="arn:aws:sts::123456789012:assumed-role/r/s")
WRITTEN = KnownSecret("app", "41", RECORD)
KEY = ("team", "app")


class Reconciler:
    """Each pass returns the Secret it wrote; `during` runs inside the pass (after the write, before the end)."""

    def __init__(self) -> None:
        self.known: list[KnownSecret | None] = []
        self.during: list[Any] = []

    async def reconcile(self, body: dict[str, Any], resolve: Any, failures: int, *, known: KnownSecret | None,
                        **_: Any) -> PassResult:
        self.known.append(known)
        if self.during:
            self.during.pop(0)()
        return PassResult(3600.0, failures=0, reason="Issued", secret=WRITTEN)


class NoIdentities:
    def resolve(self, name: str) -> Any:
        return None


def credential() -> dict[str, Any]:
    return {"apiVersion": "vaultsts.io/v1alpha1", "kind": "AssumedRoleCredential",
            "metadata": {"name": "app", "namespace": "team", "uid": "uid-app", "generation": 1},
            "spec": {"identityRef": {"name": "id"}}, "status": {}}


def passes(deleted_during: list[bool], *, modified_during: bool = False) -> list[KnownSecret | None]:
    """The Secret each pass was handed as known, for passes run one after the other; a deletion (and optionally
    a change of the CR, which replaces its cache entry) happens inside the passes marked True."""
    async def scenario() -> list[KnownSecret | None]:
        reconciler = Reconciler()
        controller = CredentialController(reconciler=cast(CredentialReconciler, reconciler), kube=cast(Any, None),
                                          identities=NoIdentities(), workers=1, trust_known_secret=True)
        controller.scheduler.pause()  # passes run only when the test calls them
        controller.observe(credential(), None)

        def delete() -> None:
            if modified_during:  # a label change: same uid, a new cache entry
                body = credential()
                body["metadata"]["labels"] = {"changed": "yes"}
                controller.observe(body, "MODIFIED")
            controller.secret_deleted(*KEY)

        for deleted in deleted_during:
            reconciler.during.append(delete if deleted else (lambda: None))
            await controller._pass(KEY)
        return reconciler.known

    return asyncio.run(scenario())


def test_a_secret_written_and_left_alone_is_trusted_by_the_next_pass() -> None:
    assert passes([False, False]) == [None, WRITTEN]


def test_a_secret_deleted_during_the_pass_that_wrote_it_is_read_by_the_next() -> None:
    assert passes([True, False]) == [None, None]
    # and trusted again once a pass ran without a deletion
    assert passes([True, False, False]) == [None, None, WRITTEN]


def test_the_same_when_the_credential_changed_during_that_pass() -> None:
    assert passes([True, False], modified_during=True) == [None, None]


def test_credentials_a_pass_holds_after_its_credential_was_deleted_are_dropped() -> None:
    """Mode PodIdentity: the watch's DELETED arrives while the pass calls STS; the pass then puts what it issued
    in the store. Nothing of a deleted credential stays in memory (it could not be served: its binding is gone)."""
    creds = TemporaryCredentials(access_key_id="ASIAEXAMPLE", secret_access_key="secret", session_token="token",
                                 expiration=NOW + timedelta(hours=1))

    async def scenario() -> int:
        store = PodIdentityStore()
        reconciler = Reconciler()
        controller = CredentialController(reconciler=cast(CredentialReconciler, reconciler), kube=cast(Any, None),
                                          identities=NoIdentities(), workers=1, store=store)
        controller.scheduler.pause()
        controller.observe(credential(), None)

        def deleted_then_held() -> None:
            controller.observe(credential(), "DELETED")
            store.put(KEY, Stored(creds=creds, record=RECORD, uid="uid-app"))

        reconciler.during.append(deleted_then_held)
        await controller._pass(KEY)
        return len(store)

    assert asyncio.run(scenario()) == 0
