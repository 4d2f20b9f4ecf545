"""Every AssumedRoleCredential as the watch last showed it, bounded per CR: what a pass is run from.

Per credential the cache holds the CR as compact JSON (`compact`: names, uid, generation, the rotate annotation
hashed when long, the spec unless larger than MAX_SPEC_BYTES, the status; no managedFields), deflated against a
preset dictionary of a typical body (`pack`: about 1.1 KB become about 0.25 KB, for some 20 microseconds), parsed
again only for a pass, plus what the controller learns between passes: whether a Secret was ever issued (`fresh`),
the Secret the last pass wrote or read, the count of failed passes, and the values of its metric series.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vault_sts_operator.api import constants as c
from vault_sts_operator.api.conditions import find_condition
from vault_sts_operator.domain import reasons
from vault_sts_operator.domain.object_meta import Key
from vault_sts_operator.domain.sts_limits import MAX_SPEC_BYTES, OVERSIZED_SPEC
from vault_sts_operator.domain.timefmt import parse_time
from vault_sts_operator.services.gatherer import KnownSecret

MAX_ROTATE_VALUE = 128  # longer vaultsts.io/rotate values are kept (and recorded on the Secret) as their hash


class CachedCredential:
    """One CR as the watch last showed it (plus the status our own passes wrote since)."""

    __slots__ = ("expiration", "fingerprint", "fresh", "identity", "raw", "ready", "reason", "renewal", "secret",
                 "secret_deletions")

    def __init__(self, raw: bytes, identity: str, fingerprint: tuple[object, ...], fresh: bool) -> None:
        self.raw = raw  # the compact JSON, packed (`pack`)
        self.identity = identity
        self.fingerprint = fingerprint
        self.fresh = fresh  # no Secret issued for it yet, as far as its status tells
        self.secret: KnownSecret | None = None  # the Secret as this process last wrote or read it
        # How many times the watch saw that Secret deleted: a pass that wrote it before a deletion it ran
        # alongside must not leave it known (services/controller.py `_pass`).
        self.secret_deletions = 0
        # For the metrics (services/credential_series.py renders them at scrape time):
        self.expiration: float | None = None  # Unix time its credentials expire
        self.ready: bool | None = None  # its Ready condition, as the status showed it or a pass left it
        self.reason = ""  # that condition's reason (interned: a handful of distinct values)
        self.renewal: float | None = None  # Unix time of its next scheduled rotation


@dataclass(frozen=True)
class Sighting:
    """What `CredentialCache.store` saw: a CR new to the cache, or one whose uid, generation or rotate request
    changed (an event that changes none of these stores the new body and returns no Sighting)."""

    first: bool  # not in the cache before (a new CR, or the first list after a start)
    renew_at: datetime | None  # status.renewalTime when the status says the current generation is issued


def fingerprint(body: Mapping[str, Any]) -> tuple[object, ...]:
    """What must trigger a pass: a new object (uid), a spec change (generation), a new rotate request."""
    meta = body.get("metadata") or {}
    return meta.get("uid"), meta.get("generation"), (meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION)


def bounded_rotate(value: object) -> str | None:
    """The rotate annotation as the cache keeps it: a long value (a tenant's metadata is bounded by nothing
    but the object's size) is kept as its hash. A pass only compares it with the one its Secret records."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= MAX_ROTATE_VALUE:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def encode(compact: Mapping[str, Any]) -> bytes:
    return json.dumps(compact, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


# A typical compact body (what `compact` keeps of an issued credential, as the operator writes its status): deflate
# finds most of each credential's JSON in it (keys, kinds, ARNs, condition reasons and messages). Changing it only
# changes how well new entries pack: it is fixed for the process, and entries never outlive the process.
_ZDICT = json.dumps({
    "apiVersion": c.API_VERSION, "kind": c.CREDENTIAL_KIND,
    "metadata": {"name": "", "namespace": "", "uid": "00000000-0000-0000-0000-000000000000", "generation": 1,
                 "annotations": {}},
    "spec": {"durationSeconds": 3600, "identityRef": {"name": ""}, "mfa": "session", "renewBefore": "15m",
             "roleArn": "arn:aws:iam::123456789012:role/", "roleSessionName": "",
             "target": {"profile": "default", "secretName": ""}},
    "status": {
        "accessKeyId": "ASIA", "assumedRoleArn": "arn:aws:sts::123456789012:assumed-role/",
        "conditions": [
            {"lastTransitionTime": "2026-01-01T00:00:00Z",
             "message": "issued ASIA for arn:aws:iam::123456789012:role/ into Secret  (no Secret issued yet); "
                        "expires 2026-01-01T00:00:00Z",
             "observedGeneration": 1, "reason": "Issued", "status": "True", "type": "Ready"},
            {"lastTransitionTime": "2026-01-01T00:00:00Z",
             "message": "the last attempt succeeded (2026-01-01T00:00:00Z)",
             "observedGeneration": 1, "reason": "Succeeded", "status": "False", "type": "RotationFailing"}],
        "expiration": "2026-01-01T00:00:00Z", "failedAttempts": 0, "issuedAt": "2026-01-01T00:00:00Z",
        "observedGeneration": 1, "renewalTime": "2026-01-01T00:00:00Z", "secretName": ""},
}, separators=(",", ":")).encode()


def pack(raw: bytes) -> bytes:
    deflate = zlib.compressobj(1, zdict=_ZDICT)
    return deflate.compress(raw) + deflate.flush()


def unpack(packed: bytes) -> bytes:
    inflate = zlib.decompressobj(zdict=_ZDICT)
    return inflate.decompress(packed) + inflate.flush()


def compact(body: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """What a pass needs of the CR, and its compact JSON: bounded per CR whatever the object's size.

    Of the metadata only the names, uid, generation and the rotate annotation (hashed when long); the spec whole
    unless its JSON exceeds MAX_SPEC_BYTES (more than the CRD's limits allow: a CR created before them, or with
    validation off), then a marker that parse_credential refuses as InvalidSpec before anything is read or sent.
    """
    meta = body.get("metadata") or {}
    rotate = bounded_rotate((meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION))
    small: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                     "generation": meta.get("generation"),
                     "annotations": {c.ROTATE_ANNOTATION: rotate} if rotate is not None else {}},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    raw = encode(small)
    if len(raw) > MAX_SPEC_BYTES:
        size = len(encode(small["spec"]))
        if size > MAX_SPEC_BYTES:
            small["spec"] = {OVERSIZED_SPEC: size}
            raw = encode(small)
    return small, raw


def scheduled_renewal(body: Mapping[str, Any]) -> datetime | None:
    """`status.renewalTime` when the status says the current generation was issued and is Ready."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    ready = find_condition(status.get("conditions"), reasons.READY)
    if (ready is None or ready.get("status") != "True" or status.get("observedGeneration") != meta.get("generation")
            or not status.get("renewalTime") or not status.get("accessKeyId")):
        return None
    if (meta.get("annotations") or {}).get(c.ROTATE_ANNOTATION):
        return None  # whether the request was served is recorded on the Secret: read it
    try:
        return parse_time(str(status["renewalTime"]))
    except ValueError:
        return None


def _status_expiration(body: Mapping[str, Any]) -> float | None:
    try:
        return parse_time(str(body["status"]["expiration"])).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class CredentialCache:
    def __init__(self) -> None:
        self._objects: dict[Key, CachedCredential] = {}
        self._failures: dict[Key, int] = {}  # consecutive failed passes (only credentials whose last pass failed)

    def store(self, key: Key, body: Mapping[str, Any], *, keep_unchanged: bool = True) -> Sighting | None:
        """Hold `body` for `key`. With `keep_unchanged`, an event that changes neither uid, generation nor rotate
        request only refreshes the held body (None: nothing to schedule); otherwise the entry is replaced (the
        Secret known for the same uid and the series values carried over) and its failure count reset."""
        small, raw = compact(body)
        raw = pack(raw)
        identity = sys.intern(str((small["spec"].get("identityRef") or {}).get("name", "")))
        print_ = fingerprint(small)
        old = self._objects.get(key)
        expiration = _status_expiration(small)
        if old is not None and old.fingerprint == print_ and keep_unchanged:
            old.raw = raw
            old.identity = identity
            old.expiration = expiration or old.expiration
            return None
        renew_at = scheduled_renewal(small)
        fresh = not small["status"].get("accessKeyId") and not small["status"].get("secretName")
        replacement = CachedCredential(raw, identity, print_, fresh=fresh)
        replacement.expiration = expiration
        if old is not None and old.fingerprint[0] == print_[0]:  # same object (uid): its Secret is still known
            replacement.secret, replacement.secret_deletions = old.secret, old.secret_deletions
            replacement.expiration = expiration or old.expiration
            replacement.ready, replacement.reason, replacement.renewal = old.ready, old.reason, old.renewal
        else:  # first sight (a restart): the series start from what the status says until a pass runs
            ready = find_condition(small["status"].get("conditions"), reasons.READY)
            if ready is not None:
                replacement.ready = ready.get("status") == "True"
                replacement.reason = sys.intern(str(ready.get("reason") or ""))
            replacement.renewal = renew_at.timestamp() if renew_at is not None else None
        self._objects[key] = replacement
        self._failures.pop(key, None)
        return Sighting(first=old is None, renew_at=renew_at)

    def forget(self, key: Key) -> None:
        self._objects.pop(key, None)  # its series go with it (they are read from here)
        self._failures.pop(key, None)

    def get(self, key: Key) -> CachedCredential | None:
        return self._objects.get(key)

    def body(self, cached: CachedCredential) -> dict[str, Any]:
        """The CR as a pass reads it (parsed from the compact JSON)."""
        result: dict[str, Any] = json.loads(unpack(cached.raw))
        return result

    def failures(self, key: Key) -> int:
        return self._failures.get(key, 0)

    def passed(self, key: Key, cached: CachedCredential, *, failures: int, reason: str, renewal: float | None,
               secret: KnownSecret | None, status: Mapping[str, Any] | None, ready: bool | None = None) -> None:
        """What a pass over `cached` (the entry held for `key`) left: kept until the watch shows it."""
        cached.fresh = False
        cached.ready = failures == 0 if ready is None else ready  # Ready stays True while a rotation fails
        cached.reason = sys.intern(reason)
        if renewal is not None:  # a failed pass keeps the last one (as the status does)
            cached.renewal = renewal
        if secret is not None:
            cached.secret = secret
            cached.expiration = secret.record.expiration.timestamp()
        if status:  # keep what this pass wrote until the watch brings it
            merged = json.loads(unpack(cached.raw))
            merged["status"] = {**merged.get("status", {}), **status}
            cached.raw = pack(encode(merged))
        if failures:
            self._failures[key] = failures
        else:
            self._failures.pop(key, None)

    def __iter__(self) -> Iterator[Key]:
        """The keys held, as a snapshot."""
        return iter(list(self._objects))

    def with_identity(self, identity: str) -> list[Key]:
        return [key for key, cached in self._objects.items() if cached.identity == identity]

    def items(self) -> Iterator[tuple[Key, CachedCredential]]:
        """A snapshot: safe while passes change the cache."""
        return iter(list(self._objects.items()))

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    def __len__(self) -> int:
        return len(self._objects)
