"""Which version each target wants, from one listing of the registry (pure).

The registry is read as a list of `RegisteredModel`s (name, aliases, latest version per stage),
one paged call for the whole registry; everything a target wants follows from that list and
the target's settings, without further calls.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from syncd.core.resolution import Basis
from syncd.core.resolved import ResolutionCache
from syncd.errors import SyncdError
from syncd.settings import TargetSettings

__all__ = [
    "DesiredModel",
    "DesiredState",
    "ModelVersionRef",
    "RegisteredModel",
    "Registry",
    "Role",
    "is_pattern",
    "matches",
    "pointed",
]


@dataclass(frozen=True)
class RegisteredModel:
    """What one page of `search_registered_models` says about a model."""

    name: str
    aliases: dict[str, str] = field(default_factory=dict)
    # stage -> the newest version in it (what get_latest_versions would answer)
    stages: dict[str, str] = field(default_factory=dict)
    updated_at: float | None = None  # seconds; MLflow's last_updated_timestamp


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version a target points at."""

    model: str
    version: str
    selector: str  # "alias production" / "stage Production" / "version 3"


Role = str  # "serving" for the target's own alias or stage, "prefetch" for pre-staged ones


@dataclass(frozen=True)
class DesiredModel:
    """A version resolved to the run folder that must exist."""

    ref: ModelVersionRef
    run_id: str
    basis: Basis
    source_uri: str
    role: Role = "serving"

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
    """What the daemon, the triggers and the one-shot commands ask of a model registry.

    `MlflowRegistry` (over MLflow's REST API or its client) is the one adapter today; another
    registry (a Hugging Face revision, a W&B artifact) is one more class with these methods,
    whose run ids name run folders (32 hex characters, checked before they name a path).
    """

    cache: ResolutionCache

    async def list_models(self) -> list[RegisteredModel]: ...

    async def get_model(self, name: str) -> RegisteredModel | None: ...

    async def wanted(
        self, target: TargetSettings, models: Iterable[RegisteredModel]
    ) -> DesiredState: ...

    async def version_ref(self, model: str, version: str) -> ModelVersionRef: ...

    async def alias_ref(self, model: str, alias: str) -> ModelVersionRef: ...

    async def stage_ref(self, model: str, stage: str) -> ModelVersionRef: ...

    async def resolve(
        self, ref: ModelVersionRef, artifact_path: str, role: Role = "serving"
    ) -> DesiredModel: ...


def is_pattern(name: str) -> bool:
    """Whether a `models` entry is a glob rather than a name."""
    return any(char in name for char in "*?[")


def missing_names(patterns: Iterable[str], registered: Iterable[str]) -> dict[str, str | None]:
    """Plain names (no glob characters) that no registered model has: a likely typo, with the
    closest registered name when one is close."""
    names = set(registered)
    return {
        name: next(iter(difflib.get_close_matches(name, sorted(names), n=1)), None)
        for name in patterns
        if not is_pattern(name) and name not in names
    }


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a model name is one of the target's names or globs."""
    return any(
        fnmatch.fnmatchcase(name, pattern) if is_pattern(pattern) else name == pattern
        for pattern in patterns
    )


def pointed(
    target: TargetSettings, models: Iterable[RegisteredModel]
) -> list[tuple[ModelVersionRef, Role]]:
    """Every version the target wants: its serving pointer first, then its prefetch aliases.

    A prefetch alias that names the serving version adds nothing (the folder is the same).
    """
    wanted: list[tuple[ModelVersionRef, Role]] = []
    for model in sorted(models, key=lambda m: m.name):
        if not matches(model.name, target.models):
            continue
        serving: str | None = None
        if target.alias:
            serving = model.aliases.get(target.alias)
            if serving:
                wanted.append((ModelVersionRef(model.name, serving, target.selector), "serving"))
        elif target.stage:
            serving = model.stages.get(target.stage)
            if serving:
                wanted.append((ModelVersionRef(model.name, serving, target.selector), "serving"))
        seen = {serving}
        for alias in target.prefetch:
            version = model.aliases.get(alias)
            if version and version not in seen:
                seen.add(version)
                wanted.append((ModelVersionRef(model.name, version, f"alias {alias}"), "prefetch"))
    return wanted
