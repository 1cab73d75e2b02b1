"""Settings and runtimes pointed at the session's real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.settings import Settings, load_settings


def make_settings(
    tracking_uri: str,
    root: Path | None = None,
    *,
    targets: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> Settings:
    data: dict[str, Any] = {
        "mlflow": {"tracking_uri": tracking_uri},
        "poll_interval": "1h",  # tests wake the daemon themselves
        "http": {"enabled": False},
        "s3": {"part_size": "4MiB", "chunk_size": "256KiB"},
    }
    if targets is not None:
        data["targets"] = targets
    elif root is not None:
        data["targets"] = [
            {"name": "prod", "root": str(root), "alias": "production", "models": ["*"]}
        ]
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return load_settings(overrides=data)
