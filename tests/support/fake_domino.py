"""A fake Domino Model API and a webhook receiver: real HTTP servers on loopback.

Domino itself cannot run here. The shapes are those Domino's own maintenance tool reads
(`dominodatalab/domino-maintenance-mode`, `domino_maintenance_mode/interfaces/model_apis.py`,
state names from Domino's `ModelVersionStatus.scala` as quoted there):

- `GET /models/{model}/versions/{version}/json` -> `{"result": {"id", "number",
  "deploymentStatus": {"name", "isPending"}}}`
- `GET /models/{model}/versions/json?pageNumber=N&pageSize=M` -> `{"results": [...]}`
- `GET /v4/modelManager/getModels?projectId=P` -> `[{"id", "name", "activeModelVersionId"}]`
- `POST /v4/models/{model}/{version}/stopModelDeployment`, `.../startModelDeployment`

A stop stays pending ("Running", isPending) for a few polls before "Stopped"; a start goes
through "Preparing to build", "Building" and "Starting" (pending) before "Running"; a start
is refused (400) while the deployment is not stopped or still pending. `/access-token` plays
the run's local token endpoint (`http://localhost:8899/access-token`), answering plain text.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from syncd.app.embedded import free_port

_START_STEPS = ("Preparing to build", "Building", "Starting")


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Deployment:
    name: str = "Running"
    pending: bool = False
    polls: int = 0  # status polls since the last transition began
    stopping: bool = False
    starting: bool = False


@dataclass
class DominoState:
    deployments: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    # project id -> [(model id, name, active version id)]
    projects: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    fail_next: int = 0  # answer this many requests with 503 first
    fail_starts: int = 0  # answer this many startModelDeployment calls with 503
    starts_fail_build: bool = False  # every start ends "Failed" instead of "Running"
    polls_to_stop: int = 2
    polls_to_start: int = 3
    token: str | None = None  # served at /access-token when set

    def name(self, model: str, version: str) -> str:
        deployment = self.deployments[(model, version)]
        return deployment.name + (" (pending)" if deployment.pending else "")


class FakeDomino:
    """Serves the Model API calls above, records every request, and POSTs to /hook (a
    webhook receiver)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = DominoState()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def add(self, model: str, version: str, name: str = "Running", project: str = "p1") -> None:
        """A Model API version, running, made its model's active version."""
        self.state.deployments[(model, version)] = Deployment(name)
        models = self.state.projects.setdefault(project, [])
        models[:] = [m for m in models if m[0] != model] + [(model, f"api-{model}", version)]

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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.state.requests.append(
            Recorded(
                request.method, request.path, request.query_string, dict(request.headers), body
            )
        )
        if request.path == "/access-token":
            if self.state.token is None:
                return web.Response(status=404)
            return web.Response(text=self.state.token)
        if self.state.fail_next > 0:
            self.state.fail_next -= 1
            return web.Response(status=503, text="busy")
        parts = request.path.strip("/").split("/")
        if request.path == "/hook":
            return web.json_response({"ok": True})
        if parts == ["v4", "modelManager", "getModels"]:
            models = self.state.projects.get(request.query.get("projectId", ""), [])
            return web.json_response(
                [{"id": m, "name": n, "activeModelVersionId": v} for m, n, v in models]
            )
        if len(parts) == 5 and parts[:2] == ["v4", "models"]:
            return self._deployment_call(parts[2], parts[3], parts[4])
        if len(parts) == 4 and parts[0] == "models" and parts[2:] == ["versions", "json"]:
            versions = [
                self._version_document(v, d)
                for (m, v), d in self.state.deployments.items()
                if m == parts[1]
            ]
            page = int(request.query.get("pageNumber", "1"))
            size = int(request.query.get("pageSize", "10"))
            return web.json_response({"results": versions[(page - 1) * size : page * size]})
        if len(parts) == 5 and parts[0] == "models" and parts[4] == "json":
            key = (parts[1], parts[3])
            deployment = self.state.deployments.get(key)
            if deployment is None:
                return web.Response(status=404)
            self._advance(deployment)
            return web.json_response({"result": self._version_document(key[1], deployment)})
        return web.Response(status=404)

    def _deployment_call(self, model: str, version: str, action: str) -> web.Response:
        deployment = self.state.deployments.get((model, version))
        if deployment is None:
            return web.Response(status=404)
        if action == "stopModelDeployment":
            deployment.pending, deployment.stopping, deployment.starting = True, True, False
            deployment.polls = 0
        elif action == "startModelDeployment":
            if self.state.fail_starts > 0:
                self.state.fail_starts -= 1
                return web.Response(status=503, text="busy")
            if deployment.pending or deployment.name not in ("Stopped", "Failed", "Ready to run"):
                return web.Response(status=400, text=f"cannot start: {deployment.name}")
            deployment.name, deployment.pending = _START_STEPS[0], True
            deployment.starting, deployment.polls = True, 0
        else:
            return web.Response(status=404)
        return web.json_response({"ok": True})

    def _advance(self, deployment: Deployment) -> None:
        """A status poll moves a pending transition on (Domino's own pace, in polls)."""
        if not deployment.pending:
            return
        deployment.polls += 1
        if deployment.stopping and deployment.polls >= self.state.polls_to_stop:
            deployment.name, deployment.pending, deployment.stopping = "Stopped", False, False
        elif deployment.starting:
            if deployment.polls >= self.state.polls_to_start:
                done = "Failed" if self.state.starts_fail_build else "Running"
                deployment.name, deployment.pending, deployment.starting = done, False, False
            else:
                deployment.name = _START_STEPS[min(deployment.polls, len(_START_STEPS) - 1)]

    @staticmethod
    def _version_document(version: str, deployment: Deployment) -> dict[str, Any]:
        return {
            "id": version,
            "number": 1,
            "creator": {"name": "jane-ds"},
            "deploymentStatus": {"name": deployment.name, "isPending": deployment.pending},
        }
