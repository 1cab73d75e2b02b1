"""What `syncd verify` finds gets repaired: by the next `syncd sync`, by `verify --repair`
on a root nobody else writes, and (test_operator.py) by the daemon that writes the root,
handed over through the root. Real `syncd` processes against the real MLflow and S3 servers."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.integration.test_range_repair import BIG, PART, flip
from tests.support.cli import clean_env, run_syncd, sync_command
from tests.support.models import publish, unique_name


def syncd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_syncd(*args, env=env)


def test_rot_found_by_verify_is_repaired_by_sync_and_by_verify_repair(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("rot")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(20, 1))
    root = tmp_path / "llm-models"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url, SYNCD_S3__PART_SIZE="8MiB")
    assert subprocess.run(sync_command(name, root), env=env, check=False).returncode == 0
    folder = root / published.parent_run_id
    original = (folder / BIG).read_bytes()

    flip(folder / BIG, PART + 7, keep_mtime=True)  # bit rot: size and mtime kept
    found = syncd("verify", "--root", str(root), env=env)
    assert found.returncode == 1
    assert f"DAMAGED: {BIG} (checksum: bytes {PART}-{2 * PART - 1})" in found.stdout
    assert "syncd verify --repair" in found.stderr  # what to do next
    # the next sync repairs it (one range), instead of calling the damaged folder in place
    repaired = subprocess.run(
        sync_command(name, root), env=env, capture_output=True, text=True, check=False
    )
    assert repaired.returncode == 0, repaired.stderr
    assert "1 downloaded" in repaired.stderr
    assert (folder / BIG).read_bytes() == original
    assert syncd("verify", "--root", str(root), env=env).returncode == 0

    # verify --repair on a root nobody else writes: repaired here, exit 0 once all verifies
    flip(folder / BIG, 7, keep_mtime=True)
    fixed = syncd("verify", "--root", str(root), "--repair", env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert "repaired: 1 file(s)" in fixed.stderr
    assert f"{published.parent_run_id}  OK" in fixed.stdout
    assert (folder / BIG).read_bytes() == original
    assert not list((root / ".syncd" / "damage").iterdir())
