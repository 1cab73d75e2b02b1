"""A fake Domino Model API and a webhook receiver: real HTTP servers on loopback.

Domino itself cannot run here, so this implements the legacy Model API calls syncd makes
(stop, start, status) as a small state machine, and records every request it receives.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from syncd.app.embedded import free_port


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class DominoState:
    # (model_id, version_id) -> Running / Stopping / Stopped / Starting
    deployments: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    fail_next: int = 0  # answer this many requests with 503 first
    polls_to_stop: int = 2  # status polls a stopping deployment takes to be Stopped


class FakeDomino:
    """Serves /v4/models/{id}/{version}/stopModelDeployment, .../startModelDeployment,
    /models/{id}/versions/{version}/json, and records POSTs to /hook (a webhook receiver)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = DominoState()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._polls: dict[tuple[str, str], int] = {}

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def calls(self, suffix: str) -> list[Recorded]:
        return [r for r in self.state.requests if r.path.endswith(suffix)]

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.state.requests.append(
            Recorded(request.method, request.path, dict(request.headers), body)
        )
        if self.state.fail_next > 0:
            self.state.fail_next -= 1
            return web.Response(status=503, text="busy")
        parts = request.path.strip("/").split("/")
        if request.path == "/hook":
            return web.json_response({"ok": True})
        if len(parts) == 5 and parts[:2] == ["v4", "models"]:
            key = (parts[2], parts[3])
            if key not in self.state.deployments:
                return web.Response(status=404)
            if parts[4] == "stopModelDeployment":
                self.state.deployments[key] = "Stopping"
                self._polls[key] = 0
            elif parts[4] == "startModelDeployment":
                if self.state.deployments[key] != "Stopped":
                    return web.Response(status=409, text="not stopped")
                self.state.deployments[key] = "Running"
            return web.json_response({"ok": True})
        if len(parts) == 5 and parts[0] == "models" and parts[4] == "json":
            key = (parts[1], parts[3])
            if key not in self.state.deployments:
                return web.Response(status=404)
            if self.state.deployments[key] == "Stopping":
                self._polls[key] += 1
                if self._polls[key] >= self.state.polls_to_stop:
                    self.state.deployments[key] = "Stopped"
            document: Any = {"status": self.state.deployments[key]}
            return web.json_response(document)
        return web.Response(status=404)
