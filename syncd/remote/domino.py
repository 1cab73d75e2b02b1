"""Domino's Model API, as Domino answers it: auth, the active version, deployment status.

Shapes from Domino's own tooling (`dominodatalab/domino-maintenance-mode`,
`interfaces/model_apis.py`, statuses from Domino's `ModelVersionStatus.scala`):

- `GET /models/{model}/versions/{version}/json` -> `{"result": {"deploymentStatus":
  {"name": ..., "isPending": bool}, ...}}`; stopped is a stopped name and not pending.
- `GET /v4/modelManager/getModels?projectId=P` -> `[{"id", "name", "activeModelVersionId"}]`.
- `POST /v4/models/{model}/{version}/stopModelDeployment` and `.../startModelDeployment`.

Auth in Domino's order of preference: the in-run API proxy (no header), an API key set in
syncd's own config, a bearer token (configured, else the run's access-token endpoint, fetched
afresh for each restart), and last the legacy `DOMINO_USER_API_KEY`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from syncd.errors import HookError
from syncd.settings import DominoSettings

__all__ = [
    "RUNNING_STATES",
    "STOPPED_STATES",
    "Deployment",
    "DominoApi",
    "DominoBusyError",
    "parse_deployment",
]

STOPPED_STATES = frozenset({"Stopped", "Failed", "Ready to run"})
RUNNING_STATES = frozenset({"Running"})
# Older or proxied answers spell the state flat and in other cases: mapped onto Domino's names.
_FLAT_NAMES = {
    "stopped": "Stopped",
    "inactive": "Stopped",
    "failed": "Failed",
    "running": "Running",
}


class DominoBusyError(HookError):
    """An answer a later attempt may cure: 5xx, 429, a refused connection, a refused start."""


@dataclass(frozen=True)
class Deployment:
    """A Model API version's deployment status as Domino reports it."""

    name: str
    pending: bool

    @property
    def stopped(self) -> bool:
        return self.name in STOPPED_STATES and not self.pending

    @property
    def running(self) -> bool:
        return self.name in RUNNING_STATES and not self.pending

    def __str__(self) -> str:
        return f"{self.name}{' (pending)' if self.pending else ''}"


def parse_deployment(document: Any) -> Deployment:
    """The status in `result.deploymentStatus.{name,isPending}`, or one of the flat shapes
    (`{"status": "Stopped"}`, `{"data": {"deploymentStatus": "Running"}}`)."""
    candidates = [document]
    if isinstance(document, dict):
        candidates += [document.get("result"), document.get("data")]
    for candidate in candidates:
        if not isinstance(candidate, dict):
            continue
        status = candidate.get("deploymentStatus")
        if isinstance(status, dict) and isinstance(status.get("name"), str):
            return Deployment(status["name"], bool(status.get("isPending", False)))
        for key in ("status", "deploymentStatus", "state"):
            value = candidate.get(key)
            if isinstance(value, str):
                return Deployment(_FLAT_NAMES.get(value.lower(), value), False)
    return Deployment("unknown", True)


class DominoApi:
    """One session's worth of calls to the Model API (open it per restart: tokens expire)."""

    def __init__(self, settings: DominoSettings, timeout: float = 60.0) -> None:
        self._settings = settings
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.base = (settings.api_proxy or settings.api_host or "").rstrip("/")
        self.auth = "none"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DominoApi:
        headers = await self._auth_headers()
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _auth_headers(self) -> dict[str, str]:
        settings = self._settings
        if settings.api_proxy:
            self.auth = "api proxy"
            return {}
        if settings.api_key is not None:
            self.auth = "api key"
            return {"X-Domino-Api-Key": settings.api_key.get_secret_value()}
        if settings.api_token is not None:
            self.auth = "bearer token"
            return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
        token = await self._run_token()
        if token is not None:
            self.auth = "run access token"
            return {"Authorization": f"Bearer {token}"}
        if settings.user_api_key is not None:
            self.auth = "legacy user api key"
            return {"X-Domino-Api-Key": settings.user_api_key.get_secret_value()}
        raise HookError(
            "no Domino credentials: not in a run (no access-token endpoint at "
            f"{settings.access_token_url}) and none of DOMINO_API_PROXY, domino.api_key, "
            "DOMINO_API_TOKEN or DOMINO_USER_API_KEY is set"
        )

    async def _run_token(self) -> str | None:
        """The run's short-lived token, or None where there is no such endpoint (not a run)."""
        url = self._settings.access_token_url
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(url) as response,
            ):
                if response.status != 200:
                    return None
                token = (await response.text()).strip()
        except (aiohttp.ClientError, TimeoutError):
            return None
        return token or None

    async def _call(self, method: str, path: str) -> Any:
        assert self._session is not None, "use DominoApi as an async context manager"
        url = f"{self.base}{path}"
        try:
            async with self._session.request(
                method, url, json={} if method == "POST" else None
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DominoBusyError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if status == 429 or status >= 500:
            raise DominoBusyError(f"{method} {url}: HTTP {status}")
        if status >= 400:
            raise HookError(f"{method} {url}: HTTP {status}: {text.strip()[:200]}")
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            return text

    async def deployment(self, model_id: str, version_id: str) -> Deployment:
        path = f"/models/{model_id}/versions/{version_id}/json"
        return parse_deployment(await self._call("GET", path))

    async def active_version(self, model_id: str, project_id: str) -> str:
        """The Model API's active version, from its project's model list."""
        document = await self._call("GET", f"/v4/modelManager/getModels?projectId={project_id}")
        models = document.get("data", document) if isinstance(document, dict) else document
        for model in models if isinstance(models, list) else []:
            if isinstance(model, dict) and model.get("id") == model_id:
                active = model.get("activeModelVersionId")
                if isinstance(active, str) and active:
                    return active
                raise HookError(f"Domino model {model_id} has no active version")
        raise HookError(f"Domino project {project_id} has no model {model_id}")

    async def stop(self, model_id: str, version_id: str) -> None:
        await self._call("POST", f"/v4/models/{model_id}/{version_id}/stopModelDeployment")

    async def start(self, model_id: str, version_id: str) -> None:
        try:
            await self._call("POST", f"/v4/models/{model_id}/{version_id}/startModelDeployment")
        except DominoBusyError:
            raise
        except HookError as exc:
            # Domino refuses a start while the deployment is still winding down (4xx): that
            # cures itself, so it is retried as a start, never given up on.
            raise DominoBusyError(str(exc)) from exc
