"""What an attacker who can write the dataset, or a bad day, does to the root, done to the real
`syncd` process: nothing outside the root is read, written, moved or reported as in place."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from syncd.app.embedded import free_port
from tests.support.cli import clean_env, run_sync, run_syncd
from tests.support.daemon import daemon_config, get, start_process, stop_process, wait_until
from tests.support.layout import manifest_of
from tests.support.models import publish, unique_name


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `folder` with its size, mtime and mode (lstat: links not followed)."""
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
        for p in [folder, *folder.rglob("*")]
    }


def outside_copy(tmp_path: Path, folder: Path) -> Path:
    """A copy of a published folder outside the root, plus a file that is nobody's business:
    a link to it looks intact to anything that follows links."""
    outside = tmp_path / "other-dataset"
    shutil.copytree(folder, outside, copy_function=shutil.copy2)
    (outside / "precious.txt").write_text("not syncd's")
    return outside


def test_a_run_folder_replaced_by_a_symlink_is_set_aside_by_sync_and_refused_by_verify(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("linkrun")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    run = published.parent_run_id
    root = tmp_path / "llm-models"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    assert run_sync(name, root, env).returncode == 0
    folder = root / run
    outside = outside_copy(tmp_path, folder)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)

    verified = run_syncd("verify", "--root", str(root), env=env)
    assert verified.returncode == 1
    assert f"{run}  OK" not in verified.stdout
    assert "DAMAGED" in verified.stdout

    again = run_sync(name, root, env)
    assert again.returncode == 0, again.stderr
    assert "already in place" not in again.stderr
    assert snapshot(outside) == before  # nothing outside the root moved, written or deleted
    assert folder.is_dir()
    assert not folder.is_symlink()
    kept = [p for p in (root / ".syncd" / "quarantine").iterdir() if p.is_symlink()]
    assert [os.readlink(p) for p in kept] == [str(outside)]  # the link itself, set aside
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in outside.iterdir() if p.name != "precious.txt"
    )
    assert run_syncd("verify", "--root", str(root), env=env).returncode == 0


def test_the_daemon_sets_a_symlinked_run_folder_aside_and_rebuilds_it(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("linkd")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url, sweep_interval="0.5s")
    process = start_process(config, tmp_path / "syncd.log")
    folder = root / published.parent_run_id
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, "ready")
        outside = outside_copy(tmp_path, folder)
        before = snapshot(outside)
        aside = root / "aside"
        os.rename(folder, aside)  # the swap an attacker makes: one rename, then the link
        folder.symlink_to(outside, target_is_directory=True)
        shutil.rmtree(aside)
        wait_until(lambda: folder.is_dir() and not folder.is_symlink(), "rebuilt as a folder")
        assert process.poll() is None
        assert snapshot(outside) == before
        assert (folder / "config.json").is_file()
    finally:
        stop_process(process)


def test_a_resolution_row_pointing_at_another_runs_binaries_is_resolved_again(
    mlflow_server: Any, tmp_path: Path
) -> None:
    mine, theirs = unique_name("res-a"), unique_name("res-b")
    a = publish(mlflow_server.url, tmp_path / "a", mine, shard_mib=(1,))
    b = publish(mlflow_server.url, tmp_path / "b", theirs, shard_mib=(2,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, mine, mlflow_server.url)
    process = start_process(config, tmp_path / "first.log")
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, "first pass")
    finally:
        stop_process(process)
    resolved = root / ".syncd" / "resolved.json"
    document = json.loads(resolved.read_text())
    source_b = None
    for row in document["resolutions"]:
        assert row["run_id"] == a.parent_run_id
        # someone with write access to the dataset points the row at another run's prefix
        source_b = row["source_uri"].replace(a.parent_run_id, b.parent_run_id)
        row["source_uri"] = source_b
    resolved.write_text(json.dumps(document))
    shutil.rmtree(root / a.parent_run_id)
    (root / ".syncd" / "manifests" / f"{a.parent_run_id}.json").unlink()
    process = start_process(config, tmp_path / "second.log")
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, "second pass")
    finally:
        stop_process(process)
    manifest = manifest_of(root, a.parent_run_id)
    assert b.parent_run_id not in manifest.source_uri
    assert manifest.source_uri.endswith(f"/{a.parent_run_id}/artifacts/model")
    shard = next(entry for entry in manifest.files if entry.path.endswith(".safetensors"))
    assert shard.size == 1 << 20  # a's 1 MiB shard, not b's 2 MiB one
    assert source_b is not None
    assert source_b not in resolved.read_text()


