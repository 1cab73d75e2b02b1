"""The few registry calls syncd makes, over MLflow's REST API, without importing MLflow.

`from mlflow import MlflowClient` costs 0.7-1.1 s of CPU (`python -X importtime`), which stood
between a one-shot `syncd sync` (or a KServe `syncd fetch models:/...`) starting and its first
GET. syncd reads five endpoints of the API, so it speaks them itself: the same URLs, JSON and
authentication as MLflow's own REST store (`mlflow/utils/rest_utils.py`,
`mlflow/store/model_registry/rest_store.py`): a bearer token (MLFLOW_TRACKING_TOKEN), basic auth
(MLFLOW_TRACKING_USERNAME/PASSWORD), MLFLOW_HTTP_REQUEST_TIMEOUT and
MLFLOW_HTTP_REQUEST_MAX_RETRIES (all as `settings.MlflowSettings` holds them), and
MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH (else REQUESTS_CA_BUNDLE, as
`requests` reads it), MLFLOW_TRACKING_CLIENT_CERT_PATH and the proxy variables. Where MLflow's
own client would add more (a request header or auth provider plugin, MLFLOW_TRACKING_AUTH),
`needs_mlflow_client` says so and syncd uses it.

The methods and the attributes of what they return are MlflowClient's, so `MlflowRegistry`
reads either.
"""

from __future__ import annotations

import base64
import json
import os
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from syncd import __version__
from syncd.settings import MlflowSettings

__all__ = ["MlflowRestClient", "MlflowRestError", "needs_mlflow_client"]

# Entry point groups through which MLflow's client changes what its requests carry.
_PLUGIN_GROUPS = (
    "mlflow.request_header_provider",
    "mlflow.request_auth_provider",
    "mlflow.tracking_store",
    "mlflow.model_registry_store",
)
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})  # as MLflow's client retries them


def needs_mlflow_client(environ: dict[str, str] | None = None) -> str | None:
    """Why only MLflow's own client can talk to this registry as MLflow would, or None."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("MLFLOW_TRACKING_AUTH"):
        return f"MLFLOW_TRACKING_AUTH={environ['MLFLOW_TRACKING_AUTH']}"
    from importlib.metadata import entry_points

    for group in _PLUGIN_GROUPS:
        found = [point.name for point in entry_points(group=group)]
        if found:
            return f"{group} plugin {found[0]}"
    return None


class MlflowRestError(Exception):
    """An answer other than 200, in MLflow's own terms (`error_code`, as its client raises)."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code


@dataclass
class ModelVersion:
    name: str
    version: str
    current_stage: str | None = None
    run_id: str | None = None
    source: str | None = None


@dataclass
class RegisteredModel:
    name: str
    aliases: dict[str, str] = field(default_factory=dict)
    latest_versions: list[ModelVersion] = field(default_factory=list)
    last_updated_timestamp: int | None = None


@dataclass
class RunInfo:
    run_id: str
    artifact_uri: str
    lifecycle_stage: str


@dataclass
class RunData:
    tags: dict[str, str]


@dataclass
class Run:
    info: RunInfo
    data: RunData


@dataclass
class LoggedModel:
    model_id: str
    artifact_location: str


class Page(list[RegisteredModel]):
    """One page of a search, with the token of the next (None on the last), as MLflow's."""

    def __init__(self, items: list[RegisteredModel], token: str | None) -> None:
        super().__init__(items)
        self.token = token


