"""Every problem of a configuration, one line each, naming where the value came from.

Kept apart from the settings' declarations: this is the logic that turns a pydantic
`ValidationError` and stray `SYNCD_*` variables into lines an operator can act on.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

__all__ = ["TAG", "describe_validation", "unknown_variables", "variable_names"]

# Tagged unions (an `after_sync` entry) name their member in an error's location; a person
# wrote `after_sync.0.webhook.url`, not the tag, so tags starting with this are left out.
TAG = "kind:"

STANDARD_VARIABLES = {
    ("mlflow", "tracking_uri"): "MLFLOW_TRACKING_URI",
    ("mlflow", "timeout"): "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ("mlflow", "max_retries"): "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    ("s3", "endpoint_url"): "MLFLOW_S3_ENDPOINT_URL",
}

# Read by the deploy scripts (config/domino/app.sh) or set by syncd for its hook commands.
SCRIPT_VARIABLES = frozenset(
    {
        "SYNCD_PACKAGE",
        "SYNCD_CONFIG",
        "SYNCD_TARGET",
        "SYNCD_MODEL",
        "SYNCD_VERSION",
        "SYNCD_RUN_ID",
        "SYNCD_FOLDER",
        "SYNCD_POINTER",
    }
)

# Settings written as a YAML list; a bare scalar is the usual slip (`models: my-llm`).
_LIST_EXAMPLES = {
    "models": "models: [NAME] (or one '- NAME' per line)",
    "targets": "targets: followed by one '- name: ...' mapping per target",
    "after_sync": "after_sync: followed by one '- ...' mapping per hook",
}


def _source_of(location: tuple[Any, ...], environ: Mapping[str, str], file: str | None) -> str:
    """Where the value at `location` came from: a SYNCD_ variable wins, as it does in loading."""
    upper = {name.upper() for name in environ}
    parts = [str(part).upper() for part in location]
    for length in range(len(parts), 0, -1):
        name = "SYNCD_" + "__".join(parts[:length])
        if name in upper:
            return f"environment variable {name}"
    head = tuple(str(part) for part in location[:2])
    standard = STANDARD_VARIABLES.get((head[0], head[1])) if len(head) == 2 else None
    if standard and environ.get(standard) and file is None:
        return f"environment variable {standard}"
    return file or "settings"


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The settings models a field holds (`S3Settings`, `list[TargetSettings]`, each member of
    a union), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for inner in get_args(annotation) for model in _nested_models(inner)]


def _known_keys(root: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    """The keys allowed at a location of the settings tree (for "did you mean")."""
    models = [root]
    for part in location:
        if isinstance(part, int):
            continue
        fields = [
            model.model_fields[str(part)] for model in models if str(part) in model.model_fields
        ]
        models = [nested for field in fields for nested in _nested_models(field.annotation)]
        if not models:
            return []
    return sorted({key for model in models for key in model.model_fields})


def _location(problem: ErrorDetails) -> tuple[Any, ...]:
    return tuple(p for p in problem["loc"] if not (isinstance(p, str) and p.startswith(TAG)))


def _message(root: type[BaseModel], problem: ErrorDetails) -> tuple[str, str | None]:
    """What is wrong, and (for an unknown key) the key it probably meant."""
    location = _location(problem)
    if problem["type"] == "extra_forbidden" and location:
        key = str(location[-1])
        close = difflib.get_close_matches(key, _known_keys(root, location[:-1]), n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)", close[0]
        return "unknown key", None
    last = str(location[-1]) if location else ""
    if problem["type"] == "list_type" and last in _LIST_EXAMPLES:
        return f"must be a list: write {_LIST_EXAMPLES[last]}", None
    return problem["msg"].removeprefix("Value error, "), None


def describe_validation(
    root: type[BaseModel], error: ValidationError, file: str | None, environ: Mapping[str, str]
) -> list[str]:
    """One line per problem, unknown keys first (a typo also causes a "field required" for
    the key it meant: that one is left out, the did-you-mean already says it)."""
    problems = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    meant: set[tuple[Any, ...]] = set()
    lines = []
    for problem in problems:
        location = _location(problem)
        if problem["type"] == "missing" and location in meant:
            continue
        message, close = _message(root, problem)
        if close is not None:
            meant.add((*location[:-1], close))
        where = ".".join(str(part) for part in location) or "(top level)"
        lines.append(f"{_source_of(location, environ, file)}: {where}: {message}")
    return lines


def variable_names(model: type[BaseModel], prefix: str = "SYNCD_") -> list[str]:
    """Every `SYNCD_*` variable the settings read, nested keys joined by `__`."""
    names = []
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        names.append(variable)
        for nested in _nested_models(field.annotation):
            names += [n for n in variable_names(nested, f"{variable}__") if n not in names]
    return names


def secret_variables(data: Mapping[str, Any]) -> set[str]:
    """The variables the raw configuration names as webhook secrets (`secret_env`)."""
    found = set()
    targets = data.get("targets")
    for target in targets if isinstance(targets, list) else []:
        hooks = target.get("after_sync") if isinstance(target, dict) else None
        for hook in hooks if isinstance(hooks, list) else []:
            webhook = hook.get("webhook") if isinstance(hook, dict) else None
            secret = webhook.get("secret_env") if isinstance(webhook, dict) else None
            if isinstance(secret, str):
                found.add(secret.upper())
    return found


def unknown_variables(
    root: type[BaseModel], environ: Mapping[str, str], also_known: Iterable[str] = ()
) -> list[str]:
    """One line per `SYNCD_*` variable that no setting reads: a typo there is as wrong as a
    typo in the file, and is refused the same way."""
    known = set(variable_names(root)) | SCRIPT_VARIABLES | set(also_known)
    lines = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith("SYNCD_") or upper in known:
            continue
        if any(upper.startswith(f"{name}__") for name in known):
            continue  # inside a setting pydantic reads whole (a list, a mapping)
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"environment variable {variable}: not a syncd setting{hint}")
    return lines