def test_an_unreadable_damage_record_fails_closed(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name("dmg")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root = tmp_path / "llm-models"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    assert run_sync(name, root, env).returncode == 0
    shard = next((root / published.parent_run_id).glob("*.safetensors"))
    original = shard.read_bytes()
    stat = shard.stat()
    with shard.open("r+b") as handle:  # bit rot that lstat cannot see
        handle.seek(1000)
        handle.write(bytes([original[1000] ^ 0xFF]))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    record = root / ".syncd" / "damage" / f"{published.parent_run_id}.json"
    record.write_text("{ half a record")  # a verify killed mid-write, or a hand edit

    repaired = run_sync(name, root, env)
    assert repaired.returncode == 0, repaired.stderr
    assert "already in place" not in repaired.stderr
    assert shard.read_bytes() == original
    assert not record.exists()
    assert list((root / ".syncd" / "damage").iterdir()) == []


def test_a_manifest_from_a_newer_syncd_is_read_not_quarantined(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("newer")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root = tmp_path / "llm-models"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    assert run_sync(name, root, env).returncode == 0
    path = root / ".syncd" / "manifests" / f"{published.parent_run_id}.json"
    document = json.loads(path.read_text())
    document["format"] = 99
    document["a_field_from_the_future"] = {"anything": [1, 2]}
    for entry in document["files"]:
        entry["sha512"] = "from a later version"
    for wanted in document["wanted_by"]:
        wanted["tenant"] = "later"
    path.write_text(json.dumps(document))
    again = run_sync(name, root, env)
    assert again.returncode == 0, again.stderr
    assert "already in place" in again.stderr
    assert not (root / ".syncd" / "quarantine").exists() or not any(
        (root / ".syncd" / "quarantine").iterdir()
    )


def test_fetch_never_overwrites_a_users_file_nor_deletes_through_a_link(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("fetchsafe")
    first = publish(mlflow_server.url, tmp_path / "one", name, shard_mib=(1,))
    dest = tmp_path / "mnt" / "models"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("the user's own config")
    refused = run_syncd("fetch", f"models:/{name}@production", str(dest), env=env)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].count("not put there by syncd") == 1
    assert (dest / "config.json").read_text() == "the user's own config"
    assert "Traceback" not in refused.stderr
    (dest / "config.json").unlink()
    assert run_syncd("fetch", f"models:/{name}/1", str(dest), env=env).returncode == 0

    # A manifest on disk names a path through a planted link, and one that climbs out.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.bin").write_text("keep me")
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    path = dest / ".syncd" / "manifests" / f"{first.parent_run_id}.json"
    document = json.loads(path.read_text())
    extra = dict(document["files"][0])
    document["files"] += [{**extra, "path": "sub/victim.bin"}]
    path.write_text(json.dumps(document))
    publish(mlflow_server.url, tmp_path / "two", name, shard_mib=(2,))
    fetched = run_syncd("fetch", f"models:/{name}@production", str(dest), env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert (outside / "victim.bin").read_text() == "keep me"

    root_refused = run_syncd("fetch", f"models:/{name}@production", "/", env=env)
    assert root_refused.returncode != 0
    assert "refusing DEST_PATH /" in root_refused.stderr
    assert "Traceback" not in root_refused.stderr
