"""Wakes a credential's daemon early: its spec or rotate annotation changed, or its identity did."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

Key = tuple[str, str]  # (namespace, name)


@dataclass
class _Sleeper:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    identity: str = ""
    seen: tuple[object, ...] = ()


class Wakeups:
    def __init__(self) -> None:
        self._sleepers: dict[Key, _Sleeper] = {}

    def register(self, key: Key) -> None:
        self._sleepers.setdefault(key, _Sleeper())

    def unregister(self, key: Key) -> None:
        self._sleepers.pop(key, None)

    def note(self, key: Key, *, identity: str, fingerprint: tuple[object, ...]) -> None:
        """Remember what the last pass saw, so an event that changes nothing does not wake it."""
        sleeper = self._sleepers.get(key)
        if sleeper is not None:
            sleeper.identity, sleeper.seen = identity, fingerprint

    def changed(self, key: Key, fingerprint: tuple[object, ...]) -> None:
        sleeper = self._sleepers.get(key)
        if sleeper is not None and sleeper.seen != fingerprint:
            sleeper.event.set()

    def identity_changed(self, identity: str) -> None:
        for sleeper in self._sleepers.values():
            if sleeper.identity == identity:
                sleeper.event.set()

    async def sleep(self, key: Key, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken early."""
        sleeper = self._sleepers.get(key)
        if sleeper is None:
            await asyncio.sleep(seconds)
            return False
        try:
            await asyncio.wait_for(sleeper.event.wait(), timeout=max(seconds, 0))
        except TimeoutError:
            return False
        finally:
            sleeper.event.clear()
        return True

    def __len__(self) -> int:
        return len(self._sleepers)