class MlflowRestClient:
    """MlflowClient's registry reads syncd makes, as REST calls (blocking; run in threads)."""

    def __init__(
        self, tracking_uri: str, mlflow: MlflowSettings, environ: dict[str, str] | None = None
    ) -> None:
        """`mlflow`: timeout, retries and credentials, as the settings took them from MLflow's
        variables or the config; `environ`: MLflow's TLS variables (default: this process's)."""
        environ = dict(os.environ) if environ is None else environ
        self._base = tracking_uri.rstrip("/")
        self._timeout = mlflow.timeout
        self._retries = mlflow.max_retries
        self._headers = {"User-Agent": f"syncd/{__version__}", "Accept": "application/json"}
        if mlflow.token:
            self._headers["Authorization"] = f"Bearer {mlflow.token}"
        elif mlflow.username and mlflow.password:
            pair = f"{mlflow.username}:{mlflow.password}".encode()
            self._headers["Authorization"] = f"Basic {base64.standard_b64encode(pair).decode()}"
        handlers: list[urllib.request.BaseHandler] = []
        if self._base.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=_tls_context(environ)))
        self._opener = urllib.request.build_opener(*handlers)

    # ---- the calls -----------------------------------------------------------------------------

    def search_registered_models(
        self, max_results: int = 1000, page_token: str | None = None
    ) -> Page:
        query: dict[str, Any] = {"max_results": max_results}
        if page_token:
            query["page_token"] = page_token
        answer = self._get("registered-models/search", query)
        models = [_registered(item) for item in answer.get("registered_models", [])]
        return Page(models, answer.get("next_page_token") or None)

    def get_registered_model(self, name: str) -> RegisteredModel:
        return _registered(self._get("registered-models/get", {"name": name})["registered_model"])

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        answer = self._get("model-versions/get", {"name": name, "version": version})
        return _version(answer["model_version"])

    def get_run(self, run_id: str) -> Run:
        run = self._get("runs/get", {"run_id": run_id})["run"]
        info = run.get("info", {})
        tags = {tag["key"]: tag.get("value", "") for tag in run.get("data", {}).get("tags", [])}
        return Run(
            RunInfo(
                info.get("run_id", run_id),
                info.get("artifact_uri", ""),
                info.get("lifecycle_stage", "active"),
            ),
            RunData(tags),
        )

    def get_logged_model(self, model_id: str) -> LoggedModel:
        answer = self._get(f"logged-models/{urllib.parse.quote(model_id, safe='')}", {})
        info = answer["model"]["info"]
        return LoggedModel(info.get("model_id", model_id), info["artifact_uri"])

    # ---- HTTP ----------------------------------------------------------------------------------

    def _get(self, endpoint: str, query: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._base}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, headers=self._headers)
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                with self._opener.open(request, timeout=self._timeout) as response:
                    answer: dict[str, Any] = json.loads(response.read() or b"{}")
                    return answer
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRY_STATUSES or last:
                    raise _error(exc) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if last:
                    raise
            # Exponential with full jitter, as MLflow's client backs off, but short: a daemon
            # polls again anyway.
            time.sleep(random.uniform(0, min(0.5 * 2**attempt, 8.0)))
        raise AssertionError("unreachable")


def _error(exc: urllib.error.HTTPError) -> MlflowRestError:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    code = str(body.get("error_code") or exc.reason or "")
    message = str(body.get("message") or "")[:500]
    return MlflowRestError(exc.code, code, message)


def _tls_context(environ: dict[str, str]) -> ssl.SSLContext:
    if environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    roots = (
        environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
        or environ.get("REQUESTS_CA_BUNDLE")
        or environ.get("CURL_CA_BUNDLE")
    )
    context = ssl.create_default_context(cafile=roots or None)
    client = environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
    if client:
        context.load_cert_chain(client)
    return context


def _version(item: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=str(item.get("name", "")),
        version=str(item.get("version", "")),
        current_stage=item.get("current_stage"),
        run_id=item.get("run_id") or None,
        source=item.get("source"),
    )


def _registered(item: dict[str, Any]) -> RegisteredModel:
    updated = item.get("last_updated_timestamp")
    return RegisteredModel(
        name=str(item["name"]),
        aliases={str(a["alias"]): str(a["version"]) for a in item.get("aliases", [])},
        latest_versions=[_version(v) for v in item.get("latest_versions", [])],
        last_updated_timestamp=int(updated) if updated is not None else None,
    )
