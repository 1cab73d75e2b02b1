"""What syncd reads from the root or from outside never points it elsewhere or floods a line:
link-free lookups, damage records under a lock, manifests checked, secrets and values cut."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from syncd.core.manifest import FileEntry, Manifest, Span
from syncd.errors import MESSAGE_LIMIT, SyncdError, cut, quoted
from syncd.local.damage import DamageLog
from syncd.local.inside import InsideFolder
from syncd.local.store import LocalStore
from syncd.reconcile.hooks import COMMAND_BASE_ENV, command_environment
from syncd.remote.failure import describe_failure, hide_url, host_of, strip_userinfo

RUN = "a" * 32


def test_lookups_inside_a_folder_never_pass_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "f.bin").write_bytes(b"x")
    folder = tmp_path / "folder"
    (folder / "real").mkdir(parents=True)
    (folder / "real" / "f.bin").write_bytes(b"y")
    (folder / "sub").symlink_to(outside)
    inside = InsideFolder(folder)
    assert inside.regular_file("real/f.bin") == folder / "real" / "f.bin"
    assert inside.lstat("sub/deep/f.bin") is None  # a folder on the way is a link
    assert inside.lstat("sub") is not None  # the link itself is seen, not followed
    assert inside.regular_file("sub") is None
    linked = tmp_path / "linked"
    linked.symlink_to(folder)
    assert not InsideFolder(linked).usable
    assert InsideFolder(linked).lstat("real/f.bin") is None


def test_an_unreadable_damage_record_reads_as_none_and_is_cleared_whole(tmp_path: Path) -> None:
    log = DamageLog(tmp_path / "damage")
    assert log.read(RUN) == {}
    (tmp_path / "damage").mkdir()
    (tmp_path / "damage" / f"{RUN}.json").write_text('{"a.bin": "not ranges"}')
    assert log.read(RUN) is None
    assert log.has(RUN)
    log.clear(RUN, None)
    assert not log.has(RUN)
    assert list((tmp_path / "damage").iterdir()) == []


def _record_many(folder: str, worker: int) -> None:
    log = DamageLog(Path(folder))
    for index in range(40):
        log.record(RUN, {f"w{worker}-{index}.bin": (Span(0, 10, index),)})


def test_damage_records_lose_nothing_to_concurrent_writers(tmp_path: Path) -> None:
    """Threads of one process and other processes (a `syncd verify` beside the daemon) add
    findings to one run's record at once: every finding stays, no temp file is left."""
    folder = str(tmp_path / "damage")
    threads = [threading.Thread(target=_record_many, args=(folder, n)) for n in range(3)]
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_record_many, args=(folder, n)) for n in (3, 4)]
    for worker in (*processes, *threads):  # forked before any thread holds a lock
        worker.start()
    for worker in (*threads, *processes):
        worker.join()
    found = DamageLog(Path(folder)).read(RUN)
    assert found is not None
    assert len(found) == 5 * 40
    assert sorted(os.listdir(folder)) == [f"{RUN}.json"]


def test_a_manifest_naming_a_path_outside_its_folder_is_not_trusted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.prepare()
    entry = FileEntry(path="ok.bin", size=1, etag=None, verified_by="size")
    good = Manifest(run_id=RUN, source_uri="s3://b/r", files=(entry,))
    store.update_manifest(RUN, lambda _: good)
    assert store.read_manifest(RUN) == good
    document = json.loads(good.to_json())
    for bad in ("../../etc/passwd", "/etc/passwd", ".syncd/lock"):
        document["files"][0]["path"] = bad
        store.manifest_path(RUN).write_text(json.dumps(document))
        assert store.read_manifest(RUN) is None
    other = json.loads(good.to_json())
    other["run_id"] = "b" * 32  # a manifest copied under another run's name
    store.manifest_path(RUN).write_text(json.dumps(other))
    assert store.read_manifest(RUN) is None


def test_values_quoted_in_errors_are_cut() -> None:
    huge = "a" * 20_000_000
    assert len(quoted(huge)) < 300
    assert "20000002 characters" in quoted(huge)
    assert cut("short") == "short"
    assert len(str(SyncdError(huge))) < MESSAGE_LIMIT + 100


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T0SECRET/B0SECRET/XOXBTOKEN",
        "https://user:pw0SECRET@example.com/webhook?token=q0SECRET",
        "https://outlook.office.com/webhookb2/T0SECRET@tenant/IncomingWebhook/B0SECRET",
    ],
)
def test_hook_urls_are_shown_by_host_only(url: str) -> None:
    said = f"ClientConnectorError: Cannot connect to host for url {url}; also {url.split('?')[0]}"
    shown = hide_url(said, url)
    assert "SECRET" not in shown
    assert "TOKEN" not in shown
    assert host_of(url) in shown


def test_userinfo_never_survives_a_failure_description() -> None:
    error = ConnectionError("GET http://alice:hunter2@mlflow:5000/api/2.0/x failed oddly")
    assert "hunter2" not in describe_failure(error)
    assert strip_userinfo("s3://k:s@b/x and https://h/y") == "s3://b/x and https://h/y"


def test_a_command_hook_inherits_only_the_base_and_what_it_names() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/home/syncd",
        "AWS_SECRET_ACCESS_KEY": "s",
        "MLFLOW_TRACKING_TOKEN": "t",
        "DOMINO_USER_API_KEY": "d",
        "SYNCD_HTTP__WEBHOOK_SECRET": "w",
        "SLACK_TOKEN": "named",
    }
    env = command_environment(environ, ["SLACK_TOKEN"])
    assert env == {"PATH": "/bin", "HOME": "/home/syncd", "SLACK_TOKEN": "named"}
    assert "PATH" in COMMAND_BASE_ENV
