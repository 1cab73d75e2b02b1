"""The MLflow registry: which version each target wants, and the run that holds its binaries."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from syncd.core.resolution import Basis, parse_model_context, resolve_parent_run
from syncd.errors import RegistryError, ResolutionError, SyncdError
from syncd.settings import ResolutionSettings, TargetSettings

__all__ = [
    "DesiredModel",
    "DesiredState",
    "MlflowRegistry",
    "ModelVersionRef",
    "Registry",
]

log = logging.getLogger(__name__)

ContextReader = Callable[[str], Awaitable[bytes | None]]


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version a target points at."""

    model: str
    version: str
    selector: str  # "alias production" / "stage Production" / "version 3"


@dataclass(frozen=True)
class DesiredModel:
    """A version resolved to the run folder that must exist."""

    ref: ModelVersionRef
    run_id: str
    basis: Basis
    source_uri: str

    @property
    def model(self) -> str:
        return self.ref.model


@dataclass
class DesiredState:
    """What a target wants, plus the models that could not be resolved (and why)."""

    target: str
    models: list[DesiredModel]
    errors: dict[str, SyncdError]


class Registry(Protocol):
    async def desired(self, target: TargetSettings) -> DesiredState: ...

    async def resolve(self, ref: ModelVersionRef, artifact_path: str) -> DesiredModel: ...


def _is_pattern(name: str) -> bool:
    return any(char in name for char in "*?[")


def _not_found(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or (
        "RESOURCE_DOES_NOT_EXIST" in str(exc)
    )


class MlflowRegistry:
    """Reads the registry with MlflowClient; every call runs in a worker thread."""

    def __init__(
        self,
        tracking_uri: str | None,
        resolution: ResolutionSettings,
        read_artifact: ContextReader,
        client: Any | None = None,
    ) -> None:
        # A daemon polls again anyway: fail fast instead of MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._client = client
        self._tracking_uri = tracking_uri
        self._resolution = resolution
        self._read_artifact = read_artifact

    async def _call(self, what: str, function: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            with warnings.catch_warnings():
                # Stages are deprecated in MLflow, but still what some teams deploy with.
                warnings.simplefilter("ignore", FutureWarning)
                return await asyncio.to_thread(function, *args, **kw)
        except SyncdError:
            raise
        except Exception as exc:
            if _not_found(exc):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RegistryError(f"MLflow at {self._tracking_uri}: {what}: {message}") from exc

    async def _model_names(self, patterns: list[str]) -> list[str]:
        names = [pattern for pattern in patterns if not _is_pattern(pattern)]
        globs = [pattern for pattern in patterns if _is_pattern(pattern)]
        if globs:
            token = None
            while True:
                page = await self._call(
                    "search_registered_models",
                    self._client.search_registered_models,
                    max_results=1000,
                    page_token=token,
                )
                for registered in page:
                    if any(fnmatch.fnmatchcase(registered.name, glob) for glob in globs):
                        names.append(registered.name)
                token = getattr(page, "token", None)
                if not token:
                    break
        return sorted(set(names))

    async def _aliases(self, name: str) -> dict[str, str] | None:
        """A model's alias -> version map, or None when there is no such model."""
        try:
            registered = await self._call(
                f"registered model {name}", self._client.get_registered_model, name
            )
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        return {alias: str(version) for alias, version in (registered.aliases or {}).items()}

    async def _pointed_version(self, target: TargetSettings, name: str) -> ModelVersionRef | None:
        if target.alias:
            version = (await self._aliases(name) or {}).get(target.alias)
            return ModelVersionRef(name, version, f"alias {target.alias}") if version else None
        try:
            versions = await self._call(
                f"stage {target.stage} of {name}",
                self._client.get_latest_versions,
                name,
                stages=[target.stage],
            )
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        if not versions:
            return None
        latest = max(versions, key=lambda version: int(version.version))
        return ModelVersionRef(name, str(latest.version), f"stage {target.stage}")

    async def desired(self, target: TargetSettings) -> DesiredState:
        """Resolve every model the target matches; per-model failures are returned, not raised."""
        state = DesiredState(target.name, [], {})
        for name in await self._model_names(target.models):
            try:
                ref = await self._pointed_version(target, name)
                if ref is None:
                    log.debug("%s: %s has no %s", target.name, name, target.selector)
                    continue
                state.models.append(await self.resolve(ref, target.artifact_path))
            except RegistryError as exc:
                if not isinstance(exc, ResolutionError):
                    raise  # the registry itself is failing: the whole pass is void
                state.errors[name] = exc
            except SyncdError as exc:
                state.errors[name] = exc
        return state

    async def version_ref(self, model: str, version: str) -> ModelVersionRef:
        """A reference to an explicit version (the one-shot `sync --version`)."""
        try:
            await self._call(
                f"version {version} of {model}", self._client.get_model_version, model, version
            )
        except Exception as exc:
            if _not_found(exc):
                raise ResolutionError(model, version, "no such registered model version") from exc
            raise
        return ModelVersionRef(model, version, f"version {version}")

    async def alias_ref(self, model: str, alias: str) -> ModelVersionRef:
        """The version an alias points at, or a clear error when it points nowhere."""
        aliases = await self._aliases(model)
        if aliases is None:
            raise ResolutionError(model, "?", f"no registered model named {model!r}")
        if alias not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise ResolutionError(model, "?", f"no alias {alias!r} (aliases: {known})")
        return ModelVersionRef(model, aliases[alias], f"alias {alias}")

    async def resolve(self, ref: ModelVersionRef, artifact_path: str) -> DesiredModel:
        """Version -> child run -> parent run -> the source URI of the binaries."""
        model, number = ref.model, ref.version
        try:
            version = await self._call(
                f"version {number} of {model}", self._client.get_model_version, model, number
            )
        except Exception as exc:
            if _not_found(exc):
                raise ResolutionError(model, number, "no such registered model version") from exc
            raise
        child_run_id = version.run_id or None
        parent_tag = None
        if child_run_id:
            child = await self._get_run(model, number, child_run_id, "the version's run")
            parent_tag = child.data.tags.get("mlflow.parentRunId")
        context_raw = await self._read_context(model, number, version.source, child_run_id)
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
        return DesiredModel(ref, parent.run_id, parent.basis, source)

    async def _get_run(self, model: str, version: str, run_id: str, role: str) -> Any:
        try:
            return await self._call(f"run {run_id}", self._client.get_run, run_id)
        except Exception as exc:
            if _not_found(exc):
                raise ResolutionError(model, version, f"{role} {run_id} does not exist") from exc
            raise

    async def _model_root(self, source: str, child_run_id: str | None) -> str | None:
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

    async def _read_context(
        self, model: str, version: str, source: str, child_run_id: str | None
    ) -> bytes | None:
        root = await self._model_root(source or "", child_run_id)
        if root is None:
            log.info("%s v%s: source %s has no readable model_context.json", model, version, source)
            return None
        uri = f"{root.rstrip('/')}/{self._resolution.context_path}"
        try:
            return await self._read_artifact(uri)
        except SyncdError as exc:
            raise ResolutionError(model, version, f"cannot read {uri}: {exc}") from exc
