"""An in-memory MLflow registry client, for `MlflowRegistry(client=...)`.

The seam for controller tests and the simulation that need no `mlflow server`: the real
`MlflowRegistry` (paging, resolution, its error translation) runs over it unchanged. It answers
with MLflow's own entity classes (`mlflow.entities.model_registry.RegisteredModel`,
`ModelVersion`, `RegisteredModelAlias`; `mlflow.entities.Run`, `RunInfo`, `RunData`, `RunTag`;
`mlflow.store.entities.paged_list.PagedList` with its `token`) and fails as `MlflowClient` does:
an `MlflowException` with `error_code=RESOURCE_DOES_NOT_EXIST` for what does not exist (MLflow's
`mlflow/tracking/client.py` and `mlflow/store/model_registry/sqlalchemy_store.py`). `down` makes
every call fail the way a refused connection does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from mlflow.entities import Run, RunData, RunInfo, RunTag
from mlflow.entities.model_registry import ModelVersion, RegisteredModel, RegisteredModelAlias
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.entities.paged_list import PagedList


@dataclass
class _Version:
    run_id: str  # the child run the version was logged from
    source: str


@dataclass
class FakeMlflowClient:
    """model -> versions and aliases; run id -> (artifact URI, parent run id)."""

    versions: dict[str, dict[str, _Version]] = field(default_factory=dict)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)  # ms, as MLflow stamps models
    runs: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    down: bool = False
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)  # called from worker threads

    # ---- what a test sets up -------------------------------------------------------------------

    def add_run(self, run_id: str, artifact_uri: str, parent: str | None = None) -> None:
        self.runs[run_id] = (artifact_uri, parent)

    def add_version(self, model: str, version: str, child_run: str, source: str) -> None:
        self.versions.setdefault(model, {})[version] = _Version(child_run, source)
        self._touch(model)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.aliases.setdefault(model, {})[alias] = version
        self._touch(model)

    def _touch(self, model: str) -> None:
        self.updated[model] = int(time.time() * 1000)

    # ---- what MlflowRegistry calls -------------------------------------------------------------

    def search_registered_models(
        self, max_results: int = 100, page_token: str | None = None, **_: object
    ) -> PagedList[RegisteredModel]:
        self._answer()
        names = sorted(self.versions)
        start = int(page_token or 0)
        page = names[start : start + max_results]
        token = str(start + max_results) if start + max_results < len(names) else None
        return PagedList([self._entity(name) for name in page], token)

    def get_registered_model(self, name: str) -> RegisteredModel:
        self._answer()
        if name not in self.versions:
            raise _missing(f"Registered Model with name={name} not found")
        return self._entity(name)

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        self._answer()
        found = self.versions.get(name, {}).get(str(version))
        if found is None:
            raise _missing(f"Model Version (name={name}, version={version}) not found")
        return ModelVersion(
            name, str(version), 0, source=found.source, run_id=found.run_id, current_stage="None"
        )

    def get_run(self, run_id: str) -> Run:
        self._answer()
        if run_id not in self.runs:
            raise _missing(f"Run with id={run_id} not found")
        artifact_uri, parent = self.runs[run_id]
        tags = [RunTag("mlflow.parentRunId", parent)] if parent else []
        info = RunInfo(run_id, "0", "sim", "FINISHED", 0, None, "active", artifact_uri)
        return Run(info, RunData(tags=tags))

    def _answer(self) -> None:
        with self._lock:
            self.calls += 1
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")

    def _entity(self, name: str) -> RegisteredModel:
        aliases = [RegisteredModelAlias(a, v) for a, v in self.aliases.get(name, {}).items()]
        return RegisteredModel(name, last_updated_timestamp=self.updated.get(name), aliases=aliases)


def _missing(message: str) -> MlflowException:
    return MlflowException(message, error_code=RESOURCE_DOES_NOT_EXIST)
