"""`models:/` URIs, as MLflow and KServe's storageUri spell them (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from syncd.errors import SyncdError, quoted

__all__ = ["ModelUri", "parse_model_uri"]

_PREFIX = "models:/"


@dataclass(frozen=True)
class ModelUri:
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION` or `models:/NAME/STAGE`."""

    name: str
    kind: Literal["alias", "version", "stage"]
    value: str

    def __str__(self) -> str:
        sep = "@" if self.kind == "alias" else "/"
        return f"{_PREFIX}{self.name}{sep}{self.value}"


def parse_model_uri(uri: str) -> ModelUri:
    """The registered model and pointer a `models:/` URI names; a SyncdError in one line
    when it names none (a storageUri's typo becomes the InferenceService's message)."""
    if not uri.startswith(_PREFIX):
        raise SyncdError(f"{quoted(uri)} is not a models:/ URI (models:/NAME@ALIAS, /NAME/VERSION)")
    rest = uri[len(_PREFIX) :].strip("/")
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias and "/" not in alias:
            return ModelUri(name, "alias", alias)
    elif "/" in rest:
        name, _, pointer = rest.rpartition("/")
        if name and pointer:
            if pointer.isdigit():
                return ModelUri(name, "version", str(int(pointer)))
            if pointer.lower() != "latest":
                return ModelUri(name, "stage", pointer)
    raise SyncdError(
        f"{quoted(uri)} names no model version: use models:/NAME@ALIAS, models:/NAME/VERSION or "
        "models:/NAME/STAGE"
    )
