"""Values people write in a config: durations (`30s`), sizes (`8MiB`), `${VAR:-default}`; and
the pydantic types and base model the settings are made of."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["Bytes", "Seconds", "Strict", "expand_variables", "parse_duration", "parse_size"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|K|M|G)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}


def parse_duration(value: object) -> float:
    """Seconds from `30`, `30s`, `5m`, `1.5h`, `250ms` or a timedelta."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h)")


def parse_size(value: object) -> int:
    """Bytes from `8388608`, `8MiB`, `64 KiB`, `1GiB`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_FACTOR[(match.group(2) or "b").lower()]
    raise ValueError(f"not a size: {value!r} (use e.g. 8MiB, 64KiB)")


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_variables(text: str) -> str:
    """`${NAME}` and `${NAME:-default}` replaced from the environment, as a shell would;
    a variable that is unset (or empty) with no default is refused, never left literal."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found:
            return found
        if default is not None:
            return default
        raise ValueError(f"names ${{{name}}}, which is not set (or write ${{{name}:-DEFAULT}})")

    return _VARIABLE.sub(value, text)


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Bytes = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]


class Strict(BaseModel):
    """A settings model that refuses keys it does not know."""

    model_config = ConfigDict(extra="forbid")
