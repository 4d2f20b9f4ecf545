"""Wakes a credential's daemon early: its spec or rotate annotation changed, its identity did, or its Secret
was deleted."""

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

    def wake(self, namespace: str, name: str) -> None:
        """Run the credential's next pass now (its Secret was deleted by hand, for one)."""
        sleeper = self._sleepers.get((namespace, name))
        if sleeper is not None:
            sleeper.event.set()

    def identity_changed(self, identity: str) -> None:
        for sleeper in self._sleepers.values():
            if sleeper.identity == identity:
                sleeper.event.set()

    async def sleep(self, key: Key, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken early.

        A timer handle sets the same event a wake-up sets, so a sleeping credential costs one
        future and one timer, not extra tasks (a thousand of them sleep at once).
        """
        sleeper = self._sleepers.get(key)
        if sleeper is None:
            await asyncio.sleep(seconds)
            return False
        timed_out = False

        def time_up() -> None:
            nonlocal timed_out
            timed_out = True
            sleeper.event.set()

        timer = asyncio.get_running_loop().call_later(max(seconds, 0), time_up)
        try:
            await sleeper.event.wait()
        finally:
            timer.cancel()
            sleeper.event.clear()
        return not timed_out

    def __len__(self) -> int:
        return len(self._sleepers)
