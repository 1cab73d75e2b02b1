"""Which store reads which URI: the one table of them.

Each entry names a module with `parse(uri) -> Location` and `open_store(settings)`, an async
context manager yielding its `ObjectStore` (syncd.remote.store). A module is imported only
when a URI of its scheme is first met, so a daemon reading S3 never loads a cloud SDK it
does not use. A new store is its module and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, cast

from syncd.errors import SourceError, quoted
from syncd.remote.store import Location, ObjectStore
from syncd.settings import Settings

__all__ = ["SCHEMES", "StoreModule", "module_for", "scheme_of"]

SCHEMES: dict[str, str] = {
    "s3": "syncd.remote.s3",
    "gs": "syncd.remote.gcs",
    "wasbs": "syncd.remote.azure",
    "wasb": "syncd.remote.azure",
    "abfss": "syncd.remote.azure",
    "abfs": "syncd.remote.azure",
    "https": "syncd.remote.azure",  # KServe's Azure blob URLs; no other store is read over https
    "mlflow-artifacts": "syncd.remote.mlflow_proxy",
}


class StoreModule(Protocol):
    parse: Callable[[str], Location]
    open_store: Callable[[Settings], AbstractAsyncContextManager[ObjectStore[Any]]]


def scheme_of(uri: str) -> str:
    return uri.split(":", 1)[0].lower() if ":" in uri else ""


def module_for(uri: str) -> StoreModule:
    """The module that reads `uri`; SourceError naming the schemes syncd reads otherwise."""
    scheme = scheme_of(uri)
    name = SCHEMES.get(scheme)
    if name is None:
        said = scheme or "a local path"
        known = ", ".join(f"{key}://" for key in SCHEMES if key != "mlflow-artifacts")
        raise SourceError(
            f"artifact URI {quoted(uri)} uses {said}; syncd reads {known} and mlflow-artifacts:/"
        )
    return cast(StoreModule, importlib.import_module(name))
