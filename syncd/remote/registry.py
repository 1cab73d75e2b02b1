"""The MLflow registry: which version each target wants, and the run that holds its binaries.

Desired state comes from one paged `search_registered_models` (aliases and latest stage
versions included), shared by every target; a version is resolved to its parent run once and
cached, so an idle poll costs one request per 1,000 registered models.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from syncd.core.desired import (
    DesiredModel,
    DesiredState,
    ModelVersionRef,
    RegisteredModel,
    Role,
    pointed,
)
from syncd.core.resolution import parse_model_context, resolve_parent_run
from syncd.core.resolved import Resolution, ResolutionCache
from syncd.errors import (
    RegistryError,
    RegistryNotFoundError,
    ResolutionError,
    SyncdError,
    is_unreachable,
)
from syncd.remote.failure import describe_failure, host_of
from syncd.settings import ResolutionSettings, TargetSettings

# DesiredModel and DesiredState live in core.desired (every registry adapter makes them);
# named here too for the callers that took them from this module.
__all__ = [
    "DesiredModel",
    "DesiredState",
    "MlflowRegistry",
    "ModelVersionRef",
]

log = logging.getLogger(__name__)

ContextReader = Callable[[str], Awaitable[bytes | None]]

# New versions are resolved concurrently, but gently: the Experiment Manager is shared.
_RESOLVE_CONCURRENCY = 8


def _is_not_found(exc: BaseException) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or (
        "RESOURCE_DOES_NOT_EXIST" in str(exc)
    )


def _registered(entity: Any) -> RegisteredModel:
    stages: dict[str, str] = {}
    for version in getattr(entity, "latest_versions", None) or []:
        stage = getattr(version, "current_stage", None)
        if stage and stage != "None":
            known = stages.get(stage)
            if known is None or int(version.version) > int(known):
                stages[stage] = str(version.version)
    updated = getattr(entity, "last_updated_timestamp", None)
    return RegisteredModel(
        name=entity.name,
        aliases={alias: str(v) for alias, v in (entity.aliases or {}).items()},
        stages=stages,
        updated_at=updated / 1000 if isinstance(updated, int | float) else None,
    )


class MlflowRegistry:
    """Reads the registry with MlflowClient; every call runs in a worker thread."""

    def __init__(
        self,
        tracking_uri: str,
        resolution: ResolutionSettings,
        read_artifact: ContextReader,
        client: Any | None = None,
        cache: ResolutionCache | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        if client is None:
            # The client costs about a second to import: only processes that ask the
            # registry pay for it.
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._client = client
        self._where = f"MLflow at {host_of(tracking_uri)}"
        self._resolution = resolution
        self._read_artifact = read_artifact
        self.cache = cache or ResolutionCache()
        self._on_request = on_request

    async def _call(self, what: str, function: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """One client call off the event loop; every failure leaves as a RegistryError."""
        if self._on_request is not None:
            self._on_request()
        try:
            with warnings.catch_warnings():
                # Stages are deprecated in MLflow, but still what some teams deploy with.
                warnings.simplefilter("ignore", FutureWarning)
                return await asyncio.to_thread(function, *args, **kw)
        except SyncdError:
            raise
        except Exception as exc:
            if _is_not_found(exc):
                raise RegistryNotFoundError(f"{self._where}: {what}: not found") from exc
            raise RegistryError(f"{self._where}: {what}: {describe_failure(exc)}") from exc

    # ---- desired state -----------------------------------------------------------------------

    async def list_models(self) -> list[RegisteredModel]:
        """Every registered model with its aliases and stages: one call per 1,000 models."""
        found: list[RegisteredModel] = []
        token = None
        while True:
            page = await self._call(
                "search_registered_models",
                self._client.search_registered_models,
                max_results=1000,
                page_token=token,
            )
            found.extend(_registered(entity) for entity in page)
            token = getattr(page, "token", None)
            if not token:
                return found

    async def get_model(self, name: str) -> RegisteredModel | None:
        """One model, fresh (a webhook named it); None when it does not exist."""
        try:
            entity = await self._call(
                f"registered model {name}", self._client.get_registered_model, name
            )
        except RegistryNotFoundError:
            return None
        return _registered(entity)

    async def wanted(
        self, target: TargetSettings, models: Iterable[RegisteredModel]
    ) -> DesiredState:
        """Resolve what the target points at; per-model failures are returned, not raised.

        Cached versions cost nothing; new ones are resolved concurrently (bounded). A failure
        of the registry itself (not of one model) voids the whole pass.
        """
        state = DesiredState(target.name, [], {})
        refs = pointed(target, models)
        limit = asyncio.Semaphore(_RESOLVE_CONCURRENCY)

        async def one(ref: ModelVersionRef, role: Role) -> DesiredModel | SyncdError:
            async with limit:
                try:
                    return await self.resolve(ref, target.artifact_path, role)
                except ResolutionError as exc:
                    return exc
                except RegistryNotFoundError as exc:
                    return ResolutionError(ref.model, ref.version, str(exc))
                except RegistryError:
                    raise
                except SyncdError as exc:
                    return exc

        results = await asyncio.gather(*(one(ref, role) for ref, role in refs))
        for (ref, _), result in zip(refs, results, strict=True):
            if isinstance(result, DesiredModel):
                state.models.append(result)
            elif ref.model not in state.errors:
                state.errors[ref.model] = result
        return state

    # ---- one-shot lookups (syncd sync) ---------------------------------------------------------

    async def version_ref(self, model: str, version: str) -> ModelVersionRef:
        """A reference to an explicit version (the one-shot `sync --version`)."""
        try:
            await self._call(
                f"version {version} of {model}", self._client.get_model_version, model, version
            )
        except RegistryNotFoundError as exc:
            raise ResolutionError(model, version, "no such registered model version") from exc
        return ModelVersionRef(model, version, f"version {version}")

    async def alias_ref(self, model: str, alias: str) -> ModelVersionRef:
        """The version an alias points at, or a clear error when it points nowhere."""
        registered = await self.get_model(model)
        if registered is None:
            raise ResolutionError(model, None, f"no registered model named {model!r}")
        if alias not in registered.aliases:
            known = ", ".join(sorted(registered.aliases)) or "none"
            raise ResolutionError(model, None, f"no alias {alias!r} (aliases: {known})")
        return ModelVersionRef(model, registered.aliases[alias], f"alias {alias}")

    async def stage_ref(self, model: str, stage: str) -> ModelVersionRef:
        """The newest version in a stage (MLflow's `models:/NAME/STAGE`), or a clear error."""
        registered = await self.get_model(model)
        if registered is None:
            raise ResolutionError(model, None, f"no registered model named {model!r}")
        stages = {name.lower(): (name, v) for name, v in registered.stages.items()}
        if stage.lower() not in stages:
            known = ", ".join(sorted(registered.stages)) or "none"
            raise ResolutionError(model, None, f"no version in stage {stage!r} (stages: {known})")
        name, version = stages[stage.lower()]
        return ModelVersionRef(model, version, f"stage {name}")

    # ---- resolution ----------------------------------------------------------------------------

    async def resolve(
        self, ref: ModelVersionRef, artifact_path: str, role: Role = "serving"
    ) -> DesiredModel:
        """Version -> child run -> parent run -> the source URI of the binaries (cached)."""
        known = self.cache.get(ref.model, ref.version, artifact_path)
        if known is None:
            known = await self._resolve(ref.model, ref.version, artifact_path)
            self.cache.put(ref.model, ref.version, artifact_path, known)
        return DesiredModel(ref, known.run_id, known.basis, known.source_uri, role)

    async def _resolve(self, model: str, number: str, artifact_path: str) -> Resolution:
        try:
            version = await self._call(
                f"version {number} of {model}", self._client.get_model_version, model, number
            )
        except RegistryNotFoundError as exc:
            raise ResolutionError(model, number, "no such registered model version") from exc
        child_run_id = version.run_id or None
        parent_tag = None
        if child_run_id:
            child = await self._get_run(model, number, child_run_id, "the version's run")
            parent_tag = child.data.tags.get("mlflow.parentRunId")
        context_raw = await self._read_context(model, number, version.source or "")
        context_run_id = (
            parse_model_context(model, number, context_raw) if context_raw is not None else None
        )
        parent = resolve_parent_run(
            model,
            number,
            version_run_id=child_run_id,
            context_run_id=context_run_id,
            parent_tag=parent_tag,
            allow_foreign_parent=self._resolution.allow_foreign_parent,
        )
        run = await self._get_run(model, number, parent.run_id, "the parent run")
        if run.info.lifecycle_stage == "deleted":
            raise ResolutionError(model, number, f"run {parent.run_id} is deleted")
        source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
        return Resolution(parent.run_id, parent.basis, source)

    async def _get_run(self, model: str, version: str, run_id: str, role: str) -> Any:
        try:
            return await self._call(f"run {run_id}", self._client.get_run, run_id)
        except RegistryNotFoundError as exc:
            raise ResolutionError(model, version, f"{role} {run_id} does not exist") from exc

    async def _model_root(self, source: str) -> str | None:
        """Where the version's logged model lives, as a URI syncd can read."""
        if source.startswith("models:/m-"):
            # MLflow 3: the version's source is a logged model with its own artifact location.
            model_id = source[len("models:/") :].split("/", 1)[0]
            logged = await self._call(
                f"logged model {model_id}", self._client.get_logged_model, model_id
            )
            return str(logged.artifact_location)
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].partition("/")
            run = await self._call(f"run {run_id}", self._client.get_run, run_id)
            return f"{run.info.artifact_uri.rstrip('/')}/{path}".rstrip("/")
        if source.startswith(("s3://", "mlflow-artifacts:")):
            return source  # MLflow 2: the logged model is a folder in the run's artifacts
        return None

    async def _read_context(self, model: str, version: str, source: str) -> bytes | None:
        try:
            root = await self._model_root(source)
        except RegistryNotFoundError as exc:
            raise ResolutionError(model, version, f"its source {source} is gone") from exc
        if root is None:
            log.info("%s v%s: source %s has no readable model_context.json", model, version, source)
            return None
        uri = f"{root.rstrip('/')}/{self._resolution.context_path}"
        try:
            return await self._read_artifact(uri)
        except SyncdError as exc:
            said = str(exc)
            reason = said if uri in said else f"cannot read {uri}: {said}"
            raise ResolutionError(model, version, reason, is_unreachable(exc)) from exc
