"""`syncd sync` end to end: real mlflow server, real S3 (moto), faults from a real proxy."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from syncd.app.cli import main
from syncd.core.manifest import Manifest
from tests.conftest import BUCKET
from tests.support.cli import clean_env, sync_command
from tests.support.daemon import WAIT
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.models import publish, unique_name

SAMPLE_FILES = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
}


@pytest.fixture
def env(env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    env.setenv("SYNCD_S3__PART_SIZE", "4MiB")  # small parts: every test crosses ranges
    return env


def sync(root: Path, name: str, *extra: str) -> int:
    return main(["sync", "--model", name, "--root", str(root), "--no-progress", *extra])


def assert_nothing_published(root: Path) -> None:
    """No run folder, no staging debris: a failed sync leaves the dataset as it was."""
    visible = [p.name for p in root.iterdir() if p.name != ".syncd"] if root.exists() else []
    assert visible == []
    staging = root / ".syncd" / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize("layout", ["mlflow3", "mlflow2"])
def test_sync_by_alias_publishes_a_verified_folder(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    name = unique_name()
    source = tmp_path / "src"
    published = publish(os.environ["MLFLOW_TRACKING_URI"], source, name, layout=layout)  # type: ignore[arg-type]
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 0
    folder = root / published.parent_run_id
    out = capsys.readouterr()
    assert last_line(out.out) == str(folder)  # stdout: the folder, for scripts
    assert {p.name for p in folder.iterdir()} == SAMPLE_FILES
    (original,) = [p for p in source.iterdir() if p.is_dir()]
    for path in original.iterdir():
        assert (folder / path.name).read_bytes() == path.read_bytes()
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    manifest = Manifest.from_json(
        (root / ".syncd" / "manifests" / f"{published.parent_run_id}.json").read_text()
    )
    checks = {entry.path: entry.verified_by for entry in manifest.files}
    assert checks["model-00001-of-00002.safetensors"] in ("crc32-composite", "crc32")
    assert "size" not in checks.values()
    assert manifest.wanted_by[0].model == name
    assert manifest.wanted_by[0].selector == "alias production"
    assert_nothing_published_in_staging(root)


def assert_nothing_published_in_staging(root: Path) -> None:
    assert list((root / ".syncd" / "staging").iterdir()) == []


def test_second_sync_downloads_nothing(
    env: Any, faults: FaultyS3Proxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("SYNCD_S3__ENDPOINT_URL", faults.url)
    name = unique_name()
    publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 0
    gets_after_first = sum(faults.faults.gets.values())
    assert gets_after_first >= len(SAMPLE_FILES)
    assert sync(root, name, "--alias", "production") == 0
    assert "already in place" in capsys.readouterr().err
    # one GET: the model_context.json read while resolving; no object of the model
    assert sum(faults.faults.gets.values()) - gets_after_first == 1


def test_sync_by_version_and_repair_of_a_deleted_file(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    published = publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name, alias=None)
    root = tmp_path / "llm-models"
    assert sync(root, name, "--version", published.version) == 0
    folder = root / published.parent_run_id
    kept = (folder / "model-00001-of-00002.safetensors").stat().st_ino
    (folder / "config.json").unlink()
    capsys.readouterr()
    assert sync(root, name, "--version", published.version) == 0
    assert "1 downloaded, 4 kept" in capsys.readouterr().err
    assert (folder / "config.json").exists()
    # the intact shard was linked into the rebuilt folder, not downloaded again
    assert (folder / "model-00001-of-00002.safetensors").stat().st_ino == kept


def test_proxied_artifacts_read_through_mlflow(
    env: Any, proxied_mlflow_server: Any, tmp_path: Path
) -> None:
    env.setenv("MLFLOW_TRACKING_URI", proxied_mlflow_server.url)
    name = unique_name()
    published = publish(proxied_mlflow_server.url, tmp_path, name)
    run = MlflowClient(proxied_mlflow_server.url).get_run(published.parent_run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 0
    manifest = Manifest.from_json(
        (root / ".syncd" / "manifests" / f"{published.parent_run_id}.json").read_text()
    )
    assert manifest.source_uri.startswith("mlflow-artifacts:/")
    assert {entry.verified_by for entry in manifest.files} == {"size"}
    assert all("no checksum" in entry.note and entry.checksum for entry in manifest.files)
    assert {p.name for p in (root / published.parent_run_id).iterdir()} == SAMPLE_FILES


def test_proxied_artifacts_mapped_to_s3(
    env: Any, proxied_mlflow_server: Any, tmp_path: Path
) -> None:
    env.setenv("MLFLOW_TRACKING_URI", proxied_mlflow_server.url)
    env.setenv("SYNCD_S3__ARTIFACTS_DESTINATION", f"s3://{BUCKET}/proxied")
    name = unique_name()
    published = publish(proxied_mlflow_server.url, tmp_path, name)
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 0
    manifest = Manifest.from_json(
        (root / ".syncd" / "manifests" / f"{published.parent_run_id}.json").read_text()
    )
    assert manifest.source_uri.startswith(f"s3://{BUCKET}/proxied/")
    assert "size" not in {entry.verified_by for entry in manifest.files}


@pytest.mark.parametrize("bad_key", ["../escape.bin", "sub/../../escape.bin"])
def test_key_escaping_the_folder_is_refused(
    env: Any, s3_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_key: str
) -> None:
    name = unique_name()
    published = publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    prefix = (
        MlflowClient()
        .get_run(published.parent_run_id)
        .info.artifact_uri.split(f"s3://{BUCKET}/")[1]
    )
    s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/model/{bad_key}", Body=b"owned")
    root = tmp_path / "data" / "llm-models"
    assert sync(root, name, "--alias", "production") == 1
    err = capsys.readouterr().err
    assert "'..' path segment" in last_line(err)
    assert_nothing_published(root)
    assert not (tmp_path / "data" / "escape.bin").exists()
    assert not (root / "escape.bin").exists()


def test_checksum_failure_publishes_nothing(
    env: Any, faults: FaultyS3Proxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    env.setenv("SYNCD_S3__ENDPOINT_URL", faults.url)
    faults.faults.corrupt["model-00002-of-00002.safetensors"] = -1
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 1
    assert "mismatch" in last_line(capsys.readouterr().err)
    assert_nothing_published(root)


def test_full_disk_is_refused_before_downloading(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    name = unique_name()
    publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    real = shutil.disk_usage
    env.setattr("syncd.local.store.shutil.disk_usage", lambda p: real(p)._replace(free=1024))
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 1
    assert "not enough space" in last_line(capsys.readouterr().err)
    assert_nothing_published(root)


def test_disk_filling_up_mid_sync_publishes_nothing(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    real = os.posix_fallocate

    def fallocate(fd: int, offset: int, length: int) -> None:
        if length > 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    env.setattr("syncd.transfer.engine.os.posix_fallocate", fallocate)
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 1
    assert "no space left" in last_line(capsys.readouterr().err)
    assert_nothing_published(root)


def test_registry_down(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.app.embedded import free_port

    env.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert sync(tmp_path / "root", "M", "--alias", "production") == 1
    err = capsys.readouterr().err
    assert last_line(err).startswith("syncd: MLflow at http://127.0.0.1:")
    assert "Traceback" not in err


def test_s3_down(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.app.embedded import free_port

    name = unique_name()
    publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    env.setenv("SYNCD_S3__ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 1
    err = capsys.readouterr().err
    assert "cannot connect to S3 endpoint" in last_line(err)
    assert "Traceback" not in err
    assert_nothing_published(root)


def test_unknown_alias_and_model(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name, alias="staging")
    assert sync(tmp_path / "r", name, "--alias", "production") == 1
    assert "no alias 'production' (aliases: staging)" in capsys.readouterr().err
    assert sync(tmp_path / "r", unique_name("ghost"), "--alias", "production") == 1
    assert "no registered model named" in capsys.readouterr().err
    assert sync(tmp_path / "r", name, "--version", "99") == 1
    assert "no such registered model version" in capsys.readouterr().err


def test_context_with_bad_run_id(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name, context_run_id="../../../../etc")
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 1
    assert "'../../../../etc' is not a 32-hex run id" in capsys.readouterr().err
    assert_nothing_published(root)


def test_missing_context_and_no_binaries(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_text("{}", "pyfunc/MLmodel")  # a model with no context, no binaries
    client.create_registered_model(name)
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/pyfunc", run_id=run.info.run_id
    )
    client.set_registered_model_alias(name, "production", version.version)
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 1
    err = last_line(capsys.readouterr().err)
    assert f"nothing under s3://{BUCKET}/" in err
    assert "found by version run" in err
    assert_nothing_published(root)


def test_a_folder_syncd_did_not_create_is_kept_aside(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    published = publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    root = tmp_path / "llm-models"
    manual = root / published.parent_run_id
    manual.mkdir(parents=True)
    (manual / "partial.safetensors").write_bytes(b"half a copy")  # the old notebook's leftovers
    assert sync(root, name, "--alias", "production") == 0
    assert {p.name for p in manual.iterdir()} == SAMPLE_FILES
    (kept,) = (root / ".syncd" / "quarantine").iterdir()
    assert (kept / "partial.safetensors").read_bytes() == b"half a copy"


def test_malformed_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "syncd.yaml"
    config.write_text("s3:\n  max_concurrency: lots\n")
    assert (
        main(
            [
                "sync",
                "--model",
                "M",
                "--alias",
                "a",
                "--root",
                str(tmp_path),
                "--config",
                str(config),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "s3.max_concurrency" in err


def test_status_lists_managed_and_foreign_folders(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name()
    published = publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path, name)
    root = tmp_path / "llm-models"
    assert sync(root, name, "--alias", "production") == 0
    (root / ("f" * 32)).mkdir()
    capsys.readouterr()
    assert main(["status", "--root", str(root), "--json"]) == 0
    rows = {row["run_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[published.parent_run_id]["managed"] is True
    assert rows[published.parent_run_id]["damaged"] == []
    assert rows["f" * 32]["managed"] is False


def test_log_lines_print_above_the_progress_bar(mlflow_server: Any, tmp_path: Path) -> None:
    """On a terminal (a real pty), the bar is drawn; a log line never lands on its frame."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    name = unique_name("bar")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(6,))
    leader, follower = pty.openpty()
    # a terminal of a real size: tqdm draws nothing on one 0 columns wide
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    command = [c for c in sync_command(name, tmp_path / "llm-models") if c != "--no-progress"]
    process = subprocess.Popen(command, env=env, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the pty closes when the process ends
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=WAIT) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "B/s" in text, text  # the bar was drawn
    logged = [line for line in text.splitlines() if " INFO syncd." in line]
    assert logged
    for line in logged:
        visible = line.rsplit("\r", 1)[-1]  # what the terminal shows once the line is done
        assert re.match(r"\d{4}-\d\d-\d\d ", visible), repr(line)
