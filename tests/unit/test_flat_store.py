"""A fetch destination is its own run folder: never removed whole (local.flat)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.errors import LocalStoreError
from syncd.local.flat import flat_store

RUN = "c" * 32


def test_a_destination_is_never_renamed_away_whole(tmp_path: Path) -> None:
    dest = tmp_path / "mnt-models"
    store = flat_store(dest)
    store.prepare()
    (dest / "config.json").write_text("{}")
    with pytest.raises(LocalStoreError, match="never removed whole"):
        store.remove(RUN)
    assert (dest / "config.json").read_text() == "{}"
    assert store.run_dir(RUN) == dest
