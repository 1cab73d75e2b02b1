"""Reading a dataset root as syncd lays it out (tests only)."""

from __future__ import annotations

from pathlib import Path

from syncd.core.manifest import Manifest


def manifest_of(root: Path, run_id: str) -> Manifest:
    """The manifest syncd wrote for `run_id` under `root`."""
    return Manifest.from_json((root / ".syncd" / "manifests" / f"{run_id}.json").read_text())
