"""The README's first command: `syncd demo --once` as a newcomer runs it, in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from syncd.app.embedded import free_port
from syncd.core.manifest import Manifest


def test_demo_once_publishes_and_syncs_the_sample_model(tmp_path: Path) -> None:
    # A newcomer's environment: none of the suite's S3 or MLflow settings leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNCD_"))}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "syncd.app.cli", "demo", "--once"),
            *("--port", str(free_port()), "--workdir", str(tmp_path)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "status page http://127.0.0.1:" in result.stdout
    (manifest_file,) = (tmp_path / "llm-models" / ".syncd" / "manifests").iterdir()
    manifest = Manifest.from_json(manifest_file.read_text())
    folder = tmp_path / "llm-models" / manifest.run_id
    assert f"in place: {folder}: config.json" in result.stdout
    # a quiet terminal: syncd's own lines, none of MLflow's chatter
    everything = result.stdout + result.stderr
    for noise in (
        "View run",
        "View experiment",
        "pip requirements",
        "CloudPickle",
        "WARNING mlflow",
    ):
        assert noise not in everything, noise
    assert {entry.path for entry in manifest.files} == {p.name for p in folder.iterdir()}
    assert all(entry.verified_by != "size" for entry in manifest.files)


def test_demo_once_without_keep_says_the_folder_is_gone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNCD_"))}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "demo", "--once", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("syncd demo: removed ")
    assert "--keep keeps it" in last
    assert not list(tmp_path.glob("syncd-demo-*"))
