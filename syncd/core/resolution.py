"""The contract's rules for tracing a registered version to the run holding its binaries (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from syncd.core.ids import is_run_id
from syncd.errors import ResolutionError, quoted

__all__ = ["ParentRun", "parse_model_context", "resolve_parent_run"]

# "uri": no registry at all, `syncd fetch` of a store URI (KServe's gs://, wasbs://, s3://).
Basis = Literal["model_context", "parent_tag", "version_run", "uri"]


@dataclass(frozen=True)
class ParentRun:
    """The run that holds the binaries, and which rule found it."""

    run_id: str
    basis: Basis


def parse_model_context(model: str, version: str, raw: bytes) -> str:
    """The `run_id` named by a model_context.json document."""
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResolutionError(
            model, version, f"model_context.json is not valid JSON: {exc}"
        ) from exc
    if not isinstance(document, dict) or "run_id" not in document:
        raise ResolutionError(model, version, "model_context.json has no run_id")
    run_id = document["run_id"]
    if not is_run_id(run_id):
        raise ResolutionError(
            model, version, f"model_context.json run_id {quoted(run_id)} is not a 32-hex run id"
        )
    return str(run_id)


def resolve_parent_run(
    model: str,
    version: str,
    *,
    version_run_id: str | None,
    context_run_id: str | None,
    parent_tag: str | None,
    allow_foreign_parent: bool = False,
) -> ParentRun:
    """Apply the rules: the context's run, else the nested parent, else the version's own run.

    A context that names a run other than the child's nested parent points the version at
    someone else's binaries; that is refused unless the policy is relaxed.
    """
    if parent_tag is not None and not is_run_id(parent_tag):
        raise ResolutionError(
            model, version, f"tag mlflow.parentRunId {quoted(parent_tag)} is not a 32-hex run id"
        )
    if context_run_id is not None:
        if not is_run_id(context_run_id):
            raise ResolutionError(
                model, version, f"context run_id {quoted(context_run_id)} is not a 32-hex run id"
            )
        if parent_tag is not None and parent_tag != context_run_id and not allow_foreign_parent:
            raise ResolutionError(
                model,
                version,
                f"model_context.json names run {context_run_id} but the version's run is nested "
                f"under {parent_tag}; refusing a foreign parent "
                "(set resolution.allow_foreign_parent to allow it)",
            )
        return ParentRun(context_run_id, "model_context")
    if parent_tag is not None:
        return ParentRun(parent_tag, "parent_tag")
    if version_run_id is None:
        raise ResolutionError(model, version, "the version has no run and no model_context.json")
    if not is_run_id(version_run_id):
        raise ResolutionError(
            model, version, f"run id {quoted(version_run_id)} is not a 32-hex run id"
        )
    return ParentRun(version_run_id, "version_run")
