"""The probes: `/healthz` (liveness) fails when a supervised task made no progress for longer than its bound
(a watch that hears nothing, not even a bookmark, is as good as dead); `/readyz` says whether this replica
leads or stands by, and is ready either way (a standby that is never Ready would stall every rollout: the
Deployment waits for new pods to become Ready before it stops old ones).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, *, host: str, port: int, stalled: Callable[[], list[str]], role: Callable[[], str]) -> None:
        self._host, self._port = host, port
        self._stalled = stalled  # names of tasks without progress past their bound
        self._role = role  # "leader", "standby" or "standalone"
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        stalled = self._stalled()
        if stalled:
            log.error("liveness: failing, no progress from %s", ", ".join(stalled))
            return web.json_response({"ok": False, "stalled": stalled}, status=500)
        return web.json_response({"ok": True})

    async def _readyz(self, _request: web.Request) -> web.Response:
        return web.Response(text=json.dumps({"ready": True, "role": self._role()}), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("probes on http://%s:%d (/healthz, /readyz)", self._host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self) -> None:
        """A supervised task: serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
