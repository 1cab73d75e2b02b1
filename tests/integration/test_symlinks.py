"""Symlinks planted wherever syncd writes under a root: set aside, never followed, and nothing
outside the root changes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from syncd.app.cli import main
from tests.support.models import publish, unique_name


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
        for p in [folder, *folder.rglob("*")]
    }


@pytest.mark.parametrize(
    "planted",
    [
        ".syncd/staging/{run}.resume",
        ".syncd/staging/{run}.resume/config.json",
        ".syncd/parts/{run}",
        ".syncd/staging",
        ".syncd/parts",
        ".syncd/manifests",
        ".syncd/trash",
        ".syncd/quarantine",
        ".syncd/lock",
        "{run}/config.json",
    ],
)
def test_a_planted_symlink_is_never_followed(
    env: Any, mlflow_server: Any, tmp_path: Path, planted: str
) -> None:
    name = unique_name("links")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    run = published.parent_run_id
    root = tmp_path / "llm-models"
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    (outside / "precious").write_text("not syncd's")
    (outside / "config.json").write_text("not syncd's either")
    args = ["sync", "--model", name, "--alias", "production", "--root", str(root), "--no-progress"]
    if planted.startswith("{run}"):
        assert main(args) == 0  # a published folder in which someone plants a link
    path = root / planted.format(run=run)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    is_file = path.suffix in (".json",) or path.name == "lock"
    path.symlink_to(outside / ("config.json" if is_file else ""))
    before = snapshot(outside)
    assert main(args) == 0
    assert snapshot(outside) == before  # nothing outside the root was written, chmod-ed, deleted
    folder = root / run
    assert folder.is_dir()
    assert not folder.is_symlink()
    assert not [p for p in root.rglob("*") if p.is_symlink() and ".syncd/quarantine" not in str(p)]
    for file in folder.iterdir():
        assert file.is_file()
        assert not file.is_symlink()
    assert os.stat(outside).st_mode & 0o777 == 0o700
